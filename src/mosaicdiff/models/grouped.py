"""Grouped models: S independent seeds of one architecture as one batched program.

Every parameter carries a leading seed dimension S, so one forward pass evaluates all seeds with
batched matmuls, and since AdamW and the EMA are elementwise, training the group is training each
seed alone (tested). `GroupedModel.forward` sees (S, B, C, H, W); `as_denoiser` exposes the group
through the plain `Denoiser` interface by reading a (S*B, C, H, W) batch as S blocks of B.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GroupedModel(nn.Module):
    """Base class: subclasses define `forward(x (S, B, C, H, W), t) -> eps` and `n_seeds`."""

    n_seeds: int

    def as_denoiser(self):
        """The group as a `Denoiser` on (S*B, C, H, W) batches (S contiguous blocks of B)."""
        return _GroupView(self)

    def member(self, i: int) -> GroupedModel:
        """A one-seed copy of member `i` (shares no storage with the group)."""
        import copy

        one = copy.deepcopy(self)
        with torch.no_grad():
            for p in one.parameters():
                p.data = p.data[i : i + 1].clone()
        one.n_seeds = 1
        return one


class _GroupView:
    def __init__(self, model: GroupedModel):
        self.model = model

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = self.model.n_seeds
        x = x_t.reshape(s, -1, *x_t.shape[1:])
        tt = t.reshape(s, -1) if t.numel() > 1 else t
        return self.model(x, tt).reshape(x_t.shape)


def init_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv layers."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def stacked(tensors: list[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack(tensors))
