"""Closed-form score machines (Kamb & Ganguli 2024; Finn et al. 2025, Eq. 8), each a `Denoiser`.

- `IdealScore`: the exact score of the noised training set (memorises).
- `LocalScore`, `ELS`, `BoundaryBrokenELS`: patch-mosaic machines (locality, equivariance,
  boundaries), on stride-1 pixels or stride-s blocks, with a patch size that may follow t.
- `AttentionELS`: ELS plus an in-image mixture (soft or top-1 attention), weight `lam`.
- `calibrate_patch_sizes`, `eps_agreement`, `sample_agreement`: machines against a network.
"""

from mosaicdiff.theory.attention import AttentionELS
from mosaicdiff.theory.base import ScoreMachine
from mosaicdiff.theory.ideal import IdealScore
from mosaicdiff.theory.local import ELS, BoundaryBrokenELS, LocalScore
from mosaicdiff.theory.machines import MACHINES, build_machine
from mosaicdiff.theory.schedule import PatchSchedule

__all__ = [
    "MACHINES",
    "ELS",
    "AttentionELS",
    "BoundaryBrokenELS",
    "IdealScore",
    "LocalScore",
    "PatchSchedule",
    "ScoreMachine",
    "build_machine",
]
