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
so histories of the two kinds of weights, or of two sample sizes, keep apart. A checkpoint
that can't be read (damaged, or deleted by a run still training) is left out with a note.

OneCycleLR spans the whole run, so epoch E of a 600-epoch run is not a run trained for E
epochs: its learning rate had not yet decayed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
    p.add_argument("run", help="run directory (train it with --set train.keep_every=N)")
    p.add_argument("--out", type=out_path, help="output folder (default RUN/history)")
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


def cmd_history(args) -> int:
    """Handler of `mosaicdiff history`."""
    import json

    from mosaicdiff.cli import sampling_config
    from mosaicdiff.config import to_dict
    from mosaicdiff.data import load_dataset
    from mosaicdiff.evaluate import check_metric, creativity_options
    from mosaicdiff.runs import CheckpointGone, RunDir, load_run

    run = RunDir(args.run)
    stored = run.read_config()
    args.name = args.name or ("epoch" if args.weights == "ema" else "raw")
    run.samples_dir(args.name)  # a bad --name fails before anything runs
    epochs = run.checkpoint_epochs()
    if not epochs:
        load_run(args.run)  # says why there is none: not trained yet, or damaged
    base = replace(stored, sample=history_sample(stored.sample))
    cfg = sampling_config(args, stored, base)
    kind = stored.data.kind
    metric = check_metric(args.metric, kind, args.patch, args.limit)
    dataset = load_dataset(stored.data)
    options = None  # --patch and --limit of the creativity metrics
    if metric == "creativity":
        options = creativity_options(args.patch, args.limit, dataset.images)
    default = "history" if args.name == "epoch" else f"history-{args.name}"
    out = check_out(args.out or run.path / default)
    if args.dry_run:
        plan = {"epochs": epochs, "metric": metric, "weights": args.weights, "out": str(out)}
        print(json.dumps({**plan, "sample": to_dict(cfg.sample)}, indent=2))
        return 0
    if stored.train.keep_every == 0:
        kept = ", ".join(map(str, epochs))
        print(
            f"note: {args.run} keeps only its last two checkpoints ({kept}); "
            "train with --set train.keep_every=N to keep one every N epochs"
        )
    baseline = None  # the random baseline, a line beside consistency
    if metric == "consistency":
        from mosaicdiff.metrics import random_baseline_exact

        baseline = 100 * random_baseline_exact(dataset.info["spec"])
    log = [r for r in run.read_metrics() if "epoch" in r and "loss" in r]
    losses = {r["epoch"]: r["loss"] for r in log}  # per seed, as logged
    rows, shown = [], {}
    for epoch in epochs:
        try:
            loaded = load_run(args.run, device=cfg.device, weights=args.weights, epoch=epoch)
        except CheckpointGone as e:  # damaged, or rotated out by a run still training
            print(f"epoch {epoch}: left out ({e})")
            continue
        loss = losses.get(epoch, [float("nan")] * len(stored.train.seeds))
        found, first = measure_epoch(args, cfg, loaded, metric, options, loss)
        rows += found
        shown[epoch] = first
    check(bool(rows), f"none of the checkpoints of {args.run} could be read; nothing was written")
    write_history(out, rows, shown, metric, log, baseline)
    return 0


def measure_epoch(args, cfg, loaded, metric: str, options, loss) -> tuple[list[dict], object]:
    """Sample `loaded`, a run at one of its kept checkpoints (resuming its folder), and measure
    it: its rows of history.csv (with `loss`, that epoch's per seed), and the first samples of
    its first seed."""
    from mosaicdiff.evaluate import evaluate_consistency, evaluate_creativity_samples
    from mosaicdiff.generate import draw_samples, load_samples, save_preview

    epoch = loaded.epoch
    seeds = list(loaded.cfg.train.seeds)
    print(f"epoch {epoch}:")
    folder = draw_samples(loaded, cfg.sample, f"{args.name}-{epoch:06d}", not args.no_progress)
    save_preview(folder, seeds)
    rows = []
    if metric == "consistency":
        res = evaluate_consistency(folder, loaded.dataset.info["spec"], seeds)
        for i, p in enumerate(res["per_seed"]):
            low, high = p["ci95"]  # over the sampling runs
            rows.append(
                {"epoch": epoch, "seed": p["seed"], "weights": loaded.weights, "loss": loss[i]}
                | {"consistency": p["mean"], "ci95_low": low, "ci95_high": high}
            )
        print("  consistency " + ", ".join(f"{100 * r['consistency']:.2f}%" for r in rows))
    else:
        patch, limit = options  # checked before any sampling
        res = evaluate_creativity_samples(
            folder, loaded.dataset.images, seeds, patch, limit, not args.no_progress
        )
        for i, p in enumerate(res["per_seed"]):
            rows.append(
                {"epoch": epoch, "seed": p["seed"], "weights": loaded.weights, "loss": loss[i]}
                | {k: p[k] for k in CREATIVITY_COLUMNS}
            )
        print(
            "  novelty "
            + ", ".join(f"{r['novelty']:.3f}" for r in rows)
            + "; memorized "
            + ", ".join(f"{100 * r['memorization_rate']:.1f}%" for r in rows)
        )
    return rows, load_samples(folder, SHOWN)[0]


CREATIVITY_COLUMNS = ("n_samples", "novelty", "memorization_rate", "mosaic_rate")
CONSISTENCY_COLUMNS = ("consistency", "ci95_low", "ci95_high")
PANELS = {  # metric -> (column, axis label, scale) of each panel above the loss
    "consistency": [("consistency", "consistent samples (%)", 100)],
    "creativity": [
        ("novelty", "novelty (RMS to nearest)", 1),
        ("memorization_rate", "memorized (%)", 100),
        ("mosaic_rate", "mosaics (%)", 100),
    ],
}


def write_history(
    out: Path, rows: list[dict], shown: dict, metric: str, log: list[dict], baseline
) -> None:
    """OUT/history.csv, OUT/history.png and OUT/samples.png from the measured `rows`, the
    run's training `log` (metrics.jsonl) and the random `baseline` (%, or None)."""
    import numpy as np

    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv

    columns = CONSISTENCY_COLUMNS if metric == "consistency" else CREATIVITY_COLUMNS
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "history.csv", rows, ("epoch", "seed", "weights", "loss", *columns))
    epochs = sorted({r["epoch"] for r in rows})
    seeds = list(dict.fromkeys(r["seed"] for r in rows))  # the run's order: shown is its first
    at = {(r["epoch"], r["seed"]): r for r in rows}
    panels = {
        label: scale * np.array([[at[e, s][key] for s in seeds] for e in epochs], dtype=float)
        for key, label, scale in PANELS[metric]
    }
    loss = (np.array([r["epoch"] for r in log]), np.array([np.mean(r["loss"]) for r in log]))
    figure = plots.history_curves(np.array(epochs), panels, loss, seeds, baseline)
    plots.save(figure, out / "history.png")
    plots.save(
        plots.history_samples(shown, f"seed {seeds[0]}, the same noise at every epoch"),
        out / "samples.png",
    )
    print(f"table -> {out / 'history.csv'}, figures -> {out / 'history.png'}, samples.png")
