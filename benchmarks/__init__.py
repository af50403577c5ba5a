"""Benchmarks, runnable as modules: `python -m benchmarks.<name>`."""

from __future__ import annotations

import argparse

from mosaicdiff.cli import Parser
from mosaicdiff.config import DiffusionConfig
from mosaicdiff.models import PATCHNET_ARCHS as PAPER_ARCHS

T = DiffusionConfig().T  # the paper's schedule


def profiler_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The options the sampler profilers share: --archs, --batch and --steps."""
    p = Parser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", default=",".join(PAPER_ARCHS))
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=steps, help=f"DDPM steps timed (default {steps})")
    return p


def parse_profiler_args(p: argparse.ArgumentParser, argv, counts=("batch", "steps")):
    """Parse and check: (args, archs), or exit with a one-line error naming the bad value.
    `counts` are the options that must be at least 1."""
    args = p.parse_args(argv)
    archs = checked_archs(p, args.archs)
    check_counts(p, args, counts)
    if args.steps > T:
        p.error(f"--steps={args.steps} must be at most {T}, the schedule's T")
    return args, archs


def checked_archs(p: argparse.ArgumentParser, text: str) -> list[str]:
    """--archs as a list, or exit with a one-line error naming the bad value."""
    archs = [a.strip() for a in text.split(",") if a.strip()]
    if not archs or any(a not in PAPER_ARCHS for a in archs):
        p.error(f"--archs {text!r}: each must be one of {list(PAPER_ARCHS)}")
    return archs


def check_counts(p: argparse.ArgumentParser, args, counts) -> None:
    """Exit with a one-line error if an option in `counts` is below 1 (None: not given)."""
    for option in counts:
        value = getattr(args, option)
        if value is not None and value < 1:
            p.error(f"--{option}={value} must be at least 1")
