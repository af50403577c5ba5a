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
from mosaicdiff.config import RunConfig
from mosaicdiff.config_io import to_dict
from mosaicdiff.io import atomic_write_json, read_json, save_npz

REPORT_MACHINES = {  # name -> build_machine keyword arguments
    "ELS": {"name": "els"},
    "AttentionELS (soft)": {"name": "attn", "attention": "soft", "lam": 0.5},
    "AttentionELS (top-1)": {"name": "attn", "attention": "top1", "lam": 0.5},
}
AGREE_SEED = 2  # the sampler seed of the agreement's samples, networks and machines alike
PARTNER = {
    "cnn": "ELS",
    "attn": "AttentionELS (soft)",
    "identity": "AttentionELS (soft)",
    "top1": "AttentionELS (top-1)",
}


def _setup(base: RunConfig, n: int):
    """The dataset, schedule, sampler and the (n, C, H, W) initial noise; the machines and the
    networks all start from it (agreement from its first n_agree samples)."""
    from functools import partial

    from mosaicdiff.data import load_dataset
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.noise import sampler_kind
    from mosaicdiff.sampling import sample

    dataset = load_dataset(base.data)
    schedule = Schedule.from_config(base.diffusion)
    sc = base.sample  # the same sampler as the networks' table
    noise = sampler_kind(sc.noise)  # its generators as before: the machines see one batch
    sampler = partial(sample, sampler=sc.sampler, steps=sc.steps, eta=sc.eta, noise=noise)
    x_T = torch.randn((n, *dataset.shape), generator=torch.Generator().manual_seed(0))
    return dataset, schedule, sampler, x_T


def build(label: str, dataset, schedule):
    """The machine `label` of REPORT_MACHINES on the dataset's images: 2x2 patches, stride 2."""
    from mosaicdiff.theory.machines import build_machine

    kw = REPORT_MACHINES[label]
    return build_machine(images=dataset.images, schedule=schedule, patch_size=2, stride=2, **kw)


def machines_stage(base: RunConfig, out: Path, n: int, n_agree: int) -> dict:
    """Sample each machine n times and measure consistency, and sample it again from the
    first n_agree initial noises with the agreement's sampler seed, for `theory_stage` to
    compare the networks with. Needs no trained network, so it can run beside the models'
    stages. Cached in OUT/theory/machines.json and one .npz per machine."""
    from mosaicdiff.theory.report import consistency_report

    folder = out / "theory"
    key = {"data": to_dict(base.data), "sample": to_dict(base.sample), "n": n, "n_agree": n_agree}
    cache = folder / "machines.json"
    if cache.is_file() and read_json(cache).get("key") == key:
        return read_json(cache)["machines"]
    dataset, schedule, sampler, x_T = _setup(base, n)
    result = {}
    for label in REPORT_MACHINES:
        machine = build(label, dataset, schedule)
        x0 = sampler(machine, x_T, torch.Generator().manual_seed(1), schedule).float()
        agree = sampler(machine, x_T[:n_agree], torch.Generator().manual_seed(AGREE_SEED), schedule)
        save_npz(folder / f"{_slug(label)}.npz", samples=x0.numpy(), agree=agree.numpy())
        rep = consistency_report(x0, dataset.info["spec"])
        result[label] = {k: rep[k] for k in ("rate", "ci95", "reasons", "identical_quadrants")}
    atomic_write_json(cache, {"key": key, "machines": result})
    return result


def theory_stage(base: RunConfig, out: Path, archs, n: int, n_agree: int) -> dict:
    """Sample each machine (`machines_stage`) and compare each trained network with ELS and its
    partner machine: r^2 between their final samples from the same initial noise and sampler
    noise (`theory.agreement`). Each network is sampled once, whatever the machines it meets.
    Cached in OUT/theory/theory.json (recomputed when the plan changes)."""
    from mosaicdiff.io import load_npz
    from mosaicdiff.metrics.consistency import random_baseline_exact
    from mosaicdiff.runs import RunDir, load_run
    from mosaicdiff.theory.agreement import r_squared, spread

    runs = {arch: RunDir(out / "runs" / arch) for arch in archs}
    key = {
        "data": to_dict(base.data),
        "sample": to_dict(base.sample),
        "archs": list(archs),
        "n": n,
        "n_agree": n_agree,
        # the very networks compared (probe 61: a run deleted and trained anew, with other
        # settings, kept the old one's agreement)
        "networks": {a: r.checkpoint_sha256(r.latest_epoch()) for a, r in runs.items()},
    }
    cache = out / "theory" / "theory.json"
    if cache.is_file() and read_json(cache).get("key") == key:
        return read_json(cache)
    machine_results = machines_stage(base, out, n, n_agree)
    dataset, schedule, sampler, x_T = _setup(base, n)
    x_T = x_T[:n_agree]
    result = {
        "key": key,
        "baseline_exact": random_baseline_exact(dataset.info["spec"]),
        "machines": machine_results,
        "agreement": {},
    }
    x_machines = {  # each machine's agreement samples, read once for every network
        label: torch.from_numpy(load_npz(out / "theory" / f"{_slug(label)}.npz")["agree"])
        for label in REPORT_MACHINES
    }
    for arch in archs:
        net = load_run(out / "runs" / arch, device="cpu").model.member(0).as_denoiser()
        x_net = sampler(net, x_T, torch.Generator().manual_seed(AGREE_SEED), schedule)
        result["agreement"][arch] = {}
        for label in dict.fromkeys(["ELS", PARTNER[arch]]):
            r2 = spread(r_squared(x_net, x_machines[label]))
            result["agreement"][arch][label] = {k: r2[k] for k in ("median", "q25", "q75")}
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
