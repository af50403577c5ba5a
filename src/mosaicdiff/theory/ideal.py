"""The ideal score (IS) machine: the exact score of the noised empirical distribution
(Kamb & Ganguli 2024, Eqs. 5-6).

With training images {phi_i}, x_t is distributed as the mixture (1/N) sum_i N(a phi_i, b^2 I),
a = sqrt(alpha_bar_t), b^2 = 1 - alpha_bar_t, whose score is -(x_t - a E[x0 | x_t]) / b^2 with
E[x0 | x_t] = sum_i softmax_i(-|x_t - a phi_i|^2 / (2 b^2)) phi_i. Sampling with it can only
return training images (memorisation), the baseline every creative machine is measured against.
"""

from __future__ import annotations

import math

import torch

from mosaicdiff.theory.base import ScoreMachine
from mosaicdiff.theory.mixture import gaussian_posterior
from mosaicdiff.theory.patches import unique_patches


class IdealScore(ScoreMachine):
    """Softmax over whole training images. See `ScoreMachine` for the arguments."""

    def __init__(self, images: torch.Tensor, schedule, **kwargs):
        super().__init__(images, schedule, **kwargs)
        flat = self.images.flatten(1)  # (N, C H W)
        self._centres, self._log_mult = unique_patches(flat)

    def log_density(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """log p_t(x_t) of the noised empirical mixture, (B,), exactly (with all constants)."""
        ab = self._alpha_bar[t]
        a, b2 = ab**0.5, 1.0 - ab
        q = x_t.to(self.dtype).flatten(1)
        lse, _ = self._posterior(q, a, b2)
        d = q.shape[1]
        n = self.images.shape[0]
        const = -0.5 * d * math.log(2 * math.pi * b2) - math.log(n)  # in double precision
        return lse - (q * q).sum(1) / (2 * b2) + const

    def x0_hat(self, x_t: torch.Tensor, t: int, a: float, b2: float) -> torch.Tensor:
        _, mean = self._posterior(x_t.flatten(1), a, b2)
        return mean.reshape(x_t.shape)

    def _posterior(self, q: torch.Tensor, a: float, b2: float):
        p, log_mult = self._centres.to(q.device), self._log_mult.to(q.device)
        lse, mean = gaussian_posterior(
            q[None], p[None], p[None], a, b2, log_mult[None], self.budget
        )
        return lse[0], mean[0]
