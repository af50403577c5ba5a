"""A sweep's results gathered from its run directories: OUT/table.csv, OUT/points.csv and
OUT/summary.png.

table.csv has one row per grid point and training seed: the point's grid values, consistency
over sampling runs (mean and 95 % interval, see evaluate.py), wall time and status. Points that
did not finish get one row with their status (failed, CANCELLED, pending, ...) and the error.
points.csv has one row per finished point: the mean over its training seeds with a 95 %
Student-t interval over seeds, and the share of samples failing by each reason.
"""

from __future__ import annotations

import csv
import io

from mosaicdiff.io import atomic_write_bytes, atomic_write_text, read_json

FIELDS = ("consistency_mean", "ci95_low", "ci95_high", "n_runs", "wall_s", "status", "error")


def table_rows(plan, outcomes: dict[str, dict]) -> list[dict]:
    """Rows for every point of `plan` (see the module docstring), in grid order."""
    rows = []
    for p in plan.points:
        head = {"point": p.name, **{k: _cell(v) for k, v in p.values.items()}}
        if p.finished():
            record = read_json(p.done_path)
            for s in record["results"]["per_seed"]:
                lo, hi = s["ci95"] if s.get("ci95") else (None, None)
                rows.append(
                    {
                        **head,
                        "seed": s["seed"],
                        "consistency_mean": s["mean"],
                        "ci95_low": lo,
                        "ci95_high": hi,
                        "n_runs": s["n"],
                        "wall_s": round(record["wall_s"], 2),
                        "status": "done",
                        "error": "",
                    }
                )
        else:
            outcome = outcomes.get(p.name, {"status": "pending"})
            rows.append(
                {
                    **head,
                    "seed": "",
                    **dict.fromkeys(FIELDS, ""),
                    "status": outcome["status"],
                    "error": outcome.get("error", ""),
                }
            )
    return rows


def point_rows(plan) -> list[dict]:
    """One row per finished point: consistency over its seeds and its failure reasons."""
    rows = []
    for p in plan.points:
        if not p.finished():
            continue
        res = read_json(p.done_path)["results"]
        over = res["over_seeds"]
        lo, hi = over["ci95"] or (None, None)
        reasons: dict[str, int] = {}
        for s in res["per_seed"]:
            for k, v in s["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
        total = sum(reasons.values())
        rows.append(
            {
                "point": p.name,
                **{k: _cell(v) for k, v in p.values.items()},
                "n_seeds": over["n"],
                "consistency_mean": over["mean"],
                "ci95_seeds_low": lo,
                "ci95_seeds_high": hi,
                **{f"share_{k}": v / total for k, v in reasons.items()},
            }
        )
    return rows


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(plan, outcomes: dict[str, dict]) -> list[dict]:
    """Write OUT/table.csv, OUT/points.csv and OUT/summary.png; return table.csv's rows."""
    rows = table_rows(plan, outcomes)
    atomic_write_text(
        plan.out / "table.csv", _csv(rows, ["point", *plan.points[0].values, "seed", *FIELDS])
    )
    points = point_rows(plan)
    if points:
        columns = list(dict.fromkeys(k for r in points for k in r))
        atomic_write_text(plan.out / "points.csv", _csv(points, columns))
    atomic_write_bytes(plan.out / "summary.png", summary_png(rows))
    return rows


def format_points(plan) -> str:
    """points.csv as aligned text lines for the terminal (consistency in %)."""
    lines, rows = [], point_rows(plan)
    width = max((len(r["point"]) for r in rows), default=0)
    for r in rows:
        lo, hi = r["ci95_seeds_low"], r["ci95_seeds_high"]
        ci = f"  (95% CI over {r['n_seeds']} seeds {100 * lo:.2f}-{100 * hi:.2f})" if lo else ""
        lines.append(f"{r['point']:<{width}s} {100 * r['consistency_mean']:6.2f}%{ci}")
    return "\n".join(lines)


def summary_png(rows: list[dict]) -> bytes:
    """Consistency (%) per point and seed with its 95 % interval; unfinished points marked x."""
    from mosaicdiff.plots import plt

    points = list(dict.fromkeys(r["point"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(points) + 2), 3.6))
    top, seen = 1.0, {}
    for r in rows:
        k = seen[r["point"]] = seen.get(r["point"], -1) + 1
        x = points.index(r["point"]) + 0.08 * k  # seeds of a point side by side
        if r["status"] != "done":
            ax.plot(x, 0, "x", color="grey")
            continue
        m = 100 * r["consistency_mean"]
        if r["ci95_low"] is not None:
            err = [[m - 100 * r["ci95_low"]], [100 * r["ci95_high"] - m]]
            ax.errorbar(x, m, yerr=err, fmt="o", color="C0", capsize=3, alpha=0.8)
            top = max(top, 100 * r["ci95_high"])
        else:
            ax.plot(x, m, "o", color="C0")
        top = max(top, m)
    ax.set_xticks(range(len(points)), points, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(points) - 0.5)
    ax.set_ylim(0, 1.1 * top)
    ax.set_ylabel("consistency (%)")
    ax.set_title("consistency per point and seed (95 % CI over runs; x: unfinished)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _cell(value):
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
