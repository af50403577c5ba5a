"""`mosaicdiff reproduce`: the paper's Table 1 and Appendix B from one command.

Trains the four networks (each architecture's seeds as one grouped program), samples them with
ancestral DDPM over all T steps, measures consistency, and writes a report. Every stage is
reused when its outputs exist and resumed when it was interrupted: running the same command
again only does what is missing.

    OUT/plan.json              the resolved plan (preset, models, one RunConfig per model)
    OUT/runs/ARCH/             a run directory per model (see runs.py)
    OUT/baseline.json          the random baseline, exact and Monte-Carlo
    OUT/report/                report.md, report.html, table.csv, table.json, figures/
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from mosaicdiff.config import RunConfig, SampleConfig, TrainConfig, stored_sample
from mosaicdiff.config_io import matches, override, split_assignment, to_dict
from mosaicdiff.errors import check, check_out
from mosaicdiff.experiments.timing import Laps, done_line
from mosaicdiff.io import atomic_write_json, read_json

PAPER_MODELS = ("cnn", "top1", "identity", "attn")

# Presets list only what differs from the defaults (the defaults are the paper's setup).
PRESETS: dict[str, dict] = {
    "quick": {
        "train": {"epochs": 600, "seeds": (0, 1, 2), "ema_decay": 0.999},
        "sample": {"n_runs": 5, "n_per_run": 400},
    },
    # The paper's own setup: one training seed per model, as it trained (issue 4 times it so);
    # `--seeds 3` adds the interval over seeds the quick preset shows, at 3x the work.
    "paper": {},
}
TOP1_EPOCH_FACTOR = 2  # App. B: top1 trained 10,000 epochs against 5,000
# Theory section: machine samples and network-machine pairs compared, per preset.
THEORY_SIZES = {"quick": (300, 64), "paper": (10_000, 1_000)}


def preset_config(name: str) -> RunConfig:
    check(name in PRESETS, f"--preset {name!r} is not one of {list(PRESETS)}")
    cfg = RunConfig()
    for section, values in PRESETS[name].items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return cfg


def model_configs(base: RunConfig, models: tuple[str, ...]) -> dict[str, RunConfig]:
    """One RunConfig per model; top1 trains TOP1_EPOCH_FACTOR times longer, as in App. B."""
    check(base.data.kind == "pairings", "reproduce needs data.kind=pairings (the paper's data)")
    out = {}
    for arch in models:
        cfg = override(base, [f"model.arch={arch}"])
        if arch == "top1":
            cfg = replace(
                cfg, train=replace(cfg.train, epochs=cfg.train.epochs * TOP1_EPOCH_FACTOR)
            )
        out[arch] = cfg
    return out


def train_stage(cfg: RunConfig, run_path: Path, progress: bool) -> None:
    from mosaicdiff.runs import RunDir
    from mosaicdiff.training import train

    run = RunDir(run_path)
    finished = run.exists() and run.latest_epoch() == cfg.train.epochs
    if finished and to_dict(run.read_config()) == to_dict(cfg):
        return
    train(cfg, run_path, resume=run.exists(), progress=progress)


def stored_results(cfg: RunConfig, run_path: Path) -> dict | None:
    """The results `sample_stage` stored for `run_path`, where its samples were drawn by
    `cfg.sample`."""
    from mosaicdiff import evaluate
    from mosaicdiff.generate import read_meta
    from mosaicdiff.runs import RunDir

    out = RunDir(run_path).samples_dir()
    results = out / evaluate.results_name(evaluate.metric_for(cfg.data.kind))
    stored = read_meta(out, "sample")["sample"] if results.is_file() else None
    if stored is None or not matches(stored_sample(stored), cfg.sample):
        return None
    result = read_json(results)
    return result if evaluate.measured_as_now(result) else None  # else: measured again


def sample_stage(cfg: RunConfig, run_path: Path, progress: bool, lap=lambda name: None) -> dict:
    """Sample a trained run (and `samples.png`) and measure its samples: consistency on the
    colour pairings, creativity (of every sample) on other data; reused when measured with
    these settings. `lap(name)` is called as the sampling and the evaluation end."""
    from mosaicdiff import evaluate
    from mosaicdiff.generate import draw_samples, save_preview
    from mosaicdiff.runs import load_run

    stored = stored_results(cfg, run_path)
    if stored is not None:
        return stored
    loaded = load_run(run_path, device=cfg.device)
    out = loaded.run.samples_dir()
    metric = evaluate.metric_for(cfg.data.kind)
    draw_samples(loaded, cfg.sample, progress=progress)
    seeds = list(cfg.train.seeds)
    save_preview(out, seeds)
    lap("sample")
    if metric == "consistency":
        result = evaluate.evaluate_consistency(out, loaded.dataset.info["spec"], seeds)
    else:
        n = cfg.sample.n_runs * cfg.sample.n_per_run
        images = loaded.dataset.images
        patch = evaluate.MOSAIC_PATCH
        result = evaluate.evaluate_creativity_samples(out, images, seeds, patch, n, progress)
    lap("evaluate")
    return result


def model_stage(cfg: RunConfig, run_path: Path, progress: bool) -> tuple[dict, dict]:
    """Train, sample and evaluate one model: its results, and the seconds each phase took in
    this call (a reused phase takes next to none; reused samples are neither drawn nor
    evaluated, so only "train" is timed)."""
    laps = Laps()
    train_stage(cfg, run_path, progress)
    laps("train")
    return sample_stage(cfg, run_path, progress, laps), laps.seconds


def model_stages(
    configs: dict, out: Path, progress: bool, jobs: int, side: dict | None = None
) -> tuple[dict, dict]:
    """Every model's train and sample stages: one after another, or in `jobs` processes at
    once. On a GPU each model's kernels are too small to fill it, so the models run side by
    side; on a laptop's few cores one at a time is fastest. `side` (name -> (function, args)),
    run in the pool beside the models, is work that needs none of them. Each process in the
    pool gets an equal share of the CPU threads. With jobs <= 1 there is no pool and `side` is
    not run: its caller does that work later.

    Returns (results by model, timings): each model's phase seconds (`model_stage`), and each
    side job's seconds."""
    results, timings = {}, {}
    if jobs <= 1:
        for arch, cfg in configs.items():
            results[arch], timings[arch] = model_stage(cfg, out / "runs" / arch, progress)
            print(done_line(arch, timings[arch]), flush=True)
        return results, timings
    import os

    from mosaicdiff.pool import process_pool

    side = side or {}
    jobs = min(jobs, len(configs) + len(side))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"{', '.join([*configs, *side])}: {jobs} processes at once", flush=True)
    with process_pool(jobs) as pool:
        work = {a: (model_stage, (cfg, out / "runs" / a, False)) for a, cfg in configs.items()}
        futures = {
            name: pool.submit(_timed, threads, fn, *args)
            for name, (fn, args) in (work | side).items()
        }
        for name, future in futures.items():
            result, seconds = future.result()
            if name in configs:
                results[name], timings[name] = result
            else:
                timings[name] = seconds
            print(done_line(name, timings[name]), flush=True)
    return results, timings


def _timed(threads: int, fn, *args):
    """fn(*args) on `threads` CPU threads, in a worker of the pool: (its result, seconds)."""
    import torch

    torch.set_num_threads(threads)
    tick = time.perf_counter()
    return fn(*args), time.perf_counter() - tick


def baseline_stage(base: RunConfig, out: Path) -> dict:
    from mosaicdiff.data.pairings import PairingsSpec
    from mosaicdiff.metrics.consistency import random_baseline_exact, random_baseline_monte_carlo
    from mosaicdiff.metrics.stats import CI_METHOD

    path = out / "baseline.json"
    spec = PairingsSpec.from_config(base.data)
    key = {
        "data": to_dict(base.data),
        "n_runs": base.sample.n_runs,
        "n_per_run": base.sample.n_per_run,
    }
    if path.is_file():
        stored = read_json(path)
        mc = stored.get("monte_carlo") or {}
        if stored.get("key") == key and mc.get("ci_method") == CI_METHOD:
            return stored  # else: another setup, or the older normal interval
    mc = random_baseline_monte_carlo(spec, base.sample.n_runs, base.sample.n_per_run, seed=12345)
    result = {"key": key, "exact": random_baseline_exact(spec), "monte_carlo": mc}
    atomic_write_json(path, result)
    return result


def reproduce(
    base: RunConfig,
    out: str | Path,
    models=PAPER_MODELS,
    preset: str = "quick",
    progress: bool = True,
    theory: bool = True,
    ablation: bool = False,
    jobs: int | None = None,
) -> Path:
    """Run every stage that is missing and write the report; return the report folder.

    With `ablation`, also run `ablation.py`'s one-change-at-a-time points (in `jobs` parallel
    processes) for every model more than ablation.GAP points from the paper."""
    from mosaicdiff.runs import RunDir

    check(len(models) > 0, f"reproduce needs at least one of {list(PAPER_MODELS)}")
    start = time.perf_counter()
    out = Path(out)
    configs = model_configs(base, tuple(models))
    for arch, cfg in configs.items():  # before plan.json: a refused rerun leaves OUT as it was
        RunDir(out / "runs" / arch).check_continues(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "plan.json",
        {
            "preset": preset,
            "models": list(models),
            "configs": {a: to_dict(c) for a, c in configs.items()},
        },
    )
    on_gpu = base.device.startswith("cuda")
    model_jobs = jobs or (len(configs) + int(theory) if on_gpu else 1)
    side = {}
    if theory and model_jobs > 1:  # the machines need no network: sample them meanwhile
        from mosaicdiff.experiments.theory_section import machines_stage

        side["theory machines"] = (machines_stage, (base, out, *THEORY_SIZES[preset]))
    from mosaicdiff.fast import native
    from mosaicdiff.generate import native_shape

    to_sample = [c for a, c in configs.items() if stored_results(c, out / "runs" / a) is None]
    with native.built_in_background(filter(None, map(native_shape, to_sample))):
        results, timings = model_stages(configs, out, progress, model_jobs, side)
    baseline = baseline_stage(base, out)
    theory_result = None
    if theory:
        from mosaicdiff.experiments.theory_section import theory_stage

        tick = time.perf_counter()
        theory_result = theory_stage(base, out, list(configs), *THEORY_SIZES[preset])
        timings["theory"] = time.perf_counter() - tick
    from mosaicdiff.experiments.report import table_rows, write_report

    ablation_md = ""
    if ablation:
        from mosaicdiff.experiments import ablation as ab

        rows = table_rows(configs, results, baseline)
        tick = time.perf_counter()
        points = ab.run_ablation(configs, ab.models_to_ablate(rows), out, jobs)
        timings["ablation"] = time.perf_counter() - tick
        ablation_md = ab.ablation_markdown(points, rows)
    timings["total"] = time.perf_counter() - start  # the report itself takes a few seconds
    return write_report(
        out, configs, results, baseline, preset, timings, theory_result, ablation_md
    )


def register(sub) -> None:
    from mosaicdiff.cli import add_config_options, out_path

    p = sub.add_parser(
        "reproduce",
        help="train, sample and evaluate the paper's four models and write the report",
        description="Reproduce Table 1 and Appendix B of Finn et al. (2025). Re-running the "
        "same command reuses finished stages and resumes interrupted ones.",
    )
    p.add_argument("--preset", default="quick", help=f"one of {list(PRESETS)} (default quick)")
    p.add_argument("--out", type=out_path, help="output folder (default reports/PRESET)")
    p.add_argument(
        "--models",
        default=",".join(PAPER_MODELS),
        help="comma-separated architectures (default: all four)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also change one unstated choice at a time for every model more than 5 points "
        "from the paper (time input, nonlinearity, layout; and 4x epochs)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="parallel processes for the models (default: one each on a GPU, one in all on a "
        "CPU) and for --ablation (default: the cores)",
    )
    p.add_argument(
        "--no-theory",
        action="store_true",
        help="skip the section comparing the networks with closed-form machines",
    )
    add_config_options(p, model=False)
    p.set_defaults(handler=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from mosaicdiff.resolve import resolve_config
    from mosaicdiff.runs import refuse_inside_run

    models = tuple(m.strip() for m in args.models.split(","))
    for m in models:
        check(m in PAPER_MODELS, f"--models: {m!r} is not one of {list(PAPER_MODELS)}")
    check(len(set(models)) == len(models), f"--models {args.models!r} names a model twice")
    for assignment in args.set or []:
        check(
            split_assignment(assignment)[0] != "model.arch",
            f"--set {assignment!r}: reproduce trains the paper's models; choose them with --models",
        )
    preset = preset_config(args.preset)
    base = resolve_config(args, preset)
    check(
        base.model.arch == preset.model.arch,
        f"--config sets model.arch={base.model.arch!r}: reproduce trains the paper's models; "
        "choose them with --models",
    )
    check(args.jobs is None or args.jobs >= 1, f"--jobs={args.jobs} must be at least 1")
    out = check_out(args.out or f"reports/{args.preset}")
    refuse_inside_run(out)
    if args.dry_run:
        print(json.dumps({a: to_dict(c) for a, c in model_configs(base, models).items()}, indent=2))
        if args.ablation:  # on stderr: the plan on stdout stays JSON
            from mosaicdiff.experiments.ablation import GAP

            print(
                "--ablation: its runs are chosen once the table exists (one change at a time "
                f"for every model more than {GAP:g} points from the paper's number)",
                file=sys.stderr,
            )
        return 0
    tick = time.perf_counter()
    report = reproduce(
        base,
        out,
        models,
        args.preset,
        progress=not args.no_progress,
        theory=not args.no_theory,
        ablation=args.ablation,
        jobs=args.jobs,
    )
    print((report / "table.md").read_text())
    print(f"report -> {report / 'report.html'}  ({time.perf_counter() - tick:.0f} s)")
    return 0


__all__ = ["PRESETS", "reproduce", "preset_config", "SampleConfig", "TrainConfig"]
