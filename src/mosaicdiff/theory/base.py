"""The common shell of every closed-form score machine: a `Denoiser` built from a posterior mean.

A machine estimates x0_hat = E[x0 | x_t] (whole images for the ideal score, pixel by pixel or
block by block from local patches for the local machines) and returns the noise it implies,

    eps = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t),

which is -sqrt(1 - alpha_bar_t) times the machine's score (Tweedie; Kamb & Ganguli 2024, Eq. 4).
So samplers, metrics and plots use machines and trained networks interchangeably.
"""

from __future__ import annotations

import torch

from mosaicdiff.diffusion import Schedule, eps_from_x0
from mosaicdiff.errors import check, check_like


class ScoreMachine:
    """Base class: subclasses implement `x0_hat(x_t, t, a, b2)`.

    Args:
        images: (N, C, H, W) training images in [-1, 1].
        schedule: the diffusion schedule (alpha_bar_t).
        dtype: precision of the softmax arithmetic (float64 keeps it exact; float32 is faster).
        budget: most logits held in memory at once (see `mixture.gaussian_posterior`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        schedule: Schedule,
        *,
        dtype: torch.dtype = torch.float64,
        budget: int = 1 << 18,
    ):
        check(images.ndim == 4, f"training images must be (N, C, H, W), got {tuple(images.shape)}")
        check(images.shape[0] >= 1, "a score machine needs at least one training image")
        self.images = images.to(dtype)
        self.schedule = schedule
        self.dtype = dtype
        self.budget = budget
        self._alpha_bar = schedule.alpha_bar.tolist()

    def to(self, device: str | torch.device) -> ScoreMachine:
        """Move the training images (and so all later arithmetic) to `device`; returns self."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif name.startswith("_") and isinstance(value, dict):
                value.clear()  # per-patch-size tables are rebuilt on the new device
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def x0_hat(self, x_t: torch.Tensor, t: int, a: float, b2: float) -> torch.Tensor:
        """Posterior mean of the clean images, (B, C, H, W), in `self.dtype`."""
        raise NotImplementedError

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`eps = machine(x_t (B, C, H, W), t (B,) or (1,))`, in x_t's dtype and device."""
        check(
            tuple(x_t.shape[1:]) == self.shape,
            f"x_t of shape {tuple(x_t.shape)} does not match the training images {self.shape}",
        )
        x = x_t.to(device=self.images.device, dtype=self.dtype)
        t_flat = t.reshape(-1).to("cpu")
        if t_flat.numel() == 1:
            eps = self._eps(x, int(t_flat[0]))
        else:
            check(t_flat.numel() == x.shape[0], "t must have one entry per image or just one")
            eps = torch.empty_like(x)
            for tv in torch.unique(t_flat).tolist():
                rows = (t_flat == tv).nonzero().squeeze(1).to(x.device)
                eps[rows] = self._eps(x[rows], tv)
        return eps.to(device=x_t.device, dtype=x_t.dtype)

    def _eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        check(0 <= t < len(self._alpha_bar), f"timestep {t} outside [0, {len(self._alpha_bar)})")
        ab = self._alpha_bar[t]
        a, b2 = ab**0.5, 1.0 - ab
        x0 = self.x0_hat(x, t, a, b2)
        check_like(x0, x, f"{type(self).__name__}.x0_hat", "x0")
        return eps_from_x0(x, x0, ab)
