"""The reproduce report's theory section: each trained network beside its closed-form machine.

Machines use 2x2 patches on the stride-2 grid of the quadrants (the receptive field of the
paper's stride-2 CNN): ELS for the CNN, AttentionELS (Eq. 8 made constructive, lam = 0.5) for
the attention models. Reported per machine: consistency of its own samples; per network:
r^2 between its final samples and each machine's from the same x_T and sampler noise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mosaicdiff import plots
from mosaicdiff.config import RunConfig, to_dict
from mosaicdiff.io import atomic_write_json, read_json, save_npz

MACHINES = {  # name -> build_machine keyword arguments
    "ELS": {"name": "els"},
    "AttentionELS (soft)": {"name": "attn", "attention": "soft", "lam": 0.5},
    "AttentionELS (top-1)": {"name": "attn", "attention": "top1", "lam": 0.5},
}
PARTNER = {
    "cnn": "ELS",
    "attn": "AttentionELS (soft)",
    "identity": "AttentionELS (soft)",
    "top1": "AttentionELS (top-1)",
}


def _setup(base: RunConfig, n: int):
    """The dataset, schedule, machines, sampler and the (n, C, H, W) initial noise."""
    from functools import partial

    from mosaicdiff.data import load_dataset
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.sampling import sample
    from mosaicdiff.theory.machines import build_machine

    dataset = load_dataset(base.data)
    schedule = Schedule.from_config(base.diffusion)
    machines = {
        label: build_machine(images=dataset.images, schedule=schedule, patch_size=2, stride=2, **kw)
        for label, kw in MACHINES.items()
    }
    sc = base.sample  # the same sampler as the networks' table
    sampler = partial(sample, sampler=sc.sampler, steps=sc.steps, eta=sc.eta, noise=sc.noise)
    x_T = torch.randn((n, *dataset.shape), generator=torch.Generator().manual_seed(0))
    return dataset, schedule, machines, sampler, x_T


def machines_stage(base: RunConfig, out: Path, n: int, setup=None) -> dict:
    """Sample each machine n times and measure consistency; needs no trained network, so it
    can run beside the models' stages. Cached in OUT/theory/machines.json. `setup`: what
    `_setup(base, n)` returns, when the caller has it already."""
    from mosaicdiff.theory.report import consistency_report

    folder = out / "theory"
    key = {"data": to_dict(base.data), "sample": to_dict(base.sample), "n": n}
    cache = folder / "machines.json"
    if cache.is_file() and read_json(cache).get("key") == key:
        return read_json(cache)["machines"]
    dataset, schedule, machines, sampler, x_T = setup or _setup(base, n)
    result = {}
    for label, machine in machines.items():
        x0 = sampler(machine, x_T, torch.Generator().manual_seed(1), schedule).float()
        save_npz(folder / f"{_slug(label)}.npz", samples=x0.numpy())
        rep = consistency_report(x0, dataset.info["spec"])
        result[label] = {k: rep[k] for k in ("rate", "ci95", "reasons", "identical_quadrants")}
    atomic_write_json(cache, {"key": key, "machines": result})
    return result


def theory_stage(base: RunConfig, out: Path, archs, n: int, n_agree: int) -> dict:
    """Sample each machine (`machines_stage`) and compare each trained network with ELS and its
    partner machine. Cached in OUT/theory/theory.json (recomputed when the plan changes)."""
    from mosaicdiff.metrics.consistency import random_baseline_exact
    from mosaicdiff.runs import load_run
    from mosaicdiff.theory.agreement import sample_agreement

    key = {
        "data": to_dict(base.data),
        "sample": to_dict(base.sample),
        "archs": list(archs),
        "n": n,
        "n_agree": n_agree,
    }
    cache = out / "theory" / "theory.json"
    if cache.is_file() and read_json(cache).get("key") == key:
        return read_json(cache)
    setup = _setup(base, n)
    machine_results = machines_stage(base, out, n, setup)
    dataset, schedule, machines, sampler, x_T = setup
    result = {
        "key": key,
        "baseline_exact": random_baseline_exact(dataset.info["spec"]),
        "machines": machine_results,
        "agreement": {},
    }
    x_T = x_T[:n_agree]
    for arch in archs:
        net = load_run(out / "runs" / arch, device="cpu").model.member(0).as_denoiser()
        result["agreement"][arch] = {}
        for label in dict.fromkeys(["ELS", PARTNER[arch]]):
            agree = sample_agreement(net, machines[label], schedule, x_T, 2, sampler)
            result["agreement"][arch][label] = {k: agree[k] for k in ("median", "q25", "q75")}
    atomic_write_json(cache, result)
    return result


def theory_markdown(result: dict, out: Path, figs: dict) -> str:
    """The section's text and table; adds the machines' sample grid to `figs`."""
    from mosaicdiff.io import load_npz

    panels = {
        label: load_npz(out / "theory" / f"{_slug(label)}.npz")["samples"][:64]
        for label in result["machines"]
    }
    plots.save(plots.grids(panels), out / "report" / "figures" / "machines.png")
    figs["Samples of the closed-form machines (2x2 patches on the quadrant grid)."] = (
        "figures/machines.png"
    )
    lines = [
        "## Theory: the networks beside their closed-form machines\n",
        f"Exact random baseline: {100 * result['baseline_exact']:.2f}%.\n",
        "| machine | consistency (%) | 95% CI | all four quadrants identical (%) |",
        "|---|---|---|---|",
    ]
    for label, m in result["machines"].items():
        lo, hi = m["ci95"]
        lines.append(
            f"| {label} | {100 * m['rate']:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | "
            f"{100 * m['identical_quadrants']:.1f} |"
        )
    lines += [
        "",
        "Agreement of each network (training seed 0) with the machines: median r^2 "
        "(quartiles) between final samples from the same initial noise and sampler "
        "noise.\n",
        "| network | machine | median r^2 | quartiles |",
        "|---|---|---|---|",
    ]
    for arch, per in result["agreement"].items():
        for label, a in per.items():
            lines.append(
                f"| {arch} | {label} | {a['median']:.3f} | {a['q25']:.3f}-{a['q75']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
