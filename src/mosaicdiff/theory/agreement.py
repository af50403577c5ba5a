"""How well a score machine predicts a trained network (Kamb & Ganguli 2024, Sec. 5).

Two measures, both on the network's own footing:
- per-step cosine similarity between machine and network eps, evaluated on the states x_t of
  the network's own DDPM trajectories (the machine never steers);
- r^2 between final samples of network and machine drawn from the same x_T with the same
  sampler noise: the squared Pearson correlation of the two images' pixels, per sample
  (K&G report a median r^2 around 0.9 for CNNs on MNIST and CIFAR-10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from mosaicdiff.denoiser import Denoiser
from mosaicdiff.diffusion import Schedule
from mosaicdiff.sampling import ddpm_sample


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of (B, ...) tensors, (B,) float64."""
    u, v = u.flatten(1).double(), v.flatten(1).double()
    return (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)).clamp(min=1e-300)


def r_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Pearson correlation of (B, ...) tensors, (B,) float64."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    return (x * y).sum(1) ** 2 / ((x * x).sum(1) * (y * y).sum(1)).clamp(min=1e-300)


def spread(values: torch.Tensor) -> dict:
    """Median, quartiles, mean and count of a 1-D tensor, as JSON-able floats."""
    v = values.double().flatten()
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {
        "median": float(q[1]),
        "q25": float(q[0]),
        "q75": float(q[2]),
        "mean": float(v.mean()),
        "n": v.numel(),
    }


def network_trajectory(
    network: Denoiser,
    x_T: torch.Tensor,
    seed: int,
    schedule: Schedule,
    steps: Sequence[int],
    progress: bool = False,
) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The network's DDPM trajectory from x_T (B, C, H, W): {t: (x_t, network eps)} at `steps`,
    and the trajectory's end x_0 (what `ddpm_sample` with this seed returns)."""
    keep, record = set(int(t) for t in steps), {}

    def callback(i, t, x_t, eps):
        if t in keep:
            record[t] = (x_t.clone(), eps.clone())

    g = torch.Generator().manual_seed(seed)
    x_0 = ddpm_sample(network, x_T, g, schedule, callback=callback, progress=progress)
    return record, x_0


def trajectory_cosines(
    trajectory: dict[int, tuple[torch.Tensor, torch.Tensor]],
    machine: Denoiser,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """{t: (B,) cosine(machine eps, network eps)} on the recorded network states."""
    out = {}
    states = sorted(trajectory.items())
    for t, (x_t, eps) in tqdm(states, desc="machine eps", disable=not progress, leave=False):
        t_tensor = torch.tensor([t], dtype=torch.long)
        with torch.inference_mode():
            out[t] = cosine(machine(x_t, t_tensor), eps)
    return out


def eps_agreement(
    network: Denoiser,
    machine: Denoiser,
    schedule: Schedule,
    x_T: torch.Tensor,
    seed: int = 0,
    steps: Sequence[int] | None = None,
    progress: bool = False,
) -> dict:
    """Per-step cosine similarity of eps along the network's DDPM trajectories.

    Args:
        x_T: (B, C, H, W) initial noise; `seed` seeds the sampler noise.
        steps: timesteps to evaluate (default: all T).

    Returns:
        {"t": [...], "median": [...], "q25": [...], "q75": [...]} over the B samples per step,
        and under "samples" the trajectories' ends: the network's DDPM samples from x_T and
        `seed` (`sample_agreement` takes them as `network_samples` rather than drawing again).
    """
    steps = list(range(schedule.T)) if steps is None else sorted(set(steps))
    trajectory, x_0 = network_trajectory(network, x_T, seed, schedule, steps, progress)
    cos = trajectory_cosines(trajectory, machine, progress)
    rows = [spread(cos[t]) for t in steps]
    curves = {key: [r[key] for r in rows] for key in ("median", "q25", "q75")}
    return {"t": steps, **curves, "samples": x_0}


def sample_agreement(
    network: Denoiser,
    machine: Denoiser,
    schedule: Schedule,
    x_T: torch.Tensor,
    seed: int = 0,
    sampler: Callable = ddpm_sample,
    progress: bool = False,
    machine_samples: torch.Tensor | None = None,
    network_samples: torch.Tensor | None = None,
) -> dict:
    """r^2 between final samples of network and machine from the same x_T and sampler noise.

    `machine_samples` and `network_samples`, when given, are the machine's and the network's,
    drawn so before: several networks against one machine sample it once, and the end of
    `eps_agreement`'s DDPM trajectories is the network's DDPM sample.

    Returns:
        {"r2": per-sample list, **spread(r2)}, plus the two sample batches under "samples".
    """

    def draw(denoiser: Denoiser) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sampler(denoiser, x_T, g, schedule, progress=progress)

    x_net = draw(network) if network_samples is None else network_samples
    x_machine = draw(machine) if machine_samples is None else machine_samples
    r2 = r_squared(x_net, x_machine)
    return {"r2": r2.tolist(), **spread(r2), "samples": (x_net, x_machine)}
