"""A sweep's results gathered from its run directories: OUT/table.csv, OUT/points.csv and
OUT/summary.png, for the sweep's metric (`Plan.metric`); for consistency also OUT/reasons.png,
how each point's samples fail.

table.csv has one row per grid point and training seed: the point's grid values, the metric's
columns, wall time and status. Consistency is the mean over sampling runs with its 95 %
interval (see evaluate.py); creativity is novelty (RMS to the nearest training image) and the
memorized and mosaic shares (metrics/creativity.py). Points that did not finish get one row
with their status (failed, CANCELLED, pending, ...) and the error.
points.csv has one row per finished point: the mean over its training seeds, for consistency
with a 95 % Student-t interval over seeds and the share of samples failing by each reason, for
creativity with each metric's standard deviation over seeds (and mosaic_ratio_seeds, the seeds
the mosaic ratio averages: it is undefined on a seed whose samples all copy).
"""

from __future__ import annotations

from mosaicdiff.io import atomic_write_csv, read_json
from mosaicdiff.metrics.consistency import REASONS

# Per metric: table.csv's columns of one seed's results.
COLUMNS = {
    "consistency": ("consistency_mean", "ci95_low", "ci95_high", "n_runs"),
    "creativity": ("novelty", "memorization_rate", "mosaic_rate", "mosaic_ratio", "n_samples"),
}
STATUS = ("wall_s", "status", "error")
# Per metric: summary.png's panels, (column, scale, axis label).
PANELS = {
    "consistency": (("consistency_mean", 100, "consistency (%)"),),
    "creativity": (
        ("novelty", 1, "novelty (RMS to nearest)"),
        ("memorization_rate", 100, "memorized (%)"),
        ("mosaic_rate", 100, "mosaics (%)"),
    ),
}


def seed_cells(metric: str, s: dict) -> dict:
    """table.csv's metric columns from one `per_seed` entry of a point's results."""
    if metric == "creativity":
        return {k: s[k] for k in COLUMNS[metric]}
    lo, hi = s["ci95"] if s.get("ci95") else (None, None)
    return {"consistency_mean": s["mean"], "ci95_low": lo, "ci95_high": hi, "n_runs": s["n"]}


def table_rows(plan, outcomes: dict[str, dict]) -> list[dict]:
    """Rows for every point of `plan` (see the module docstring), in grid order."""
    rows = []
    for p in plan.points:
        head = {"point": p.name, **{k: _cell(v) for k, v in p.values.items()}}
        if p.finished():
            record = read_json(p.done_path)
            wall = round(record["wall_s"], 2)
            done = {"wall_s": wall, "status": "done", "error": ""}
            for s in record["results"]["per_seed"]:
                rows.append({**head, "seed": s["seed"], **seed_cells(plan.metric, s), **done})
        else:
            outcome = outcomes.get(p.name, {"status": "pending"})
            rows.append(
                {
                    **head,
                    "seed": "",
                    **dict.fromkeys((*COLUMNS[plan.metric], *STATUS), ""),
                    "status": outcome["status"],
                    "error": outcome.get("error", ""),
                }
            )
    return rows


def point_rows(plan) -> list[dict]:
    """One row per finished point: the metric over its seeds (see the module docstring)."""
    rows = []
    for p in plan.points:
        if p.finished():
            res = read_json(p.done_path)["results"]
            over = _over_seeds(res) if plan.metric == "consistency" else _spread(res)
            rows.append({"point": p.name, **{k: _cell(v) for k, v in p.values.items()}, **over})
    return rows


def _over_seeds(res: dict) -> dict:
    """Consistency over a point's seeds, with its interval and the failure reasons' shares."""
    over = res["over_seeds"]
    lo, hi = over["ci95"] or (None, None)
    reasons = dict.fromkeys(REASONS, 0)  # every column, also for results written before one
    for s in res["per_seed"]:
        for k, v in s["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    total = sum(reasons.values())
    return {
        "n_seeds": over["n"],
        "consistency_mean": over["mean"],
        "ci95_seeds_low": lo,
        "ci95_seeds_high": hi,
        **{f"share_{k}": v / total for k, v in reasons.items()},
    }


def _spread(res: dict) -> dict:
    """Each creativity metric's mean and standard deviation over a point's seeds."""
    cells = {"n_seeds": len(res["per_seed"])}
    for key in COLUMNS["creativity"][:-1]:
        over = res["over_seeds"].get(key) or {}
        cells[f"{key}_mean"], cells[f"{key}_std"] = over.get("mean"), over.get("std")
    # The seeds the mosaic ratio averages: it is undefined on a seed whose samples all copy.
    cells["mosaic_ratio_seeds"] = (res["over_seeds"].get("mosaic_ratio") or {}).get("n")
    return cells


def write_outputs(plan, outcomes: dict[str, dict]) -> list[dict]:
    """Write OUT/table.csv, OUT/points.csv and OUT/summary.png; return table.csv's rows."""
    from mosaicdiff import plots

    rows = table_rows(plan, outcomes)
    columns = ["point", *plan.points[0].values, "seed", *COLUMNS[plan.metric], *STATUS]
    atomic_write_csv(plan.out / "table.csv", rows, columns)
    points = point_rows(plan)
    if points:
        columns = list(dict.fromkeys(k for r in points for k in r))
        atomic_write_csv(plan.out / "points.csv", points, columns)
    plots.save(summary_figure(rows, plan.metric), plan.out / "summary.png")
    if points and plan.metric == "consistency":
        plots.save(reasons_figure(points), plan.out / "reasons.png")
    return rows


def reasons_figure(points: list[dict]):
    """How each finished point's samples split into consistent and each kind of failure (its
    share_* columns of points.csv)."""
    from mosaicdiff import plots

    shares = [[r[f"share_{k}"] for k in REASONS] for r in points]
    return plots.failure_reasons([r["point"] for r in points], REASONS, shares)


def format_points(plan) -> str:
    """points.csv as aligned text lines for the terminal."""
    lines, rows = [], point_rows(plan)
    width = max((len(r["point"]) for r in rows), default=0)
    for r in rows:
        if plan.metric == "creativity":
            sd = r["novelty_std"]
            spread = f" +- {sd:.3f} over {r['n_seeds']} seeds" if sd is not None else ""
            text = (
                f"novelty {r['novelty_mean']:.3f}{spread}, "
                f"memorized {100 * r['memorization_rate_mean']:.1f}%, "
                f"mosaics {100 * r['mosaic_rate_mean']:.1f}%"
            )
        else:
            lo, hi = r["ci95_seeds_low"], r["ci95_seeds_high"]
            ci = (
                f"  (95% CI over {r['n_seeds']} seeds {100 * lo:.2f}-{100 * hi:.2f})"
                if lo is not None
                else ""
            )
            text = f"{100 * r['consistency_mean']:6.2f}%{ci}"
        lines.append(f"{r['point']:<{width}s} {text}")
    return "\n".join(lines)


def summary_figure(rows: list[dict], metric: str = "consistency"):
    """The metric per point and seed, a panel per number (consistency with its 95 % interval
    over runs); unfinished points marked x."""
    from mosaicdiff.plots import plt

    points = list(dict.fromkeys(r["point"] for r in rows))
    panels = PANELS[metric]
    side = max(3.5, 0.7 * len(points) + 1.5)  # a panel's width
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), 3.6), squeeze=False)
    for ax, (key, scale, label) in zip(axes[0], panels, strict=True):
        _panel(ax, rows, points, key, scale, label)
    interval = " (95 % CI over runs)" if metric == "consistency" else ""
    fig.suptitle(f"{metric} per point and seed{interval}; x: unfinished", fontsize=8)
    fig.tight_layout()
    return fig


def _panel(ax, rows: list[dict], points: list[str], key: str, scale: float, label: str) -> None:
    top, seen = 0.01 * scale, {}
    for r in rows:
        k = seen[r["point"]] = seen.get(r["point"], -1) + 1
        x = points.index(r["point"]) + 0.08 * k  # seeds of a point side by side
        if r["status"] != "done":
            ax.plot(x, 0, "x", color="grey")
            continue
        m = scale * r[key]
        if r.get("ci95_low") is not None:
            err = [[m - scale * r["ci95_low"]], [scale * r["ci95_high"] - m]]
            ax.errorbar(x, m, yerr=err, fmt="o", color="C0", capsize=3, alpha=0.8)
            top = max(top, scale * r["ci95_high"])
        else:
            ax.plot(x, m, "o", color="C0")
        top = max(top, m)
    ax.set_xticks(range(len(points)), points, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_ylim(0, 1.1 * top)
    ax.set_ylabel(label)


def _cell(value):
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
