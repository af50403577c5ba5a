import pytest
import torch

from mosaicdiff.config import ModelConfig
from mosaicdiff.diffusion import Schedule, eps_from_x0
from mosaicdiff.models import build_model
from mosaicdiff.sampling import ddim_sample, ddim_timesteps, ddpm_sample, ddpm_tables

S = Schedule.linear()


def _denoiser():
    """A random attn network in float64, so trajectories compare without float32 chaos."""
    model = build_model(ModelConfig(arch="attn"), (3, 4, 4), 1000, [0]).eval().double()
    return model.as_denoiser()


def _float64(sched):
    """diffusers keeps its schedule in float32 (1 - alpha_bar loses ~1e-4 relative accuracy near
    t = 0); give it the same float64 schedule as ours so any difference is in the update rule."""
    sched.betas = S.betas.clone()
    sched.alphas = 1.0 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)


def test_ddpm_matches_diffusers_scheduler_step_by_step():
    """Each of the 1000 updates equals diffusers' DDPMScheduler.step from the same x_t with the
    same noise (no accumulation, so the check is tight)."""
    from diffusers import DDPMScheduler

    den = _denoiser()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(1000)
    _float64(sched)
    c_x, c_eps, sigma = ddpm_tables(S)
    x = torch.randn((16, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    g, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in sched.timesteps.tolist():
            eps = den(x, torch.tensor([t]))
            z = torch.randn(x.shape, generator=g_ours, dtype=x.dtype) if t > 0 else 0
            ours = c_x[t] * x - c_eps[t] * eps + sigma[t] * z
            x = sched.step(eps, t, x, generator=g).prev_sample
            torch.testing.assert_close(ours, x, atol=1e-9, rtol=1e-9)


def test_ddpm_sampler_runs_the_same_updates():
    """The sampler function applies exactly the tables' update with the generator's noise."""
    den = _denoiser()
    x_T = torch.randn((8, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    out = ddpm_sample(den, x_T, torch.Generator().manual_seed(3), S, noise="torch")
    c_x, c_eps, sigma = ddpm_tables(S)
    g = torch.Generator().manual_seed(3)
    x = x_T.clone()
    with torch.no_grad():
        for t in range(999, -1, -1):
            x = c_x[t] * x - c_eps[t] * den(x, torch.tensor([t]))
            if t > 0:
                x = x + sigma[t] * torch.randn(x.shape, generator=g, dtype=x.dtype)
    torch.testing.assert_close(out, x, atol=1e-9, rtol=1e-9)


def test_ddim_with_eta_1_on_every_step_is_ddpm():
    # What the README says "respaced DDPM" is: on all T steps it is DDPM itself.
    den = _denoiser()
    x_T = torch.randn((8, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    runs = [
        fn(den, x_T, torch.Generator().manual_seed(2), S, noise="torch", **kw)
        for fn, kw in ((ddpm_sample, {}), (ddim_sample, {"steps": S.T, "eta": 1.0}))
    ]
    torch.testing.assert_close(*runs, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(eta):
    from diffusers import DDIMScheduler

    den = _denoiser()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(50)
    _float64(sched)
    assert sched.timesteps.tolist() == ddim_timesteps(1000, 50)
    x_T = torch.randn((16, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    g_ours = torch.Generator().manual_seed(2)
    ours = ddim_sample(den, x_T, g_ours, S, steps=50, eta=eta, noise="torch")
    g = torch.Generator().manual_seed(2)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(den(x, t.reshape(1)), t, x, eta=eta, generator=g).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"eta": 1.5}, "eta=1.5"), ({"eta": -0.1}, "eta=-0.1"), ({"steps": 1001}, "steps=1001")],
)
def test_ddim_refuses_settings_without_a_real_update(kwargs, needle):
    """eta > 1 asks for more noise than a step has (sqrt of a negative), steps > T for a
    spacing of zero."""
    x_T = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=needle):
        ddim_sample(_denoiser(), x_T, torch.Generator(), S, **kwargs)


def test_sample_dispatches_ddim_with_its_default_steps_and_refuses_zero():
    from mosaicdiff.sampling import sample

    seen = []

    def counting(x, t):
        seen.append(int(t))
        return torch.zeros_like(x)

    sample(counting, torch.zeros(1, 3, 4, 4), torch.Generator(), S, "ddim")
    assert len(seen) == 50  # DDIM_STEPS, as everywhere (it took T = 1,000)
    with pytest.raises(ValueError, match="steps=0"):  # (it ran 50)
        sample(counting, torch.zeros(1, 3, 4, 4), torch.Generator(), S, "ddim", steps=0)
    # probe 62: a misspelt sampler ran DDIM, and ddpm ignored the steps and eta it was given
    for bad, needle in [
        ({"sampler": "DDPM"}, "sampler='DDPM' is not one of"),
        ({"sampler": "ddmp"}, "sampler='ddmp' is not one of"),
        ({"sampler": "ddpm", "steps": 50}, "ddpm runs all 1000 steps"),
        ({"sampler": "ddpm", "eta": 0.7}, "ddpm runs all 1000 steps"),
    ]:
        seen.clear()
        with pytest.raises(ValueError, match=needle):
            sample(counting, torch.zeros(1, 3, 4, 4), torch.Generator(), S, **bad)
        assert not seen
    sample(counting, torch.zeros(1, 3, 4, 4), torch.Generator(), S, "ddpm", steps=S.T)
    assert len(seen) == S.T


def test_sampling_is_reproducible_and_seed_dependent():
    den = _denoiser()
    x_T = torch.randn((8, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    a = ddpm_sample(den, x_T, torch.Generator().manual_seed(5), S)
    b = ddpm_sample(den, x_T, torch.Generator().manual_seed(5), S)
    c = ddpm_sample(den, x_T, torch.Generator().manual_seed(6), S)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddpm_with_the_exact_score_of_one_point_returns_that_point():
    """For a dataset of one image x*, eps(x_t, t) = (x_t - sqrt(ab) x*) / sqrt(1 - ab) exactly."""
    target = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)

    def exact(x, t):
        return eps_from_x0(x, target, S.alpha_bar[t].item())

    x_T = torch.randn((4, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    out = ddpm_sample(exact, x_T, torch.Generator().manual_seed(1), S)
    torch.testing.assert_close(out, target.expand_as(out), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_clipped_sampling_matches_diffusers_clip_sample(sampler):
    """With clip, the x0 estimate is clamped to [-1, 1] exactly as diffusers' clip_sample does;
    an untrained network's estimates leave that range, so the clamp is exercised."""
    from diffusers import DDIMScheduler, DDPMScheduler

    den = _denoiser()
    steps = 1000 if sampler == "ddpm" else 50
    cls = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
    sched = cls(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    sched.set_timesteps(steps)
    _float64(sched)
    x_T = 3 * torch.randn((16, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    kw = {} if sampler == "ddpm" else {"steps": steps, "eta": 1.0}
    fn = ddpm_sample if sampler == "ddpm" else ddim_sample
    ours = fn(den, x_T, torch.Generator().manual_seed(2), S, clip=True, noise="torch", **kw)
    unclipped = fn(den, x_T, torch.Generator().manual_seed(2), S, noise="torch", **kw)
    g = torch.Generator().manual_seed(2)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps.tolist():
            extra = {"eta": 1.0} if sampler == "ddim" else {}
            x = sched.step(den(x, torch.tensor([t])), t, x, generator=g, **extra).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-7, rtol=1e-7)
    assert not torch.allclose(ours, unclipped)
