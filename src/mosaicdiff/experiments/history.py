"""`mosaicdiff history RUN`: how a run's samples changed over its training.

The talk behind the paper asks how the balance between learning the training set's score and
generalising "proceeds over the course of training". A run trained with `train.keep_every=N`
keeps its checkpoint every N epochs (besides the last two, which every run keeps); this command
samples each kept checkpoint the same way, from the same noise, and measures the samples as
`evaluate` does: consistency on the colour pairings, memorization, novelty and mosaics on other
data. Per checkpoint epoch E:

    RUN/samples/NAME-E/      the samples (E zero-padded, epoch-000250; a rerun resumes them),
                             samples.png and the results of `evaluate`
    OUT/history.csv          a row per (epoch, seed): the metrics and that epoch's training loss
    OUT/history.png          the metrics and the training loss against the epoch
    OUT/samples.png          the first samples of the first seed at each epoch, a row each

A checkpoint's samples are drawn with its EMA weights unless `--weights raw`. NAME defaults
to `epoch` (`raw` for the raw weights), OUT to RUN/history (RUN/history-NAME for another NAME),
so histories of the two kinds of weights, or of two sample sizes, keep apart; a metric other
than the data's own (`--metric creativity` on the colour pairings) adds its name to the
folder (RUN/history-creativity). A checkpoint
that can't be read (damaged, or deleted by a run still training) is left out with a note,
unless its samples were all drawn by an earlier history with these settings: a run still
training rotates out checkpoints a history already measured, and those epochs stay in.

Given several runs (measured by the same metric) and `--out`, each gets its own history as
above, and OUT/history.csv and OUT/history.png set them side by side: a line per run, the mean
over its seeds, with the band from its lowest to its highest seed.

OneCycleLR spans the whole run, so epoch E of a 600-epoch run is not a run trained for E
epochs: its learning rate had not yet decayed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mosaicdiff.config import RunConfig
from mosaicdiff.errors import check, check_out

HISTORY_SAMPLES = 1000  # per seed and checkpoint, unless the run's own sampling draws fewer
SHOWN = 8  # samples per epoch in OUT/samples.png


def history_sample(scfg):
    """The sampling of each checkpoint: the run's own, or 10 runs of 100 samples per seed when
    that draws more than `HISTORY_SAMPLES` (the paper's million per seed and checkpoint would
    take hours)."""
    if scfg.n_runs * scfg.n_per_run <= HISTORY_SAMPLES:
        return scfg
    return replace(scfg, n_runs=10, n_per_run=HISTORY_SAMPLES // 10)


def register(sub) -> None:
    """Add `history` to the CLI's subparsers."""
    from mosaicdiff.cli import add_config_options, add_metric_options, out_path

    p = sub.add_parser(
        "history",
        help="samples and metrics of each kept checkpoint of a run (train.keep_every)",
        description="Sample every checkpoint a run kept, measure the samples as evaluate does, "
        "and plot the metrics against the epoch beside the training loss. Each checkpoint's "
        "samples are a resumable folder, so running the same command again continues. Without "
        f"--runs/--per-run, {HISTORY_SAMPLES:,} samples per seed and checkpoint (or the run's "
        "own number, if fewer).",
    )
    p.add_argument(
        "run", nargs="+", help="run directories (train them with --set train.keep_every=N)"
    )
    p.add_argument(
        "--out",
        type=out_path,
        help="output folder (default RUN/history; RUN/history-creativity for --metric creativity "
        "on the colour pairings); with several runs, where their comparison "
        "goes (history.csv and history.png, a line per run)",
    )
    p.add_argument(
        "--name",
        help="samples folders are RUN/samples/NAME-EPOCH, figures in RUN/history-NAME "
        "(default: epoch, into RUN/history; raw with --weights raw)",
    )
    p.add_argument(
        "--weights",
        choices=["ema", "raw"],
        default="ema",
        help="the EMA weights (what samples use; default) or the optimiser's own",
    )
    add_metric_options(p)
    add_config_options(p, training=False)
    p.set_defaults(handler=cmd_history)


@dataclass
class Plan:
    """One run's history, resolved and checked before anything is sampled."""

    path: str  # the run directory as given
    cfg: RunConfig  # the run's config, with the sampling of each checkpoint
    metric: str  # "consistency" or "creativity"
    options: tuple[int, int] | None  # creativity's --patch and --limit
    baseline: float | None  # the random baseline (%) beside consistency
    epochs: list[int]  # the kept checkpoints, and the epochs whose samples were all drawn
    out: Path  # history.csv and the figures


def cmd_history(args) -> int:
    """Handler of `mosaicdiff history`."""
    import json

    from mosaicdiff.config_io import to_dict

    several = len(args.run) > 1
    check(
        not several or args.out is not None,
        "several runs: name --out, the folder for their comparison (each run's own history "
        "goes to its RUN/history)",
    )
    where = [Path(path).resolve() for path in args.run]
    check(len(set(where)) == len(where), f"runs {args.run} name one run twice")
    if args.name is None:
        args.name = "epoch" if args.weights == "ema" else "raw"
    plans = [plan_history(args, path, None if several else args.out, several) for path in args.run]
    metrics = {p.metric for p in plans}
    check(
        len(metrics) == 1,
        f"these runs are measured by different metrics {sorted(metrics)}; --metric creativity "
        "measures any data",
    )
    together = check_out(args.out) if several else None
    if several:
        check(
            together.resolve() not in {plan.out.resolve() for plan in plans},
            f"--out {args.out!r} is where a run's own history goes; name another folder",
        )
        refuse_run_directory(together)
    if args.dry_run:
        about = [
            {"run": plan.path, "epochs": plan.epochs, "metric": plan.metric}
            | {"weights": args.weights, "out": str(plan.out), "sample": to_dict(plan.cfg.sample)}
            for plan in plans
        ]
        print(json.dumps({"out": str(together), "runs": about} if several else about[0], indent=2))
        return 0
    results = {plan.path: run_history(args, plan) for plan in plans}
    if several:
        baselines = {plan.baseline for plan in plans}
        baseline = baselines.pop() if len(baselines) == 1 else None
        write_comparison(together, results, plans[0].metric, baseline)
    return 0


def plan_history(args, path: str, out: str | None, several: bool = False) -> Plan:
    """Resolve and check the history of the run in `path` (into `out`, default RUN/history or
    RUN/history-NAME): a bad value stops every run's history before any is sampled (naming
    the run, when there are `several`)."""
    from mosaicdiff.errors import UserError

    try:
        return _plan_history(args, path, out)
    except UserError as e:
        if several:
            raise UserError(f"{path}: {e}") from None
        raise


def _plan_history(args, path: str, out: str | None) -> Plan:
    from mosaicdiff.cli import sampling_config
    from mosaicdiff.data import load_dataset
    from mosaicdiff.evaluate import check_metric, creativity_options, metric_for
    from mosaicdiff.generate import refuse_mixing
    from mosaicdiff.runs import RunDir, load_run

    run = RunDir(path)
    stored = run.read_config()
    run.samples_dir(args.name)  # a bad --name fails before anything runs
    kept = run.checkpoint_epochs()
    if not kept:
        load_run(path)  # says why there is none: not trained yet, or damaged
    base = replace(stored, sample=history_sample(stored.sample))
    cfg = sampling_config(args, stored, base)
    metric = check_metric(args.metric, stored.data.kind, args.patch, args.limit)
    dataset = load_dataset(stored.data)
    options, baseline = None, None
    if metric == "creativity":
        options = creativity_options(args.patch, args.limit, dataset.images)
    else:
        from mosaicdiff.metrics import random_baseline_exact

        baseline = 100 * random_baseline_exact(dataset.info["spec"])
    default = "history" if args.name == "epoch" else f"history-{args.name}"
    if metric != metric_for(stored.data.kind):  # kept apart from the history of its own metric
        default += f"-{metric}"
    out = check_out(out or run.path / default)
    refuse_run_directory(out)
    for epoch in kept:  # folders drawn with other settings are refused now, not halfway
        folder = run.samples_dir(f"{args.name}-{epoch:06d}")
        refuse_mixing(folder, cfg.sample, epoch, args.weights)
    drawn = [e for e in _drawn_epochs(run, args.name, cfg, args.weights) if e not in kept]
    return Plan(path, cfg, metric, options, baseline, sorted([*kept, *drawn]), out)


def _drawn_epochs(run, name: str, cfg: RunConfig, weights: str) -> list[int]:
    """The epochs E whose folder RUN/samples/NAME-E is `_drawn`."""
    found = []
    for folder in sorted(run.path.glob(f"samples/{name}-*")):
        epoch = folder.name.removeprefix(f"{name}-")
        if epoch.isdigit() and len(epoch) == 6 and _drawn(folder, cfg, int(epoch), weights):
            found.append(int(epoch))
    return found


def _drawn(folder: Path, cfg: RunConfig, epoch: int, weights: str) -> bool:
    """Whether `folder` holds all its samples, drawn with `cfg`'s sampling from `epoch`'s
    `weights`: measurable after the checkpoint itself is gone."""
    from mosaicdiff.errors import UserError
    from mosaicdiff.generate import chunk_paths, read_meta, refuse_mixing

    if not (folder / "sample.json").is_file():
        return False
    try:
        refuse_mixing(folder, cfg.sample, epoch, weights)
        return len(chunk_paths(folder)) == read_meta(folder)["n_chunks"]
    except UserError:  # other settings, or damaged: not this history's
        return False


def refuse_run_directory(out: Path) -> None:
    """--out must not be a run directory (its figures would land beside config.json), nor lie in
    a run's checkpoints or samples (a run's own history folder is where it belongs)."""
    from mosaicdiff.runs import run_holding

    held = run_holding(out)
    if held is None:
        return
    run, entry = held
    check(run != entry, f"--out {str(out)!r} is a run directory; name another folder")
    check(
        entry.name not in ("checkpoints", "samples"),
        f"--out {str(out)!r} would write into the {entry.name} of the trained run "
        f"{str(run)!r}; name another folder",
    )


def run_history(args, plan: Plan) -> dict:
    """Sample and measure every kept checkpoint of `plan`'s run and write its history; return
    its rows and its training log."""
    from mosaicdiff.data import load_dataset
    from mosaicdiff.generate import draw_samples
    from mosaicdiff.runs import CheckpointGone, RunDir, load_run, only_last_two

    run = RunDir(plan.path)
    kept = run.checkpoint_epochs()  # not the epochs measured from their samples alone
    if note := only_last_two(plan.path, kept, plan.cfg.train.keep_every):
        print(note)
    log = [r for r in run.read_metrics() if "epoch" in r and "loss" in r]
    losses = {r["epoch"]: r["loss"] for r in log}  # per seed, as logged
    rows, shown = [], {}
    dataset = None
    for epoch in plan.epochs:
        folder = run.samples_dir(f"{args.name}-{epoch:06d}")
        try:
            loaded = load_run(plan.path, plan.cfg.device, args.weights, epoch)
        except CheckpointGone as e:  # damaged, or rotated out by a run still training
            if not _drawn(folder, plan.cfg, epoch, args.weights):
                print(f"epoch {epoch}: left out ({e})")
                continue
            print(f"epoch {epoch}: its checkpoint is gone; measured from its samples")
        else:
            print(f"epoch {epoch}:")
            draw_samples(loaded, plan.cfg.sample, folder.name, not args.no_progress)
            dataset = loaded.dataset
        if dataset is None:
            dataset = load_dataset(plan.cfg.data)
        loss = losses.get(epoch, [float("nan")] * len(plan.cfg.train.seeds))
        found, first = measure_epoch(args, plan, epoch, folder, dataset, loss)
        rows += found
        shown[epoch] = first
    check(bool(rows), f"none of the checkpoints of {plan.path} could be read; it has no history")
    write_history(plan.out, rows, shown, plan.metric, log, plan.baseline)
    return {"rows": rows, "log": log}


def measure_epoch(args, plan: Plan, epoch: int, folder, dataset, loss) -> tuple[list, object]:
    """Measure the samples of `plan`'s run at `epoch` in `folder`: its rows of history.csv
    (with `loss`, that epoch's per seed), and the first samples of its first seed."""
    metric, options, weights = plan.metric, plan.options, args.weights
    from mosaicdiff.evaluate import evaluate_consistency, evaluate_creativity_samples
    from mosaicdiff.generate import load_samples, save_preview

    seeds = list(plan.cfg.train.seeds)
    save_preview(folder, seeds)
    rows = []
    if metric == "consistency":
        res = evaluate_consistency(folder, dataset.info["spec"], seeds)
        for i, p in enumerate(res["per_seed"]):
            low, high = p["ci95"]  # over the sampling runs (stats.mean_ci)
            rows.append(
                {"epoch": epoch, "seed": p["seed"], "weights": weights, "loss": loss[i]}
                | {"consistency": p["mean"], "ci95_low": low, "ci95_high": high}
            )
        print("  consistency " + ", ".join(f"{100 * r['consistency']:.2f}%" for r in rows))
    else:
        patch, limit = options  # checked before any sampling
        res = evaluate_creativity_samples(
            folder, dataset.images, seeds, patch, limit, not args.no_progress
        )
        for i, p in enumerate(res["per_seed"]):
            rows.append(
                {"epoch": epoch, "seed": p["seed"], "weights": weights, "loss": loss[i]}
                | {k: p[k] for k in COLUMNS["creativity"]}
            )
        print(
            "  novelty "
            + ", ".join(f"{r['novelty']:.3f}" for r in rows)
            + "; memorized "
            + ", ".join(f"{100 * r['memorization_rate']:.1f}%" for r in rows)
        )
    return rows, load_samples(folder, SHOWN)[0]


COLUMNS = {  # metric -> its columns of history.csv, after epoch, seed, weights and loss
    "consistency": ("consistency", "ci95_low", "ci95_high"),
    "creativity": ("n_samples", "novelty", "memorization_rate", "mosaic_ratio", "mosaic_rate"),
}
PANELS = {  # metric -> (column, axis label, scale) of each panel above the loss
    "consistency": [("consistency", "consistent samples (%)", 100)],
    "creativity": [
        ("novelty", "novelty (RMS to nearest)", 1),
        ("memorization_rate", "memorized (%)", 100),
        ("mosaic_rate", "mosaics (%)", 100),
    ],
}


def curves(rows: list[dict], log: list[dict], metric: str) -> dict:
    """One run's rows and training log as the arrays its figures draw: epochs (E,), seeds in
    the run's order, panels {axis label: (E, S)} and loss (logged epochs, mean over seeds)."""
    import numpy as np

    epochs = sorted({r["epoch"] for r in rows})
    seeds = list(dict.fromkeys(r["seed"] for r in rows))  # the run's order: shown is its first
    at = {(r["epoch"], r["seed"]): r for r in rows}
    panels = {
        label: scale * np.array([[at[e, s][key] for s in seeds] for e in epochs], dtype=float)
        for key, label, scale in PANELS[metric]
    }
    loss = (np.array([r["epoch"] for r in log]), np.array([np.mean(r["loss"]) for r in log]))
    return {"epochs": np.array(epochs), "seeds": seeds, "panels": panels, "loss": loss}


def write_history(
    out: Path, rows: list[dict], shown: dict, metric: str, log: list[dict], baseline
) -> None:
    """OUT/history.csv, OUT/history.png and OUT/samples.png from the measured `rows`, the
    run's training `log` (metrics.jsonl) and the random `baseline` (%, or None)."""
    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(
        out / "history.csv", rows, ("epoch", "seed", "weights", "loss", *COLUMNS[metric])
    )
    c = curves(rows, log, metric)
    figure = plots.history_curves(c["epochs"], c["panels"], c["loss"], c["seeds"], baseline)
    plots.save(figure, out / "history.png")
    title = f"seed {c['seeds'][0]}, the same noise at every epoch"
    plots.save(plots.history_samples(shown, title), out / "samples.png")
    print(f"table -> {out / 'history.csv'}, figures -> {out / 'history.png'}, samples.png")


def write_comparison(out: Path, results: dict, metric: str, baseline) -> None:
    """OUT/history.csv (every run's rows, a `run` column first) and OUT/history.png (a line per
    run: its mean over seeds, the band from its lowest to its highest seed)."""
    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv

    rows = [{"run": run, **row} for run, r in results.items() for row in r["rows"]]
    out.mkdir(parents=True, exist_ok=True)
    header = ("run", "epoch", "seed", "weights", "loss", *COLUMNS[metric])
    atomic_write_csv(out / "history.csv", rows, header)
    runs = {run: curves(r["rows"], r["log"], metric) for run, r in results.items()}
    plots.save(plots.history_overlay(runs, baseline), out / "history.png")
    print(f"comparison -> {out / 'history.csv'}, {out / 'history.png'}")
