"""`mosaicdiff sweep SPEC`: a grid of runs over any config fields, here or on a SLURM cluster.

A spec (YAML or TOML) holds a partial RunConfig (`base`), a `grid` mapping config keys to the
values to try, and an output folder (`out`). The grid is the Cartesian product of its lists;
each point is one run directory named by its overrides (`arch=attn__seeds=1`), trained,
sampled and evaluated by `run_point` exactly as `reproduce` does one model. The whole grid is
validated before anything runs, finished points are skipped, and the executor (`local`
processes or `slurm` job arrays through submitit) is the only thing that differs.

A point is configured as a new run is: from the defaults of its data kind
(`config.defaults_for`), then the base, --set and its grid values. Its samples are measured
by consistency on the colour pairings and by the creativity metrics on other data; one sweep
holds one of the two.

    OUT/sweep.json          the resolved plan: spec, one RunConfig per point
    OUT/points/NAME/        a run directory per point (runs.py) and point.json once finished
    OUT/table.csv           one row per point and training seed (sweep_table.py)
    OUT/points.csv          one row per finished point: the mean over its seeds
    OUT/summary.png         the metric per point and seed
    OUT/slurm/              submitit's scripts and logs, jobs.json (executor slurm)
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from mosaicdiff.config import (
    RunConfig,
    assign,
    check_once,
    custom_arch,
    differences,
    from_dict,
    matches,
    new_run_config,
    older_bias,
    read_mapping,
    split_assignment,
    stored_run,
    to_dict,
)
from mosaicdiff.errors import UserError, check, check_out
from mosaicdiff.io import atomic_write_json, read_json

SPEC_KEYS = ("base", "grid", "out")


@dataclass(frozen=True)
class Point:
    """One grid point: its overrides of the base config and the run directory they name."""

    name: str
    values: dict  # grid key -> value, in grid order
    cfg: RunConfig
    run_path: Path

    @property
    def done_path(self) -> Path:
        return self.run_path / "point.json"

    def finished(self) -> bool:
        """Whether `run_point` completed this point with this very config."""
        if not self.done_path.is_file():
            return False
        return _done_as_now(read_json(self.done_path), self.cfg)


@dataclass(frozen=True)
class Plan:
    spec: dict
    out: Path
    points: tuple[Point, ...]

    @property
    def metric(self) -> str:
        """What every point's samples are measured by: consistency or creativity."""
        from mosaicdiff.evaluate import metric_for

        return metric_for(self.points[0].cfg.data.kind)


def load_spec(path: str | Path) -> dict:
    """A sweep spec from a YAML (.yaml, .yml) or TOML (.toml) file, checked for unknown keys."""
    p = Path(path)
    check(p.suffix in (".yaml", ".yml", ".toml"), f"sweep spec {p.name!r} must be .yaml or .toml")
    return read_mapping(p, "sweep spec")


def plan_sweep(spec: dict, out: str | Path | None = None, sets: list[str] = ()) -> Plan:
    """Validate the whole grid and resolve one RunConfig per point, before anything runs.

    Args:
        spec: the parsed spec (`base`, `grid`, `out`).
        out: output folder; overrides `spec["out"]`.
        sets: extra `section.field=value` overrides of the base config.
    """
    from mosaicdiff.runs import refuse_inside_run

    unknown = sorted(set(spec) - set(SPEC_KEYS))
    check(not unknown, f"sweep spec: unknown key(s) {unknown}; valid: {list(SPEC_KEYS)}")
    base_part = spec.get("base") or {}
    check(isinstance(base_part, dict), "sweep spec: base must be a mapping of config sections")
    grid = spec.get("grid")
    check(isinstance(grid, dict) and grid, "sweep spec: grid must map config keys to value lists")
    for key, values in grid.items():
        check(isinstance(key, str), f"sweep grid: key {key!r} must name a field, like model.hidden")
        check(
            key == key.strip(),
            f"sweep grid: key {key!r} has spaces around it; write {key.strip()!r}",
        )
        check(
            isinstance(values, list) and values,
            f"sweep grid: {key} must be a non-empty list of values",
        )
    given_out, out = out, out or spec.get("out")
    check(
        isinstance(out, (str, Path)) and str(out).strip() != "",
        f"sweep spec: out={out!r} must name an output folder (out: in the spec, or --out)",
    )
    option = "--out" if given_out else "sweep spec: out"
    out = check_out(out, option=option)
    refuse_inside_run(out, option)
    from mosaicdiff.evaluate import metric_for
    from mosaicdiff.resolve import (
        anchor_paths,
        changed_keys,
        check_own_network,
        lay_over,
        refuse_unread,
    )

    both = sorted(check_once(list(sets)) & set(grid))
    check(not both, f"sweep: --set and the grid both set {both}; give each key in one place")

    def resolve(values: dict) -> RunConfig:
        """A new run's config (defaults of its data kind) <- base <- --set <- `values`."""
        assignments = [*sets, *(f"{k}={json.dumps(v)}" for k, v in values.items())]

        def layer(data: dict) -> dict:
            given = changed_keys(data, base_part) | {split_assignment(a)[0] for a in assignments}
            data = assign(lay_over(data, base_part), assignments)
            # a grid of cnn x model.depth would train the same cnn twice, under two names
            anchor_paths(given, data)
            refuse_unread(given, data)
            return data

        return new_run_config(layer)

    try:  # the base alone: a fault every point shares is named as the base's
        resolve({})
        base_fault = None
    except UserError as e:  # or the grid completes it (data.kind npz in base, data.path in grid)
        base_fault = str(e)
    labels = _labels(list(grid))
    points, names, metrics, faults = [], {}, {}, {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo, strict=True))
        name = "__".join(f"{labels[k]}={_slug(v)}" for k, v in values.items())
        try:
            cfg = resolve(values)
            check_own_network(cfg)
        except UserError as e:
            faults[name] = str(e)
            if base_fault is None or str(e) != base_fault:
                break  # this point's own
            continue
        check(name not in names, f"sweep grid: points {values} and {names.get(name)} share {name}")
        names[name] = values
        metrics.setdefault(metric_for(cfg.data.kind), name)
        points.append(Point(name, values, cfg, out / "points" / name))
    if faults:  # a point's own fault; else the base's, when no point escapes it
        own = [n for n, f in faults.items() if f != base_fault]
        if not own and not points:
            raise UserError(f"sweep base{' or --set' if sets else ''}: {base_fault}")
        name = own[0] if own else next(iter(faults))
        raise UserError(f"sweep grid point {name}: {faults[name]}")
    check(
        len(metrics) == 1,
        f"sweep grid: points {' and '.join(metrics.values())} are measured by "
        f"{' and '.join(metrics)}, which one table cannot hold; sweep the data kinds separately",
    )
    for p in points:
        cfg_path = p.run_path / "config.json"
        if not cfg_path.is_file():
            continue
        stored = stored_run(read_json(cfg_path))
        try:  # fields added since it was written read as their defaults
            stored = to_dict(from_dict(RunConfig, stored))
        except UserError:
            pass
        diffs = differences(stored, to_dict(p.cfg))
        check(
            not diffs,
            f"{p.run_path} holds a run with another config ({'; '.join(diffs[:3])})"
            f"{older_bias(diffs)}; use a new out folder or delete that point",
        )
    datasets = {}  # each distinct data config read once, for both checks
    _check_points_build(points, f"sweep base{' or --set' if sets else ''}", datasets)
    _check_inputs_unchanged(points, datasets)
    return Plan(spec, out, tuple(points))


def _dataset(datasets: dict, cfg: RunConfig):
    """The images `cfg.data` names, read once per distinct data config into `datasets`."""
    from mosaicdiff.data import load_dataset

    key = json.dumps(to_dict(cfg.data), sort_keys=True)
    if key not in datasets:
        datasets[key] = load_dataset(cfg.data)
    return datasets[key]


def _check_points_build(points: list[Point], base: str, datasets: dict) -> None:
    """Read each point's data and build its network as `train --dry-run` does, so that a value
    only the data or the network refuses (data.subset past the images, a missing data.path,
    model.patch not dividing the image) stops the sweep before anything runs, not every point
    in its worker. Each distinct data and network once, finished points left out; a fault
    every point has is named as the `base`'s."""
    from mosaicdiff.models import build_model

    built, faults = set(), {}
    for p in points:
        if p.finished():
            continue
        net = json.dumps([to_dict(p.cfg.model), to_dict(p.cfg.data), p.cfg.diffusion.T])
        try:
            shape = _dataset(datasets, p.cfg).shape
            if net not in built:
                build_model(p.cfg.model, shape, p.cfg.diffusion.T, (0,))
                built.add(net)
        except UserError as e:
            faults[p.name] = str(e)
    if faults:
        name, fault = next(iter(faults.items()))
        if len(faults) == len(points) and len(set(faults.values())) == 1 and len(points) > 1:
            raise UserError(f"{base}: {fault}")
        raise UserError(f"sweep grid point {name}: {fault}")


def _check_inputs_unchanged(points: list[Point], datasets: dict) -> None:
    """Refuse points trained (or finished) on other images or network code than their config
    gives now: a rewritten data.path or network file would otherwise leave the old points
    "finished" beside new ones in one table, as `sample` and `train --resume` refuse them."""
    from mosaicdiff.io import sidecar
    from mosaicdiff.runs import RunDir, check_fingerprints, fingerprints

    for p in points:
        found = RunDir(p.run_path).checkpoints()
        if not found:
            continue
        dataset = _dataset(datasets, p.cfg)
        try:
            check_fingerprints(read_json(sidecar(found[-1])), fingerprints(dataset, p.cfg), p.cfg)
        except UserError as e:
            raise UserError(f"sweep point {p.name}: {e} (or delete that point)") from None


def _done_as_now(record: dict, cfg: RunConfig) -> bool:
    """Whether a point.json `record` finished `cfg` and measured it as `evaluate` does today
    (else the point is measured again, from the samples it drew)."""
    from mosaicdiff.evaluate import measured_as_now

    results = record.get("results")
    return (
        matches(stored_run(record.get("config") or {}), cfg)
        and isinstance(results, dict)
        and measured_as_now(results)
    )


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
    if record and _done_as_now(record, from_dict(RunConfig, spec["config"])):
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
    record = {
        "name": spec["name"],
        "values": spec["values"],
        "config": spec["config"],
        "status": "done",
        "wall_s": time.perf_counter() - tick,
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


def _labels(keys: list[str]) -> dict[str, str]:
    """Short column labels: a key's last part, or the whole key where that part repeats."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _slug(value) -> str:
    if custom_arch(value):  # /home/me/nets.py:MLP -> nets.MLP
        where, _, name = value.rpartition(":")
        value = f"{Path(where).name.removesuffix('.py')}.{name}"
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text) or "empty"


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
