"""Fault injection: run a command, SIGKILL it at random moments, re-run it until it finishes.

A command survives if, re-run after every kill, it finishes with the same outputs as a run that
was never killed; `compare_outputs` checks that for every kind of file mosaicdiff writes.
`SCENARIOS` are the three commands a night run is made of (train, sample, reproduce), and
`run_scenario` runs one uninterrupted and once under kills, then compares. The fault tests run
them small with 5 kills; `scripts/fault_injection.py` runs them longer with as many as asked.

Where the kills land: after each start we wait until the output folder changes (the attempt
has made progress, so runs cannot loop forever without finishing), then sleep a random time
and kill. Some kills instead wait until a temporary file of an atomic write exists (widened by
MOSAICDIFF_TEST_WRITE_DELAY), so they land inside a write.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mosaicdiff.io import load_npz, load_tensors


@dataclass
class KillLog:
    kills: int = 0
    in_write: int = 0
    attempts: int = 0


def _snapshot(out: Path) -> frozenset:
    if not out.is_dir():
        return frozenset()
    found = set()
    # os.walk skips a folder removed while it looks (rglob raised: the scratch folder by which
    # --out is checked lives for a moment only)
    for folder, _, names in os.walk(out):
        for name in names:
            p = Path(folder, name)
            try:
                if not name.endswith(".tmp") and p.is_file():
                    st = p.stat()
                    found.add((str(p), st.st_size, st.st_mtime_ns))
            except FileNotFoundError:  # renamed or removed while we looked
                pass
    return frozenset(found)


def _writing(out: Path, pattern: str) -> bool:
    try:
        return out.is_dir() and any(True for _ in out.glob(pattern))
    except FileNotFoundError:
        return False


def _wait(proc, until, deadline: float) -> bool:
    while time.time() < deadline and proc.poll() is None:
        if until():
            return True
        time.sleep(0.005)
    return False


def kill_until_done(
    argv: list[str],
    out: Path,
    *,
    resume_argv: list[str] | None = None,
    kills: int = 5,
    in_write: int = 1,
    write_glob: str = "**/.*.tmp",
    delay: tuple[float, float] = (0.0, 0.5),
    seed: int = 0,
    env: dict | None = None,
    max_attempts: int = 200,
    timeout: float = 600,
) -> KillLog:
    """Run `argv` (then `resume_argv`, default `argv`) until it exits 0, killing it `kills`
    times first, `in_write` of them while a file matching `write_glob` under `out` exists."""
    rng = random.Random(seed)
    env = {**os.environ, **(env or {})}
    log = KillLog()
    out = Path(out)
    while log.attempts < max_attempts:
        cmd = argv if log.attempts == 0 else (resume_argv or argv)
        log.attempts += 1
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + timeout
        if log.kills >= kills and log.in_write >= in_write:
            if proc.wait(timeout=timeout) != 0:
                raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
            return log
        # Spread the in-write kills: the first one waits for a kill of the ordinary kind.
        aim_write = log.in_write < in_write and (log.kills >= 1 or kills == 0)
        if aim_write:
            landed = _wait(proc, lambda: _writing(out, write_glob), deadline)
        else:
            before = _snapshot(out)
            _wait(proc, lambda before=before: _snapshot(out) != before, deadline)
            time.sleep(rng.uniform(*delay))
            landed = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            log.kills += 1
            log.in_write += landed
        elif proc.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
        else:
            # Finished before the kill: it must have been the last piece of work.
            raise RuntimeError(
                f"{cmd} finished after {log.kills} kills ({log.in_write} in a write); "
                "give it more work or fewer kills"
            )
    raise RuntimeError(f"{argv} did not finish in {max_attempts} attempts")


def mosaicdiff_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mosaicdiff", *args]


# Fields that record when or how fast something ran, not what it computed.
_TIMING_KEYS = {"model_steps_per_s", "timings", "seconds", "wall_s"}


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in _TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _same_file(a: Path, b: Path) -> bool:
    if a.name.endswith(".safetensors"):
        (ta, ma), (tb, mb) = load_tensors(a), load_tensors(b)
        return ma == mb and ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)
    if a.suffix == ".npz":
        za, zb = load_npz(a), load_npz(b)
        return za.keys() == zb.keys() and all(np.array_equal(za[k], zb[k]) for k in za)
    if a.suffix == ".json":
        return _strip_timing(json.loads(a.read_text())) == _strip_timing(json.loads(b.read_text()))
    if a.suffix == ".jsonl":
        rows = [
            [_strip_timing(json.loads(line)) for line in p.read_text().splitlines()] for p in (a, b)
        ]
        return rows[0] == rows[1]
    return True  # figures and reports embed timings; their numbers come from the files above


def compare_outputs(ref: Path, got: Path) -> tuple[int, int, list[str]]:
    """Compare every result file under `ref` with its twin under `got`.

    Returns (files compared, bytes lost, differing paths): bytes lost is the size of the
    reference files that are missing or differ in what they hold (timings aside).
    """
    compared, lost, bad = 0, 0, []
    for a in sorted(ref.rglob("*")):
        if not a.is_file() or a.name.endswith(".tmp"):
            continue
        if a.suffix not in {".safetensors", ".npz", ".json", ".jsonl"}:
            continue
        rel = a.relative_to(ref)
        b = got / rel
        compared += 1
        if not b.is_file() or not _same_file(a, b):
            lost += a.stat().st_size
            bad.append(str(rel))
    return compared, lost, bad


# Widen each atomic write so a kill can land inside one; compile nothing (startup time).
FAULT_ENV = {"MOSAICDIFF_TEST_WRITE_DELAY": "0.3", "MOSAICDIFF_COMPILE": "0"}


@dataclass
class Scenario:
    """A command under test. `args(out, scale)` builds its arguments for output folder `out`;
    `resume` adds what a re-run needs; `write_glob` is where a kill in a write is aimed;
    `compared` the sub-folder whose results must match; `prepare` builds its input."""

    args: Callable[[Path, int], list[str]]
    write_glob: str
    compared: str = ""
    resume: list[str] = field(default_factory=list)
    prepare: Callable[[Path, int], None] | None = None
    finish: list[str] = field(default_factory=list)  # a command run after, e.g. evaluate


def _train_args(out: Path, scale: int) -> list[str]:
    return [
        "train", "--out", str(out), "--epochs", str(20 * scale), "--seeds", "2",
        "--set", "data.n_images=128", "--set", "train.checkpoint_every=1", "--no-progress",
    ]  # fmt: skip


def _sample_args(out: Path, scale: int) -> list[str]:
    # DDIM with eta=1 draws new noise at every step as DDPM does, in 100 steps instead of 1,000:
    # a resumed chunk must still remake the noise of its seed and sample indices exactly.
    return [
        "sample", str(out), "--runs", str(4 * scale), "--per-run", "24",
        "--set", "sample.chunk_size=8", "--set", "sample.sampler=ddim",
        "--set", "sample.steps=100", "--set", "sample.eta=1", "--no-progress",
    ]  # fmt: skip


def _prepare_sample(out: Path, scale: int) -> None:
    """A trained run to sample from (the same one for the killed and the reference run)."""
    src = out.parent / "trained"
    if not src.is_dir():
        argv = _train_args(src, 1)
        argv[argv.index("--epochs") + 1] = "2"
        subprocess.run(mosaicdiff_cmd(*argv), check=True, capture_output=True)
    shutil.copytree(src, out)


def _reproduce_args(out: Path, scale: int) -> list[str]:
    return [
        "reproduce", "--out", str(out), "--models", "cnn,attn", "--no-theory",
        "--epochs", str(3 * scale), "--seeds", "2", "--set", "data.n_images=128",
        "--set", "train.checkpoint_every=1", "--sampler", "ddim", "--steps", "20",
        "--runs", str(2 * scale), "--per-run", "32", "--set", "sample.chunk_size=16",
        "--no-progress",
    ]  # fmt: skip


SCENARIOS = {
    "train": Scenario(
        _train_args, "checkpoints/.*.tmp", "checkpoints", resume=["--resume"]
    ),  # the kill in a write lands in a checkpoint write
    "sample": Scenario(
        _sample_args,
        "samples/default/.*.tmp",
        "samples",
        prepare=_prepare_sample,
        finish=["evaluate"],
    ),
    "reproduce": Scenario(_reproduce_args, "**/.*.tmp"),
}


def run_scenario(
    name: str, root: Path, kills: int = 5, scale: int = 1, seed: int = 0, delay=(0.0, 0.8)
) -> dict:
    """Run scenario `name` under ROOT/ref uninterrupted and under ROOT/killed with `kills`
    SIGKILLs (one inside a write); compare their results. Returns what happened."""
    sc = SCENARIOS[name]
    root = Path(root)
    tick = time.perf_counter()
    logs = {}
    for kind, n in (("ref", 0), ("killed", kills)):
        out = root / kind
        if sc.prepare:
            sc.prepare(out, scale)
        argv = mosaicdiff_cmd(*sc.args(out, scale))
        logs[kind] = kill_until_done(
            argv,
            out,
            resume_argv=argv + sc.resume,
            kills=n,
            in_write=min(n, 1),
            write_glob=sc.write_glob,
            delay=delay,
            seed=seed,
            env=FAULT_ENV if n else None,
        )
        if sc.finish:
            run = mosaicdiff_cmd(*sc.finish, str(out))
            subprocess.run(run, check=True, capture_output=True)
    compared, lost, bad = compare_outputs(root / "ref" / sc.compared, root / "killed" / sc.compared)
    log = logs["killed"]
    return {
        "scenario": name,
        "kills": log.kills,
        "in_write": log.in_write,
        "attempts": log.attempts,
        "files_compared": compared,
        "bytes_lost": lost,
        "differing": bad,
        "leftover_tmp": [str(p) for p in (root / "killed").rglob("*.tmp")],
        "seconds": time.perf_counter() - tick,
    }
