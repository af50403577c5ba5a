"""Samplers as pure functions of (denoiser, x_T, generator, schedule).

- `ddpm_sample`: ancestral DDPM with every step (Ho et al. 2020, Alg. 2) and the "fixed small"
  posterior variance beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, identical to
  diffusers' `DDPMScheduler(clip_sample=False)` (tested against it).
- `ddim_sample`: DDIM (Song et al. 2021, Eq. 12) on `steps` evenly spaced ("leading") timesteps,
  with eta interpolating between deterministic DDIM (0) and DDPM-like noise (1), identical to
  diffusers' `DDIMScheduler(clip_sample=False)` (tested against it).

Both can clamp the predicted x0 to the data range [-1, 1] at every step (`clip`, diffusers'
`clip_sample=True`, tested against it too): off for the paper's table, on where a briefly trained
network's x0 estimate would otherwise run away (the digits study).

The noise is counter-based Threefry by default, or torch's generator stream (`noise.py`); given
`noise.Counters` instead of a generator, each sample's Threefry noise is its own.
Coefficient tables are computed once in float64; the loop does no host work per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from mosaicdiff.config import DDIM_STEPS
from mosaicdiff.denoiser import Denoiser
from mosaicdiff.diffusion import Schedule, x0_from_eps
from mosaicdiff.errors import check
from mosaicdiff.noise import Counters, Noise, step_noise

# callback(i, t, x_t, eps): called after the denoiser at every step, before the update.
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def ddpm_posterior(schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) float64 tables of the posterior q(x_{t-1} | x_t, x0) = N(c0[t] x0 + ct[t] x_t,
    sigma[t]^2) (Ho et al. Eq. 7), with sigma[0] = 0: no noise on the last step."""
    ab = schedule.alpha_bar
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    beta = 1 - ab / ab_prev  # = betas, computed as diffusers does
    c0 = ab_prev.sqrt() * beta / (1 - ab)
    ct = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    var = ((1 - ab_prev) / (1 - ab) * beta).clamp(min=1e-20)
    sigma = var.sqrt()
    sigma[0] = 0.0
    return c0, ct, sigma


def ddpm_tables(schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) float64 tables so that x_{t-1} = c_x[t] x_t - c_eps[t] eps + sigma[t] z.

    Folds the posterior mean c0 x0_hat + ct x_t with x0_hat = (x_t - sqrt(1 - ab_t) eps) /
    sqrt(ab_t).
    """
    ab = schedule.alpha_bar
    c0, ct, sigma = ddpm_posterior(schedule)
    c_x = c0 / ab.sqrt() + ct
    c_eps = c0 * (1 - ab).sqrt() / ab.sqrt()
    return c_x, c_eps, sigma


@torch.inference_mode()
def ddpm_sample(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    generator: torch.Generator | Counters,
    schedule: Schedule,
    *,
    clip: bool = False,
    noise: Noise = "threefry",
    progress: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM from x_T (B, C, H, W) through all T steps; returns x_0. With `clip`, the
    predicted x0 is clamped to the data range [-1, 1] at every step (diffusers' clip_sample).
    `noise` names the source of z (`noise.step_noise`), seeded by `generator` (or the samples'
    own Threefry `Counters`)."""
    c_x, c_eps, sigma = (v.tolist() for v in ddpm_tables(schedule))
    c0, ct, _ = (v.tolist() for v in ddpm_posterior(schedule))
    ab = schedule.alpha_bar.tolist()
    x = x_T.clone()
    t_tensor = torch.empty(1, dtype=torch.long, device=x.device)
    z = step_noise(noise, generator, x, schedule.T)
    steps = range(schedule.T - 1, -1, -1)
    for i, t in enumerate(tqdm(steps, desc="ddpm", disable=not progress, leave=False)):
        t_tensor.fill_(t)
        eps = denoiser(x, t_tensor)
        if callback is not None:
            callback(i, t, x, eps)
        if clip:
            x0 = x0_from_eps(x, eps, ab[t]).clamp_(-1, 1)
            x = c0[t] * x0 + ct[t] * x
        else:
            x = c_x[t] * x - c_eps[t] * eps
        if t > 0:
            x = x + sigma[t] * z(t)
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """diffusers' "leading" spacing: [(steps-1) r, ..., r, 0] with r = T // steps."""
    ratio = T // steps
    return [i * ratio for i in range(steps - 1, -1, -1)]


@torch.inference_mode()
def ddim_sample(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    generator: torch.Generator | Counters,
    schedule: Schedule,
    *,
    steps: int = DDIM_STEPS,
    eta: float = 0.0,
    clip: bool = False,
    noise: Noise = "threefry",
    progress: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM from x_T (B, C, H, W) over `steps` timesteps; returns x_0. With `clip`, the
    predicted x0 is clamped to [-1, 1] before the update (diffusers' clip_sample). `noise`
    names the source of z when eta > 0 (`noise.step_noise`), seeded by `generator` (or the
    samples' own Threefry `Counters`)."""
    check(1 <= steps <= schedule.T, f"ddim steps={steps} must be between 1 and T={schedule.T}")
    check(0 <= eta <= 1, f"ddim eta={eta} must be between 0 and 1")  # sigma^2 <= 1 - a_prev
    ab = schedule.alpha_bar.tolist()
    ts = ddim_timesteps(schedule.T, steps)
    ratio = schedule.T // steps
    x = x_T.clone()
    t_tensor = torch.empty(1, dtype=torch.long, device=x.device)
    z = step_noise(noise, generator, x, schedule.T) if eta > 0 else None
    for i, t in enumerate(tqdm(ts, desc="ddim", disable=not progress, leave=False)):
        t_tensor.fill_(t)
        eps = denoiser(x, t_tensor)
        if callback is not None:
            callback(i, t, x, eps)
        a_t = ab[t]
        a_prev = ab[t - ratio] if t - ratio >= 0 else 1.0
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        x0 = x0_from_eps(x, eps, a_t)
        if clip:
            x0 = x0.clamp(-1, 1)
        x = a_prev**0.5 * x0 + (1 - a_prev - sigma**2) ** 0.5 * eps
        if eta > 0:
            x = x + sigma * z(t)
    return x


def sample(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    generator: torch.Generator | Counters,
    schedule: Schedule,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    **kwargs,
) -> torch.Tensor:
    """Dispatch to the sampler a `SampleConfig` names (`clip` etc. pass through); ddim takes
    `DDIM_STEPS` steps when `steps` is left out, as everywhere. ddpm runs every one of the T
    steps without noise of its own choosing: a `steps` other than T, or an `eta`, is refused."""
    check(sampler in ("ddpm", "ddim"), f"sampler={sampler!r} is not one of ['ddpm', 'ddim']")
    if sampler == "ddpm":
        check(
            steps in (None, schedule.T) and eta == 0,
            f"sampler='ddpm' with steps={steps}, eta={eta}: ddpm runs all {schedule.T} steps "
            "and draws its own noise; use sampler='ddim' for fewer steps or another eta",
        )
        return ddpm_sample(denoiser, x_T, generator, schedule, **kwargs)
    return ddim_sample(
        denoiser,
        x_T,
        generator,
        schedule,
        steps=DDIM_STEPS if steps is None else steps,
        eta=eta,
        **kwargs,
    )
