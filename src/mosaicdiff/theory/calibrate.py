"""Calibrate a machine's patch-size schedule to a trained network (Kamb & Ganguli 2024, Sec. 5).

As K&G do, at each timestep t pick the patch size k whose machine eps best matches the network's
(highest mean cosine similarity) on the network's own DDPM trajectories. Steps not evaluated
(`every` > 1) take the choice of the nearest evaluated step. The result is plain JSON-able data
whose "patch_size" table is a `PatchSchedule`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from mosaicdiff.denoiser import Denoiser
from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import UserError, check
from mosaicdiff.io import atomic_write_json
from mosaicdiff.theory.agreement import network_trajectory, trajectory_cosines


def calibrate_patch_sizes(
    network: Denoiser,
    machine_for: Callable[[int], Denoiser],
    schedule: Schedule,
    candidates: Sequence[int],
    x_T: torch.Tensor,
    seed: int = 0,
    every: int = 1,
    progress: bool = False,
) -> dict:
    """Per-step best patch size for `network`.

    Args:
        network: the trained denoiser.
        machine_for: k -> machine with a fixed patch size k (e.g. a `build_machine` partial).
        schedule: the diffusion schedule the network was trained with.
        candidates: patch sizes to try.
        x_T: (B, C, H, W) initial noise of the network trajectories; `seed` seeds their noise.
        every: evaluate every `every`-th step (t = 0, every, 2 every, ...; T - 1 always).
        progress: show progress bars (the trajectory, then each candidate's machine).

    Returns:
        {"patch_size": [k for t in 0..T-1], "candidates": [...], "steps": [evaluated t],
         "cosine": [[mean cosine per candidate] per evaluated t], "n_samples": B}.
    """
    candidates = [int(k) for k in candidates]
    check(len(candidates) >= 1, "calibration needs at least one candidate patch size")
    check(every >= 1, f"every={every} must be at least 1")
    steps = sorted(set(range(0, schedule.T, every)) | {schedule.T - 1})
    trajectory, _ = network_trajectory(network, x_T, seed, schedule, steps, progress)
    table = torch.empty(len(steps), len(candidates), dtype=torch.float64)
    for j, k in enumerate(candidates):
        cos = trajectory_cosines(trajectory, machine_for(k), progress)
        table[:, j] = torch.stack([cos[t].mean() for t in steps])
    bad = (~table.isfinite()).nonzero().tolist()  # [i, j]: no cosine at steps[i], candidate j
    if bad:
        (i, j), more = bad[0], len(bad) - 1
        raise UserError(
            f"patch size {candidates[j]} gives no eps cosine (NaN or infinite eps) at "
            f"t={steps[i]} (and at {more} more step and size pairs): the machine or the "
            "network diverged; nothing was written"
        )
    best = [candidates[j] for j in table.argmax(1).tolist()]
    evaluated = torch.tensor(steps)
    nearest = (torch.arange(schedule.T)[:, None] - evaluated[None]).abs().argmin(1)
    return {
        "patch_size": [best[i] for i in nearest.tolist()],
        "candidates": candidates,
        "steps": steps,
        "cosine": table.tolist(),
        "n_samples": int(x_T.shape[0]),
    }


def save_calibration(calibration: dict, path: str | Path) -> None:
    """Write a calibration as JSON (loadable by `PatchSchedule.load`)."""
    atomic_write_json(path, calibration)
