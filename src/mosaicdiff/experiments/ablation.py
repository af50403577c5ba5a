"""`mosaicdiff reproduce --ablation`: which unstated choice moves a model's consistency.

For every model whose consistency lands more than `GAP` points from the paper's, change one
choice at a time against the model's own reproduce run (the reference) and measure again at the
same scale: the time input (none instead of sinusoidal), the nonlinearity (ReLU instead of SiLU),
the quadrant layout (rows instead of columns) and the training length (x4 epochs). Each
(model, change) is a sweep point (`sweep.py`), so the points run in parallel processes, are
skipped once finished and resume when interrupted:

    OUT/ablation/points/ARCH__CHANGE/   a run directory per point
    OUT/ablation/table.csv, points.csv  per seed and per point (sweep_table.py)
"""

from __future__ import annotations

from pathlib import Path

from mosaicdiff.config import RunConfig
from mosaicdiff.config_io import override

GAP = 5.0  # points of consistency from the paper's number that call for an ablation
EPOCH_FACTOR = 4
CHANGES = {  # label -> (config key, the changed value given the model's config)
    "time_embedding=none": ("model.time_embedding", lambda c: "none"),
    "nonlinearity=relu": ("model.nonlinearity", lambda c: "relu"),
    "layout=rows": ("data.layout", lambda c: "rows"),
    f"epochs=x{EPOCH_FACTOR}": ("train.epochs", lambda c: EPOCH_FACTOR * c.train.epochs),
}
_CURRENT = {  # label -> the reference's value, to skip a change that changes nothing
    "time_embedding=none": lambda c: c.model.time_embedding,
    "nonlinearity=relu": lambda c: c.model.nonlinearity,
    "layout=rows": lambda c: c.data.layout,
}


def models_to_ablate(rows: list[dict]) -> list[str]:
    """The models of the report's table rows whose consistency is more than GAP points off."""
    return [
        r["model"]
        for r in rows
        if r["model"] not in ("random", "random_mc")
        and r["paper"] is not None
        and abs(r["ours"] - r["paper"]) > GAP
    ]


def ablation_plan(configs: dict[str, RunConfig], models: list[str], out: Path):
    """A sweep `Plan` of one point per (model, change) under OUT/ablation."""
    from mosaicdiff.experiments.sweep_plan import Plan, Point

    folder = Path(out) / "ablation"
    points = []
    for arch in models:
        cfg = configs[arch]
        for label, (key, value) in CHANGES.items():
            v = value(cfg)
            if label in _CURRENT and _CURRENT[label](cfg) == v:
                continue
            name = f"{arch}__{label}"
            changed = override(cfg, [f"{key}={v}"])
            points.append(
                Point(name, {"model": arch, "change": label}, changed, folder / "points" / name)
            )
    spec = {"ablation": {"models": models, "changes": list(CHANGES)}}
    return Plan(spec, folder, tuple(points))


def run_ablation(configs, models, out, jobs: int | None = None, log=print) -> list[dict]:
    """Run every unfinished ablation point; return points.csv's rows (see sweep_table)."""
    from mosaicdiff.experiments.sweep import sweep
    from mosaicdiff.experiments.sweep_table import point_rows

    plan = ablation_plan(configs, models, out)
    if not plan.points:
        return []
    sweep(plan, "local", jobs, log=log)
    return point_rows(plan)


def ablation_markdown(rows: list[dict], table_rows: list[dict]) -> str:
    """The report's ablation section: each change beside the model's reference run.

    `rows`: points.csv rows (consistency as a fraction); `table_rows`: the report's table
    (percent)."""
    if not rows:
        return ""
    ref = {r["model"]: r for r in table_rows}
    labels = list(CHANGES)
    lines = [
        "## Ablation of unstated choices\n",
        f"Every model more than {GAP:.0f} points from the paper's number, with one choice changed "
        "at a time against its run above (same seeds, scale and sampler). Mean consistency (%) "
        "over training seeds, with the change from the reference in brackets. "
        f"`epochs=x{EPOCH_FACTOR}` is not a choice the paper leaves open (it trains 5,000 "
        "epochs); it shows how much of the gap is training length. `layout=rows` is a negative "
        "control: each quadrant is one token read and written by linear maps with i.i.d. "
        "initial weights, so moving the key and value from columns to rows only relabels their "
        "inputs and outputs and leaves the distribution of outcomes unchanged. Its deltas are "
        "seed-to-seed noise, and a change no larger than them is not evidence.\n",
        "| model | paper | reference | " + " | ".join(f"`{c}`" for c in labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    by = {(r["model"], r["change"]): r for r in rows}
    for arch in dict.fromkeys(r["model"] for r in rows):
        base = ref[arch]["ours"]
        cells = []
        for c in labels:
            r = by.get((arch, c))
            if r is None:
                cells.append("(same)")
                continue
            m = 100 * r["consistency_mean"]
            cells.append(f"{m:.2f} ({m - base:+.2f})")
        lines.append(
            f"| {arch} | {ref[arch]['paper']:.2f} | {base:.2f} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for arch in dict.fromkeys(r["model"] for r in rows):
        base, paper = ref[arch]["ours"], ref[arch]["paper"]
        moves = {
            c: 100 * by[(arch, c)]["consistency_mean"] - base for c in labels if (arch, c) in by
        }
        choice = {c: d for c, d in moves.items() if not c.startswith("epochs")}
        best = max(choice, key=lambda c: abs(choice[c]))
        toward = "toward" if abs(base + choice[best] - paper) < abs(base - paper) else "away from"
        lines.append(
            f"- **{arch}**: of the unstated choices, `{best}` moves consistency most "
            f"({choice[best]:+.2f} points, {toward} the paper's {paper:.2f})"
            + (
                f"; {EPOCH_FACTOR}x the epochs moves it {moves[labels[-1]]:+.2f} points."
                if labels[-1] in moves
                else "."
            )
        )
    return "\n".join(lines) + "\n"
