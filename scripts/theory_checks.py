"""The theory's must-show numbers at full size (SPEC Sec. 2), printed and saved as JSON.

1. Colour pairings, stride-2 2x2-patch ELS (the machine of the paper's stride-2 CNN): its
   consistency against the exact random baseline (3/81), with a Wilson 95 % interval, a z-test,
   and chi-square tests that its quadrants are independent.
2. AttentionELS (soft and top-1) for several mixing weights lam: consistency rising from the
   ELS value towards 100 %, and the share of samples that are pure copies of one quadrant.
3. Digits: agreement (per-step eps cosine, final-sample r^2) of trained networks with a machine,
   `digits_agreement(run_dir, ...)`; it needs a trained run (`--run`).

Full size is 10,000 samples per machine with 1,000-step DDPM; `--quick` uses 1,000 samples and
50 DDIM steps. Run: python scripts/theory_checks.py [--quick] [--out reports/theory_checks.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mosaicdiff.cli import Parser
from mosaicdiff.config import DataConfig
from mosaicdiff.data import load_dataset
from mosaicdiff.diffusion import Schedule
from mosaicdiff.metrics.consistency import random_baseline_monte_carlo
from mosaicdiff.sampling import sample
from mosaicdiff.theory import ELS, AttentionELS
from mosaicdiff.theory.report import consistency_report


def draw(machine, n: int, shape, seed: int, sampler: str, steps: int, schedule, batch=5000):
    """n samples from x_T ~ N(0, I) drawn with one seeded generator, in batches."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, *shape, generator=g)
    parts = [
        sample(
            machine, x_T[i : i + batch], g, schedule, sampler, steps if sampler == "ddim" else None
        )
        for i in range(0, n, batch)
    ]
    return torch.cat(parts)


def pairings_checks(n: int, sampler: str, steps: int, lams, attentions, seed: int = 0) -> dict:
    """ELS and AttentionELS consistency on the paper's colour pairings."""
    schedule = Schedule.linear()
    data = load_dataset(DataConfig())
    spec = data.info["spec"]
    out = {"n": n, "sampler": sampler, "steps": steps}
    mc = random_baseline_monte_carlo(spec, n_runs=100, n_per_run=10_000, seed=seed)
    out["baseline_monte_carlo"] = {k: mc[k] for k in ("mean", "std", "ci95", "n")}
    t0 = time.perf_counter()
    els = ELS(data.images, schedule, 2, stride=2)
    out["els"] = consistency_report(draw(els, n, data.shape, seed, sampler, steps, schedule), spec)
    out["els"]["seconds"] = time.perf_counter() - t0
    _print("ELS (2x2, stride 2)", out["els"])
    out["attention"] = []
    for attention in attentions:
        for lam in lams:
            t0 = time.perf_counter()
            machine = AttentionELS(data.images, schedule, 2, stride=2, lam=lam, attention=attention)
            x = draw(machine, n, data.shape, seed, sampler, steps, schedule)
            report = {"attention": attention, "lam": lam, **consistency_report(x, spec)}
            report["seconds"] = time.perf_counter() - t0
            out["attention"].append(report)
            _print(f"AttentionELS {attention:4s} lam={lam:<4}", report)
    return out


def digits_agreement(
    run_dir: str,
    machine: str = "els",
    patch=3,
    n: int = 32,
    every: int = 10,
    seed: int = 0,
) -> dict:
    """Per-step eps cosine and final-sample r^2 of every seed of a trained run against a machine.

    Args:
        run_dir: a trained run (any dataset; digits for the K&G comparison).
        machine: a `build_machine` name; `patch`: int, table, or a calibration JSON path.
        n: samples (trajectories) per seed; every: evaluate eps cosine every n-th step.

    Returns:
        {"members": [{"member", "eps_cosine", "r2"}], "r2_pooled": spread over all samples}.
    """
    from mosaicdiff.runs import load_run
    from mosaicdiff.theory import PatchSchedule, build_machine
    from mosaicdiff.theory.agreement import eps_agreement, sample_agreement, spread

    run = load_run(run_dir, device="cpu")
    if isinstance(patch, str):
        patch = PatchSchedule.load(patch, run.schedule.T)
    m = build_machine(machine, run.dataset.images, run.schedule, patch)
    x_T = torch.randn(n, *run.dataset.shape, generator=torch.Generator().manual_seed(seed))
    steps = sorted(set(range(0, run.schedule.T, every)) | {run.schedule.T - 1})
    members, pooled = [], []
    for i in range(run.model.n_seeds):
        net = run.model.member(i).as_denoiser()
        cos = eps_agreement(net, m, run.schedule, x_T, seed, steps)
        r2 = sample_agreement(net, m, run.schedule, x_T, seed, network_samples=cos.pop("samples"))
        r2.pop("samples")
        pooled += r2["r2"]
        members.append({"member": i, "eps_cosine": cos, "r2": r2})
        print(f"seed {i}: median r^2 {r2['median']:.3f} (IQR {r2['q25']:.3f}-{r2['q75']:.3f})")
    return {"members": members, "r2_pooled": spread(torch.tensor(pooled))}


def _print(name: str, r: dict) -> None:
    lo, hi = r["ci95"]
    print(
        f"{name}: consistency {100 * r['rate']:.2f}% (95% CI {100 * lo:.2f}-{100 * hi:.2f}, "
        f"n={r['n']}) vs exact baseline {100 * r['baseline_exact']:.2f}% "
        f"(p={r['p_vs_baseline']:.3g}); identical quadrants {100 * r['identical_quadrants']:.1f}%; "
        f"min quadrant-independence p={min(r['independence_p'].values()):.3g} "
        f"[{r['seconds']:.0f}s]",
        flush=True,
    )


def main(argv=None) -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 samples, 50 DDIM steps")
    p.add_argument("--n", type=int, default=None, help="samples per machine (default 10,000)")
    p.add_argument("--lams", default="0,0.25,0.5,0.75,0.9,1", help="AttentionELS weights")
    p.add_argument("--attention", default="soft,top1", help="attention kinds to run")
    p.add_argument("--run", default=None, help="trained run for the digits agreement numbers")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids contention)")
    p.add_argument("--out", default="reports/theory_checks.json", help="JSON output")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.n or (1000 if args.quick else 10_000)
    sampler, steps = ("ddim", 50) if args.quick else ("ddpm", 1000)
    lams = [float(x) for x in args.lams.split(",")]
    result = {"pairings": pairings_checks(n, sampler, steps, lams, args.attention.split(","))}
    if args.run:
        result["digits_agreement"] = digits_agreement(args.run)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
