"""Grouped models: S independent seeds of one architecture as one batched program.

Every parameter carries a leading seed dimension S, so one forward pass evaluates all seeds with
batched matmuls, and since AdamW and the EMA are elementwise, training the group is training each
seed alone (tested). `GroupedModel.forward` sees (S, B, C, H, W); `as_denoiser` exposes the group
through the plain `Denoiser` interface by reading a (S*B, C, H, W) batch as S blocks of B.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn


class GroupedModel(nn.Module):
    """Base class: subclasses define `forward(x (S, B, C, H, W), t) -> eps` and `n_seeds`."""

    n_seeds: int
    T: int | None = None  # the steps 0..T-1 it embeds (`build_model` sets it): see `as_denoiser`

    def as_denoiser(self):
        """The group as a `Denoiser` on (S*B, C, H, W) batches (S contiguous blocks of B)."""
        return _GroupView(self)

    def member(self, i: int) -> GroupedModel:
        """A one-seed copy of member `i` (shares no storage with the group)."""
        one = copy.deepcopy(self)
        with torch.no_grad():
            for p in one.parameters():
                p.data = p.data[i : i + 1].clone()
        one.n_seeds = 1
        return one


class Ensemble(GroupedModel):
    """S independent single-seed networks behind the grouped interface, for networks that do not
    stack (convs with norms, transformers, diffusers' UNet). Member i is built by `make()` right
    after `torch.manual_seed(seeds[i])`, inside `fork_rng`, so it depends on seeds[i] alone and the
    caller's global RNG is left as it was. `forward` loops over the members.

    Every member maps (x (B, C, H, W), t (B,) int64, return_attention) to eps (B, C, H, W), or to
    (eps, attention (B, N, N) or None) when `return_attention`.

    Args:
        make: builds one member from the current global RNG state.
        seeds: one initialisation seed per member.
        cfg, image_shape: kept as attributes, as `PatchNet` keeps them.
    """

    def __init__(self, make: Callable[[], nn.Module], seeds, cfg=None, image_shape=None):
        super().__init__()
        members = []
        with torch.random.fork_rng(devices=[]):
            for s in seeds:
                torch.manual_seed(s)
                members.append(make())
        self.members = nn.ModuleList(members)
        self.n_seeds, self.cfg, self.image_shape = len(members), cfg, image_shape

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_attention: bool = False):
        """Predict eps: x (S, B, C, H, W), t (S, B) or (1,) int64 -> eps (S, B, C, H, W), and
        with `return_attention` the stacked (S, B, N, N) attention weights (None if none).

        Without gradients (sampling), each member sees the batch in slices of at most
        `slice_size` samples (same maths: every sample is computed on its own), so the
        activations' memory is bounded by the slice, not by the sampler's chunk."""
        b = x.shape[1]
        n = b if torch.is_grad_enabled() else slice_size(x, self.cfg.hidden if self.cfg else 32)
        eps, att = [], []
        for i, m in enumerate(self.members):
            ti = t[i] if t.ndim == 2 else t.expand(b)  # (B,)
            for xs, ts in zip(x[i].split(n), ti.split(n), strict=True):
                out = m(xs, ts, return_attention=return_attention)
                eps.append(out[0] if return_attention else out)
                att.append(out[1] if return_attention else None)
        eps = torch.cat(eps).view(x.shape)
        if not return_attention:
            return eps
        return eps, None if att[0] is None else torch.cat(att).view(*x.shape[:2], *att[0].shape[1:])

    def member(self, i: int) -> Ensemble:
        """A one-seed copy of member `i` (shares no storage with the group)."""
        one = type(self).__new__(type(self))
        nn.Module.__init__(one)
        one.members = nn.ModuleList([copy.deepcopy(self.members[i])])
        one.cfg, one.image_shape, one.training = self.cfg, self.image_shape, self.training
        one.n_seeds = 1
        return one


# Activation values (samples x pixels x width) per member call. On 2 cores the natural-data
# networks ran fastest at about 2^20: 256 8x8 digits at width 64, 1,024 at width 16, 32 32x32
# images at width 32; 16,384 digits (GBs of U-Net activations) ran up to 2.3x slower. A GPU
# takes far larger batches.
CPU_SLICE_VALUES, CUDA_SLICE_VALUES = 2**20, 2**28


def slice_size(x: torch.Tensor, width: int) -> int:
    """Samples per member call for x (S, B, C, H, W) and a network `width` channels wide."""
    values = CUDA_SLICE_VALUES if x.is_cuda else CPU_SLICE_VALUES
    return max(1, values // (math.prod(x.shape[-2:]) * width))


class _GroupView:
    def __init__(self, model: GroupedModel):
        self.model = model

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        s, shape = self.model.n_seeds, getattr(self.model, "image_shape", None)
        want = tuple(shape) if shape is not None else ("C", "H", "W")
        if x_t.dim() != 4 or x_t.shape[0] % s or (shape and tuple(x_t.shape[1:]) != want):
            raise ValueError(
                f"x_t of shape {tuple(x_t.shape)}: a group of {s} seed(s) takes (S*B, "
                f"{', '.join(map(str, want))}) batches, S={s} blocks of B samples each"
            )
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        if t.numel() not in (1, x_t.shape[0]):
            raise ValueError(f"t holds {t.numel()} steps; give one, or one per sample of x_t")
        T = self.model.T  # a step outside 0..T-1 is refused: -1 had wrapped round to T-1
        if T is not None:
            low, high = torch.stack(torch.aminmax(t)).tolist()
            if not 0 <= low <= high < T:
                raise ValueError(f"t holds steps {low}..{high}; this network takes 0..{T - 1}")
        x = x_t.reshape(s, -1, *x_t.shape[1:])
        tt = t.reshape(s, -1) if t.numel() > 1 else t
        return self.model(x, tt).reshape(x_t.shape)


def init_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv layers."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def stacked(tensors: list[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack(tensors))
