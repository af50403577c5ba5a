"""`mosaicdiff sweep SPEC`: a grid of runs over any config fields, here or on a SLURM cluster.

A spec (YAML or TOML) holds a partial RunConfig (`base`), a `grid` mapping config keys to the
values to try, and an output folder (`out`). The grid is the Cartesian product of its lists;
each point is one run directory named by its overrides (`arch=attn__seeds=1`), trained,
sampled and evaluated by `run_point` exactly as `reproduce` does one model. The whole grid is
validated before anything runs (`sweep_plan.py`), finished points are skipped, and the
executor (`local` processes or `slurm` job arrays through submitit, `sweep_executors.py`) is
the only thing that differs. Its samples are measured by consistency on the colour pairings
and by the creativity metrics on other data; one sweep holds one of the two.

    OUT/sweep.json          the resolved plan: spec, one RunConfig per point
    OUT/points/NAME/        a run directory per point (runs.py) and point.json once finished
    OUT/table.csv           one row per point and training seed (sweep_table.py)
    OUT/points.csv          one row per finished point: the mean over its seeds
    OUT/summary.png         the metric per point and seed
    OUT/slurm/              submitit's scripts and logs, jobs.json (executor slurm)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from mosaicdiff.config import RunConfig, stored_run
from mosaicdiff.config_io import from_dict, matches, to_dict
from mosaicdiff.errors import UserError, check
from mosaicdiff.experiments.sweep_plan import Plan, Point, done_as_now, load_spec, plan_sweep
from mosaicdiff.io import atomic_write_json, read_json


def point_spec(p: Point, threads: int | None, cache_root: Path) -> dict:
    """What a worker needs to run `p`, as plain (picklable, JSON-able) data."""
    return {
        "name": p.name,
        "values": p.values,
        "config": to_dict(p.cfg),
        "run_path": str(p.run_path.resolve()),
        "threads": threads,
        "inductor_cache": str(cache_root.resolve()),
    }


def run_point(spec: dict) -> dict:
    """Train, sample and evaluate one grid point; the one function every executor calls.

    Skips what is finished (see `reproduce.train_stage`, `sample_stage`) and writes
    RUN/point.json last, so a point counts as done only once it is complete.

    Args:
        spec: from `point_spec`: name, values, config (to_dict), run_path, threads (torch
            intra-op threads, None leaves the default), inductor_cache (root of this process's
            own TORCHINDUCTOR_CACHE_DIR).

    Returns:
        The point.json record: name, values, config, status, wall_s, results (evaluate.py).
    """
    done = Path(spec["run_path"]) / "point.json"
    record = read_json(done) if done.is_file() else None
    if record and done_as_now(record, from_dict(RunConfig, spec["config"])):
        return record
    if spec.get("inductor_cache"):
        own = f"{socket.gethostname()}-{os.getpid()}"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(spec["inductor_cache"]) / own)
    import torch

    torch._dynamo.reset()  # a worker runs many points: start each without the last's graphs
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from mosaicdiff.experiments.reproduce import sample_stage, train_stage

    cfg = from_dict(RunConfig, spec["config"])
    tick = time.perf_counter()
    train_stage(cfg, Path(spec["run_path"]), progress=False)
    results = sample_stage(cfg, Path(spec["run_path"]), progress=False)
    wall = time.perf_counter() - tick
    if record and matches(stored_run(record.get("config") or {}), cfg) and "wall_s" in record:
        wall = record["wall_s"]  # only measured again (probe 64): the work it timed was done then
    record = {
        "name": spec["name"],
        "values": spec["values"],
        "config": spec["config"],
        "status": "done",
        "wall_s": wall,
        "results": results,
    }
    atomic_write_json(done, record)
    return record


# SLURM states a rerun as it was would end in again, and the option that would help.
WANTS_MORE = {"OUT_OF_MEMORY": "--mem", "TIMEOUT": "--time"}


def sweep(plan: Plan, executor: str = "local", jobs: int | None = None, slurm=None, log=print):
    """Run every unfinished point of `plan`, then write the table and the figure.

    Args:
        plan: from `plan_sweep`.
        executor: "local" (processes on this machine) or "slurm" (submitit job arrays).
        jobs: local only: parallel processes (default: the cores, at most the points).
        slurm: `sweep_executors.SlurmOptions` for executor slurm.
        log: where progress lines go.

    Returns:
        {point name: {"status": ..., "error": ...}} for every point.
    """
    from mosaicdiff.experiments import sweep_executors, sweep_table

    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        plan.out / "sweep.json",
        {"spec": plan.spec, "points": {p.name: to_dict(p.cfg) for p in plan.points}},
    )
    outcomes = {p.name: {"status": "done"} for p in plan.points if p.finished()}
    todo = [p for p in plan.points if p.name not in outcomes]
    n = len(plan.points)
    log(f"sweep: {n} point{'s' * (n != 1)}, {len(outcomes)} finished, {len(todo)} to run")
    if note := other_folders(plan):
        log(note)
    if todo and executor == "local":
        n = max(1, min(jobs or _cores(), len(todo)))
        specs = [point_spec(p, 1 if n > 1 else None, plan.out / ".inductor") for p in todo]
        try:
            outcomes.update(sweep_executors.run_local(specs, n, log))
        finally:  # Ctrl-C included (probe 55: they stayed, and a later call had none to run)
            # The workers' compile caches (OUT/.inductor/HOST-PID), none of them reused by a
            # later process: the workers have all ended. SLURM jobs may outlive this process:
            # theirs stay.
            shutil.rmtree(plan.out / ".inductor", ignore_errors=True)
    elif todo and executor == "slurm":
        threads = slurm.cpus_per_task
        specs = [point_spec(p, threads, plan.out / ".inductor") for p in todo]
        outcomes.update(sweep_executors.run_slurm(specs, plan.out / "slurm", slurm, log))
    elif todo:
        raise UserError(f"--executor {executor!r} is not one of ['local', 'slurm']")
    sweep_table.write_outputs(plan, outcomes)
    return outcomes


def other_folders(plan: Plan) -> str | None:
    """A line naming the folders in OUT/points that are not points of `plan` (left by an
    earlier grid into the same out: kept, but out of this sweep's tables), or None."""
    points = plan.out / "points"
    others = sorted(
        {d.name for d in points.glob("*") if d.is_dir()} - {p.name for p in plan.points}
    )
    if not others:
        return None
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    return (
        f"sweep: {len(others)} folder(s) in {points} are not points of this grid and stay out "
        f"of its tables: {', '.join(others[:3])}{more}"
    )


def _cores() -> int:
    """Cores this process may use (its affinity mask, which containers and SLURM narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def register(sub) -> None:
    """Add `mosaicdiff sweep` to the CLI's subparsers."""
    from mosaicdiff.cli import out_path

    p = sub.add_parser(
        "sweep",
        help="run a grid of configs (locally or on SLURM) and gather one table",
        description="Run every point of a sweep spec (YAML/TOML: base, grid, out) and gather "
        "OUT/table.csv and OUT/summary.png. Finished points are skipped: run the same command "
        "again to finish failed or cancelled ones.",
    )
    p.add_argument("spec", help="sweep spec, .yaml or .toml (see examples/sweep.yaml)")
    p.add_argument("--out", type=out_path, help="output folder (default: the spec's out)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"])
    p.add_argument("--jobs", type=int, help="local: parallel processes (default: the cores)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the base")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    g = p.add_argument_group("slurm (with --executor slurm)")
    for flag, kind, default, text in SLURM_FLAGS:
        g.add_argument(flag, type=kind, default=default, help=text)
    g.add_argument("--slurm-arg", action="append", metavar="KEY=VALUE", help="other sbatch option")
    p.set_defaults(handler=cmd_sweep)


SLURM_FLAGS = (  # flag, type, default, help: the options only --executor slurm reads
    ("--partition", str, None, "SLURM partition"),
    ("--time", int, 60, "minutes per point (default 60)"),
    ("--cpus-per-task", int, 1, "cores per point (default 1)"),
    ("--mem", str, None, "memory per point, e.g. 4G"),
    ("--gpus-per-node", int, 0, "GPUs per point (default 0)"),
    ("--array-parallelism", int, 32, "points at once (32)"),
    ("--retries", int, 1, "resubmit preempted points (1)"),
)


def cmd_sweep(args) -> int:
    from mosaicdiff.experiments.sweep_executors import SlurmOptions, import_submitit

    plan = plan_sweep(load_spec(args.spec), args.out, args.set or [])
    check(args.jobs is None or args.jobs >= 1, f"--jobs={args.jobs} must be at least 1")
    extra = dict(a.split("=", 1) for a in args.slurm_arg or [] if "=" in a)
    check(len(extra) == len(args.slurm_arg or []), "--slurm-arg must look like KEY=VALUE")
    slurm = SlurmOptions(
        args.partition,
        args.time,
        args.cpus_per_task,
        args.mem,
        args.gpus_per_node,
        args.array_parallelism,
        args.retries,
        extra,
    )
    if args.executor == "slurm":
        import_submitit()  # before anything is written
    else:  # local points run here: refuse a GPU this machine lacks (a cluster's nodes may not)
        given = [f for f, _, d, _ in SLURM_FLAGS if getattr(args, f[2:].replace("-", "_")) != d]
        given += ["--slurm-arg"] * bool(args.slurm_arg)
        check(not given, f"{', '.join(given)}: read by --executor slurm only, not local")
        gpu = next((p for p in plan.points if p.cfg.device.startswith("cuda")), None)
        if gpu is not None:
            import torch

            check(
                torch.cuda.is_available(),
                f"sweep grid point {gpu.name}: device={gpu.cfg.device!r} but no CUDA GPU is "
                "visible here; use device=cpu, or --executor slurm",
            )
    if args.dry_run:
        for p in plan.points:
            print(f"{p.name}: {' '.join(f'{k}={json.dumps(v)}' for k, v in p.values.items())}")
        if note := other_folders(plan):
            print(note)
        return 0
    tick = time.perf_counter()
    outcomes = sweep(plan, args.executor, args.jobs, slurm)
    failed = sorted(n for n, o in outcomes.items() if o["status"] == "failed")
    stopped = sorted(n for n, o in outcomes.items() if o["status"] not in ("done", "failed"))
    from mosaicdiff.experiments.sweep_table import format_points

    print(format_points(plan))
    print(f"table -> {plan.out / 'table.csv'}  ({time.perf_counter() - tick:.0f} s)")
    if failed:  # a rerun alone fails them the same way
        print(
            f"{len(failed)} point(s) failed ({', '.join(failed)}): each one's error is above and "
            "in table.csv; fix its cause and run the same command again (finished points stay)"
        )
    if stopped:  # cancelled, timed out, preempted: a rerun goes on
        states = {outcomes[n]["status"] for n in stopped}
        more = [f"{s}: with more {flag}" for s, flag in WANTS_MORE.items() if s in states]
        again = "run the same command again" + (f" ({'; '.join(more)})" if more else "")
        print(f"{len(stopped)} point(s) unfinished ({', '.join(stopped)}); {again}")
    return 1 if failed or stopped else 0
