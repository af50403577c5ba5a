"""The ideal score machine: exact score of the noised empirical mixture (K&G Eqs. 5-6)."""

import math

import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.sampling import ddpm_sample
from mosaicdiff.theory import IdealScore

SCHEDULE = Schedule.linear()


def test_eps_is_minus_b_times_autograd_score_of_the_mixture():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(7, 2, 3, 3, generator=g) * 2 - 1
    machine = IdealScore(images, SCHEDULE)
    for t in (0, 50, 400, 999):
        ab = float(SCHEDULE.alpha_bar[t])
        x_t = (
            ab**0.5 * images[:4].double()
            + (1 - ab) ** 0.5 * torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
        ).requires_grad_(True)
        # log p_t(x_t) written out independently of the machine.
        d2 = ((x_t[:, None] - ab**0.5 * images[None].double()) ** 2).flatten(2).sum(-1)
        log_p = torch.logsumexp(-d2 / (2 * (1 - ab)), 1)
        (score,) = torch.autograd.grad(log_p.sum(), x_t)
        eps = machine(x_t.detach(), torch.tensor([t]))
        torch.testing.assert_close(eps, -((1 - ab) ** 0.5) * score, rtol=1e-9, atol=1e-9)
        # log_density is the same log p_t with its constants
        lp = machine.log_density(x_t.detach(), t)
        ref = log_p - 0.5 * 18 * math.log(2 * math.pi * (1 - ab)) - math.log(7)
        torch.testing.assert_close(lp, ref.detach(), rtol=1e-12, atol=1e-12)  # log 7 in float64


def test_one_training_image_gives_the_exact_gaussian_score():
    """A dataset of one image is a delta: x_t ~ N(a x0, b^2 I), so eps = (x_t - a x0) / b."""
    x0 = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    for t in (0, 500, 999):
        ab = float(SCHEDULE.alpha_bar[t])
        want = (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
        torch.testing.assert_close(IdealScore(x0, SCHEDULE)(x_t, torch.tensor([t])), want)


def test_per_example_timesteps_match_one_call_per_timestep():
    images = torch.rand(5, 1, 2, 2) * 2 - 1
    machine = IdealScore(images, SCHEDULE)
    x_t = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([3, 900, 3, 100, 900, 0])
    eps = machine(x_t, t)
    for i in range(6):
        torch.testing.assert_close(eps[i : i + 1], machine(x_t[i : i + 1], t[i : i + 1]))


def test_ddpm_samples_reproduce_training_images():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    x_T = torch.randn(32, 1, 4, 4, generator=g)
    samples = ddpm_sample(IdealScore(images, SCHEDULE), x_T, g, SCHEDULE)
    nearest = torch.cdist(samples.flatten(1), images.flatten(1)).min(1).values  # (32,)
    spread = torch.cdist(images.flatten(1), images.flatten(1))
    typical = spread[~torch.eye(5, dtype=torch.bool)].min()
    assert nearest.max() < 0.05 * typical, (nearest.max(), typical)
