"""Patch geometry shared by the local score machines (Kamb & Ganguli 2024, Sec. 3-4).

A machine with patch size k and stride s sees the image through a grid of cells of s x s pixels;
cell l's patch is the k x k window whose centre s x s block is the cell itself (k - s even, so the
window sticks out (k - s) / 2 pixels on each side). With s = 1 and odd k this is K&G's patch
Omega_x centred on pixel x; with k = s = 2 it is one 2x2 quadrant of the paper's stride-2 CNN,
whose whole block is estimated jointly.

Boundaries follow the network's padding:
- "circular": the window wraps around the torus; every cell is equivalent to every other.
- "zeros": the window is zero-padded. A zero-padded CNN can tell how far a cell is from each
  edge, so cells fall into boundary classes by (top, bottom, left, right) padding; a cell is
  only compared with training patches of its own class (K&G's boundary-broken ELS: interior
  cells with interior patches, edge cells with crops at the same offset from that edge, corner
  cells with the same corner only). Padded entries are exact zeros on both sides, so they add
  nothing to the squared distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from mosaicdiff.errors import check

Boundary = Literal["circular", "zeros"]


@dataclass(frozen=True)
class PatchGrid:
    """k x k patches on a stride-s grid of an image of shape (C, H, W)."""

    shape: tuple[int, int, int]
    k: int
    stride: int = 1
    boundary: Boundary = "circular"

    def __post_init__(self):
        c, h, w = self.shape
        k, s = self.k, self.stride
        check(s >= 1, f"stride={s} must be at least 1")
        check(h % s == 0 and w % s == 0, f"stride={s} must divide the image size {h}x{w}")
        check(
            k >= s and (k - s) % 2 == 0,
            f"patch size {k} with stride {s}: need k >= s and k - s even (the s x s block at "
            "the centre of a k x k window), e.g. odd k with stride 1, or k=2 with stride 2",
        )
        check(
            self.boundary in ("circular", "zeros"),
            f"boundary={self.boundary!r} must be 'circular' or 'zeros'",
        )

    @property
    def margin(self) -> int:
        """Pixels the window sticks out of its cell on each side: (k - s) / 2."""
        return (self.k - self.stride) // 2

    @property
    def cells(self) -> tuple[int, int]:
        """(H / s, W / s): the grid of cells."""
        _, h, w = self.shape
        return h // self.stride, w // self.stride

    @property
    def n_cells(self) -> int:
        return self.cells[0] * self.cells[1]

    @property
    def dim(self) -> int:
        """Values in one patch: C k^2."""
        return self.shape[0] * self.k**2

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """All patches of a batch, one per cell (a gather: CPU im2col is slow in float64).

        Args:
            x: (B, C, H, W) images.

        Returns:
            (B, L, C k^2) patches, cells in row-major order, values in (C, k, k) order.
        """
        flat = x.flatten(1)  # (B, C H W)
        if self.boundary == "zeros":
            flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], 1)  # index C H W reads 0
        return flat[:, self.index.to(x.device)]

    @cached_property
    def index(self) -> torch.Tensor:
        """(L, C k^2) positions in the flattened (C, H, W) image of every patch entry; padded
        entries wrap around ("circular") or point one past the end ("zeros")."""
        c, h, w = self.shape
        k, s, m = self.k, self.stride, self.margin
        gh, gw = self.cells
        rows = (torch.arange(gh) * s - m)[:, None] + torch.arange(k)  # (gh, k)
        cols = (torch.arange(gw) * s - m)[:, None] + torch.arange(k)  # (gw, k)
        r = rows[:, None, None, :, None]  # (gh, 1, 1, k, 1)
        q = cols[None, :, None, None, :]  # (1, gw, 1, 1, k)
        ch = torch.arange(c)[None, None, :, None, None]
        if self.boundary == "circular":
            idx = ch * h * w + (r % h) * w + q % w
        else:
            inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
            idx = torch.where(inside, ch * h * w + r * w + q, c * h * w)
        return idx.expand(gh, gw, c, k, k).reshape(gh * gw, c * k * k)

    @cached_property
    def centre_index(self) -> torch.Tensor:
        """(C s^2,) positions of the centre s x s block inside a flattened (C, k, k) patch."""
        c, k, s, m = self.shape[0], self.k, self.stride, self.margin
        grid = torch.arange(c * k * k).reshape(c, k, k)
        return grid[:, m : m + s, m : m + s].reshape(-1)

    def fold_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """Place each cell's block back in the image: (B, L, C s^2) -> (B, C, H, W)."""
        c, h, w = self.shape
        s = self.stride
        gh, gw = self.cells
        x = blocks.reshape(-1, gh, gw, c, s, s).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(-1, c, h, w)

    @cached_property
    def boundary_classes(self) -> torch.Tensor:
        """(L,) int64 class of every cell: all 0 for "circular"; for "zeros", cells share a class
        exactly when their windows are padded alike on all four sides."""
        if self.boundary == "circular":
            return torch.zeros(self.n_cells, dtype=torch.long)
        _, h, w = self.shape
        k, s, m = self.k, self.stride, self.margin
        gh, gw = self.cells
        i = torch.arange(gh) * s - m  # top row of each window
        j = torch.arange(gw) * s - m
        rows = torch.stack([(-i).clamp(min=0), (i + k - h).clamp(min=0)], -1)  # (gh, 2)
        cols = torch.stack([(-j).clamp(min=0), (j + k - w).clamp(min=0)], -1)  # (gw, 2)
        pads = torch.cat(
            [rows[:, None].expand(gh, gw, 2), cols[None, :].expand(gh, gw, 2)], -1
        ).reshape(-1, 4)
        return torch.unique(pads, dim=0, return_inverse=True)[1]


def unique_patches(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deduplicate rows; identical training patches become one with a multiplicity.

    Args:
        patches: (M, d) patches.

    Returns:
        (M', d) distinct patches and (M',) log multiplicities (the mixture weights are counts).
    """
    distinct, counts = torch.unique(patches, dim=0, return_counts=True)
    return distinct, counts.to(patches.dtype).log()
