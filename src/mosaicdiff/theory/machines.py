"""Build a score machine by name: the one place the CLI, calibration and scripts construct them.

Names: "ideal" (IS), "ls" (LS), "els" (ELS, circular), "bbels" (boundary-broken ELS, zero
padding), "attn" (`AttentionELS`). See `ideal.py`, `local.py` and `attention.py`.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import check
from mosaicdiff.theory.attention import AttentionELS
from mosaicdiff.theory.base import ScoreMachine
from mosaicdiff.theory.ideal import IdealScore
from mosaicdiff.theory.local import ELS, LocalScore
from mosaicdiff.theory.schedule import PatchSpec

MachineName = Literal["ideal", "ls", "els", "bbels", "attn"]
MACHINES = typing.get_args(MachineName)


def build_machine(
    name: MachineName,
    images: torch.Tensor,
    schedule: Schedule,
    patch_size: PatchSpec = 3,
    *,
    stride: int = 1,
    boundary: Literal["circular", "zeros"] = "circular",
    lam: float = 0.5,
    attention: Literal["soft", "top1"] = "soft",
    dtype: torch.dtype = torch.float64,
    budget: int = 1 << 18,
) -> ScoreMachine:
    """The machine `name` on training images (N, C, H, W).

    `patch_size`, `stride` and `boundary` apply to the local machines ("bbels" forces zero
    padding); `lam` and `attention` to "attn" only.
    """
    check(name in MACHINES, f"machine {name!r} is not one of {list(MACHINES)}")
    common = {"dtype": dtype, "budget": budget}
    if name == "ideal":
        return IdealScore(images, schedule, **common)
    local = {"stride": stride, "boundary": "zeros" if name == "bbels" else boundary, **common}
    if name == "ls":
        return LocalScore(images, schedule, patch_size, **local)
    if name == "attn":
        return AttentionELS(images, schedule, patch_size, lam=lam, attention=attention, **local)
    return ELS(images, schedule, patch_size, **local)
