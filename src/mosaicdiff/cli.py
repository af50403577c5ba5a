"""The `mosaicdiff` command line: train | sample | evaluate | reproduce | sweep | study | history |
theory.

Every config field is reachable with `--set section.field=value` (see `--dry-run` for the
resolved config); the common ones also have their own flags. A bad value prints one line
naming it and what would be valid, and exits with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

from mosaicdiff import __version__
from mosaicdiff.allocator import hold_freed_memory
from mosaicdiff.config_io import differences, to_dict
from mosaicdiff.errors import UserError, check, check_out
from mosaicdiff.own_code import short
from mosaicdiff.resolve import resolve_config

PACKAGE = Path(__file__).parent
SET_HELP = "override any config field, e.g. --set train.lr=3e-4 (repeatable; see --dry-run)"
SAMPLE_SET_HELP = (  # sample and history: the trained run's own settings stay as trained
    "override a sample.* field or device, e.g. --set sample.clip_x0=true (repeatable; see "
    "--dry-run)"
)


def out_path(text: str) -> str:
    """argparse type of every --out: a path, not the empty string (which would write into the
    current folder, or fall back to a default without saying so)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty; name a folder")
    return text


def add_config_options(p: argparse.ArgumentParser, training: bool = True, model: bool = True):
    """The options every config-driven command shares. An option left out keeps the value from
    the stored run, preset or --config; --dry-run prints every resolved value."""
    p = p.add_argument_group(
        "config",
        "An option left out keeps the value of the run, preset or --config file "
        "(the paper's setup unless changed; a new run on data other than the colour pairings "
        "samples 1,000 images per seed by 50-step DDIM with x0 clipped); --dry-run prints them "
        "all.",
    )
    p.add_argument("--config", help="a JSON, YAML or TOML file with config sections to override")
    if training and model:
        p.add_argument(
            "--model",
            help="architecture: cnn (default), attn, identity, top1, resnet, resnet_attn, unet, "
            "dit, or a network of your own as FILE.py:Class (examples/own_network.py)",
        )
    if training:
        p.add_argument(
            "--epochs",
            type=int,
            help="training epochs (default: the paper's 5000, or reproduce's preset's; "
            "reproduce trains top1 twice as many, as the paper did)",
        )
        p.add_argument("--seeds", help="training seeds: a count (3 -> 0,1,2) or a list (0,4,7)")
    p.add_argument("--runs", type=int, help="sampling runs (paper: 100)")
    p.add_argument("--per-run", type=int, help="samples per run and seed (paper: 10000)")
    p.add_argument("--sampler", help="ddpm (every step) or ddim (50 steps unless --steps)")
    p.add_argument("--steps", type=int, help="sampler steps (ddpm: must be T; ddim: fewer)")
    p.add_argument("--sample-seed", type=int, help="seed of the sampling noise")
    device = "cpu (default) or cuda" if training else "cpu or cuda (default: the run's)"
    p.add_argument("--device", help=device)
    set_help = SET_HELP if training else SAMPLE_SET_HELP
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_metric_options(p: argparse.ArgumentParser) -> None:
    """--metric, --patch and --limit: how `evaluate` (and `history`) measure samples."""
    p.add_argument(
        "--metric",
        choices=["auto", "consistency", "creativity"],
        default="auto",
        help="consistency (colour pairings only) or creativity: memorization, novelty, mosaics "
        "(default: consistency on pairings, creativity otherwise)",
    )
    p.add_argument("--patch", type=int, help="creativity: mosaic patch side (default 3)")
    p.add_argument(
        "--limit", type=int, help="creativity: the first N samples of each seed (default 1000)"
    )


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mosaicdiff",
        description="Where creativity in diffusion models comes from: train score networks, "
        "sample them, measure consistency, and compare with closed-form score machines.",
    )
    parser.add_argument("--version", action="version", version=f"mosaicdiff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one architecture for one or more seeds")
    p.add_argument(
        "--out", required=True, type=out_path, help="run directory to create (or continue)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_config_options(p)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--name", default="default", help="samples subfolder name")
    add_config_options(p, training=False)

    p = sub.add_parser("evaluate", help="measure consistency or creativity of a run's samples")
    p.add_argument("run", help="run directory")
    p.add_argument("--name", default="default", help="samples subfolder name")
    add_metric_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    from mosaicdiff.experiments.reproduce import register as register_reproduce

    register_reproduce(sub)
    from mosaicdiff.experiments.sweep import register as register_sweep

    register_sweep(sub)
    from mosaicdiff.experiments.study import register as register_study

    register_study(sub)
    from mosaicdiff.experiments.history import register as register_history

    register_history(sub)
    try:
        from mosaicdiff.theory.cli import register as register_theory
    except ImportError:
        pass
    else:
        register_theory(sub)
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # a missing command names them all
    return parser


def cmd_train(args) -> int:
    from mosaicdiff.runs import RunDir, refuse_inside_run

    refuse_inside_run(check_out(args.out), run_itself=True)
    run = RunDir(args.out)
    base = run.read_config() if args.resume and run.exists() else None
    cfg = resolve_config(args, base)
    from mosaicdiff.data import load_dataset
    from mosaicdiff.models import build_model

    # The data read and the network built before anything is written, --dry-run included
    build_model(cfg.model, load_dataset(cfg.data).shape, cfg.diffusion.T, (0,))
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from mosaicdiff.training import train

    train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"trained {short(cfg.model.arch)} x{len(cfg.train.seeds)} -> {args.out}")
    return 0


def cmd_sample(args) -> int:
    from mosaicdiff.generate import draw_samples, save_preview
    from mosaicdiff.runs import RunDir, load_run

    run = RunDir(args.run)
    stored = run.read_config()
    run.samples_dir(args.name)  # a bad --name fails before anything runs
    cfg = sampling_config(args, stored)
    if args.dry_run:
        print(json.dumps(to_dict(cfg.sample), indent=2))
        return 0
    loaded = load_run(args.run, device=cfg.device)
    out = draw_samples(loaded, cfg.sample, args.name, progress=not args.no_progress)
    preview = save_preview(out, list(cfg.train.seeds))
    print(f"samples -> {out}; a look at them: {preview}")
    return 0


def sampling_config(args, stored, base=None):
    """The config that samples the run whose config is `stored`: the flags and --set laid over
    `base` (default `stored`), refused when they change more than sample.* and the device."""
    from argparse import Namespace

    from mosaicdiff.config_io import split_assignment

    free = ("sample", "device")  # all that sampling may change; the rest is the trained run
    sets = {item: split_assignment(item)[0] for item in args.set or []}
    outside = [k for k in sets.values() if k.split(".")[0] not in free]
    if outside:  # a bad value of a field sampling may set is named first, as itself
        ours = [item for item, key in sets.items() if key.split(".")[0] in free]
        resolve_config(Namespace(**{**vars(args), "set": ours}), base or stored)
    try:
        cfg = resolve_config(args, base or stored)
    except UserError:  # a field sample would refuse anyway is named as such, not its value
        if outside:
            raise UserError(
                f"{args.command} changes only sample.* and device, not the trained run's {outside}"
            ) from None
        raise
    trained = differences(
        {k: v for k, v in to_dict(stored).items() if k not in free},
        {k: v for k, v in to_dict(cfg).items() if k not in free},
    )
    check(
        not trained,
        f"{args.command} changes only sample.* and device, not the trained run's {trained}",
    )
    return cfg


def cmd_evaluate(args) -> int:
    from mosaicdiff.evaluate import CONSISTENCY_RESULTS, check_metric, evaluate_consistency
    from mosaicdiff.io import read_json
    from mosaicdiff.runs import RunDir, load_run_data

    cfg, dataset, epoch = load_run_data(args.run)  # the samples are measured, not the network
    samples = RunDir(args.run).samples_dir(args.name)
    check((samples / "sample.json").is_file(), f"{samples} has no samples; run sample first")
    drawn = read_json(samples / "sample.json").get("epoch", epoch)
    if drawn != epoch:
        print(f"note: these samples are of epoch {drawn}; the run is now at epoch {epoch}")
    metric = check_metric(args.metric, cfg.data.kind, args.patch, args.limit)
    if metric == "creativity":
        return _evaluate_creativity(args, cfg, dataset, samples)
    res = evaluate_consistency(samples, dataset.info["spec"], list(cfg.train.seeds))
    # a failure reason any seed has is shown for every seed, its 0.0% too (probe 62)
    seen = {k for p in res["per_seed"] for k, v in p["reasons"].items() if v or k == "consistent"}
    for p in res["per_seed"]:
        lo, hi = p["ci95"]  # over the runs, and at least the binomial one of their samples
        runs = f"{p['n']} run{'s' * (p['n'] != 1)}"
        ci = f"95% CI {100 * lo:.2f}-{100 * hi:.2f} over {runs}"
        print(f"seed {p['seed']}: consistency {100 * p['mean']:.2f}% ({ci})")
        total = sum(p["reasons"].values()) or 1
        shown = {k: v for k, v in p["reasons"].items() if k in seen}
        why = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in shown.items())
        print(f"  samples: {why}")
    print(f"results -> {samples / CONSISTENCY_RESULTS}")
    return 0


def _evaluate_creativity(args, cfg, dataset, samples) -> int:
    from mosaicdiff.evaluate import (
        CREATIVITY_RESULTS,
        creativity_line,
        creativity_options,
        evaluate_creativity_samples,
    )

    patch, limit = creativity_options(args.patch, args.limit, dataset.images)
    res = evaluate_creativity_samples(
        samples, dataset.images, list(cfg.train.seeds), patch, limit, not args.no_progress
    )
    for p in res["per_seed"]:
        print(creativity_line(p))
    print(f"results -> {samples / CREATIVITY_RESULTS}, figure -> {samples / 'nearest.png'}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a cancelled SLURM job), raised where Ctrl-C would raise KeyboardInterrupt,
    so that it stops a command the same way: worker processes stopped, no half-written file."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_interrupts():
    """Within the block, SIGTERM raises `Terminated` (unless a handler is set already)."""
    ours = threading.current_thread() is threading.main_thread()
    ours = ours and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def one_line_warnings():
    """Within the block, mosaicdiff's own warnings print as one line, as its errors do, not as
    Python's two (file:line: UserWarning: ..., then the source line that warned)."""
    plain = warnings.formatwarning

    def short(message, category, filename, lineno, line=None):
        if category is UserWarning and Path(filename).is_relative_to(PACKAGE):
            return f"mosaicdiff: warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    warnings.formatwarning = short
    try:
        yield
    finally:
        warnings.formatwarning = plain


def main(argv: list[str] | None = None) -> int:
    hold_freed_memory()  # for this process and the workers it starts
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed on one line
        return int(e.code or 0)
    handlers = {"train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate}
    try:
        with sigterm_interrupts(), one_line_warnings():
            handler = handlers.get(args.command) or args.handler
            return handler(args)
    except UserError as e:
        print(f"mosaicdiff: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mosaicdiff ... | head`: the reader left; stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:  # a path the user gave that cannot be used: a file where a folder goes
        where = f"{e.filename}: " if e.filename else ""
        print(f"mosaicdiff: error: {where}{e.strerror or e}; choose another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        resumes = args.command != "train" or args.resume  # train refuses a run it isn't told to
        again = "run" if resumes else "add --resume to"
        print(f"mosaicdiff: interrupted; {again} the same command to continue", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
