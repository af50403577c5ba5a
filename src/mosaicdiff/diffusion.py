"""The DDPM forward process and training loss (Ho et al. 2020), as a schedule that never owns
the model: `schedule.seed_losses(model, x0, t, eps)` takes the model as an argument. And the
conversions between a predicted eps and the x0 it implies, which every sampler and score
machine uses (`x0_from_eps`, `eps_from_x0`).

Timesteps are 0-indexed, t in [0, T), as in diffusers: alpha_bar[t] = prod_{s <= t} (1 - beta_s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mosaicdiff.config import DiffusionConfig


@dataclass(frozen=True)
class Schedule:
    """Linear betas and the quantities derived from them, all (T,) float64 (on the CPU unless
    moved with `to`)."""

    betas: torch.Tensor

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> Schedule:
        return cls.linear(cfg.T, cfg.beta_start, cfg.beta_end)

    def to(self, device: str | torch.device) -> Schedule:
        """The same schedule on `device`: a GPU's training step then copies nothing from the
        CPU (a copy from pageable memory waits for the GPU, and cannot be graph-captured)."""
        return Schedule(self.betas.to(device))

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, 0)

    def table(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A (T,) float64 table cast to `like`'s dtype and device, for indexing by t."""
        return values.to(dtype=like.dtype, device=like.device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps  (Ho et al. Eq. 4).

        Args:
            x0, eps: (*batch, C, H, W) clean images and standard normal noise.
            t: (*batch,) int64 timesteps (leading dims of x0; a grouped model uses (S, B)).
        """
        ab = _expand(self.table(self.alpha_bar, x0)[t], x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def loss_weight(self, t: torch.Tensor, weighting: str, like: torch.Tensor) -> torch.Tensor:
        """Per-example weight: (1 - alpha_bar_t) as in the paper's App. B, or 1."""
        if weighting == "none":
            return torch.ones_like(t, dtype=like.dtype)
        return 1 - self.table(self.alpha_bar, like)[t]

    def losses(
        self,
        model,
        x0: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        weighting: str = "one_minus_alpha_bar",
    ) -> torch.Tensor:
        """Per-example weighted epsilon MSE, (*batch,): w(t) * mean_pixels (eps - model(x_t, t))^2
        with w(t) = 1 - alpha_bar_t (the paper's App. B) or 1."""
        eps_hat = model(self.q_sample(x0, t, eps), t)
        per_example = ((eps_hat - eps) ** 2).flatten(t.ndim).mean(-1)  # (*batch,)
        return self.loss_weight(t, weighting, x0) * per_example

    def seed_losses(self, model, x0, t, eps, weighting: str = "one_minus_alpha_bar"):
        """Each seed's training loss, the batch mean of its `losses`: (S,) for (S, B) leading
        dims (S grouped seeds), a scalar for (B,). The steps minimise their sum, so every seed's
        gradient equals the one it would get training alone."""
        return self.losses(model, x0, t, eps, weighting).mean(-1)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """The x0 that noise `eps` implies for x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    (`q_sample` inverted; with a model's eps_hat, the Tweedie posterior mean). `alpha_bar`: a
    float, or a tensor that broadcasts against x_t."""
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """The noise that takes `x0` to x_t (`x0_from_eps` inverted)."""
    return (x_t - alpha_bar**0.5 * x0) / (1 - alpha_bar) ** 0.5


def _expand(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(*batch,) -> (*batch, 1, 1, 1) to broadcast against (*batch, C, H, W)."""
    return values.reshape(*values.shape, *[1] * (x.ndim - values.ndim))
