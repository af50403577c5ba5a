"""A sweep's plan: its spec read, its grid validated and resolved into one run per point.

A spec (YAML or TOML) holds a partial RunConfig (`base`), a `grid` mapping config keys to the
values to try, and an output folder (`out`). The grid is the Cartesian product of its lists;
each point is one run directory named by its overrides (`arch=attn__seeds=1`). The whole grid
is checked here, before anything runs (sweep.py runs it): every point's config, data and
network, and any run already in a point's folder.

A point is configured as a new run is: from the defaults of its data kind
(`config.defaults_for`), then the base, --set and its grid values.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mosaicdiff.config import RunConfig, custom_arch, new_run_config, older_defaults, stored_run
from mosaicdiff.config_io import (
    assign,
    check_once,
    differences,
    from_dict,
    matches,
    read_mapping,
    split_assignment,
    to_dict,
)
from mosaicdiff.errors import UserError, check, check_out
from mosaicdiff.io import read_json

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
        return done_as_now(read_json(self.done_path), self.cfg)


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
            f"{older_defaults(diffs)}; use a new out folder or delete that point",
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


def done_as_now(record: dict, cfg: RunConfig) -> bool:
    """Whether a point.json `record` finished `cfg` and measured it as `evaluate` does today
    (else the point is measured again, from the samples it drew)."""
    from mosaicdiff.evaluate import measured_as_now

    results = record.get("results")
    return (
        matches(stored_run(record.get("config") or {}), cfg)
        and isinstance(results, dict)
        and measured_as_now(results)
    )


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
