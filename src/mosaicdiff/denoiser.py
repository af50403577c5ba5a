"""The denoiser interface: the spine that trained networks and closed-form machines share.

A denoiser maps a noisy batch and its timestep to the predicted noise (epsilon parametrisation,
Ho et al. 2020), so every sampler, metric and plot works on either kind unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """`eps = denoiser(x_t, t)`.

    Args:
        x_t: (B, C, H, W) noisy images.
        t: (B,) or (1,) int64 timesteps in [0, T); a (1,) tensor applies to the whole batch.

    Returns:
        (B, C, H, W) predicted noise epsilon.
    """

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...
