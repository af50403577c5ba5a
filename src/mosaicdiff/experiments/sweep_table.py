"""A sweep's results gathered from its run directories: OUT/table.csv and OUT/summary.png.

One row per grid point and training seed: the point's grid values, consistency over sampling
runs (mean and 95 % interval, see evaluate.py), wall time and status. Points that did not
finish get one row with their status (failed, CANCELLED, pending, ...) and the error.
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


def write_outputs(plan, outcomes: dict[str, dict]) -> list[dict]:
    """Write OUT/table.csv and OUT/summary.png; return the rows."""
    rows = table_rows(plan, outcomes)
    columns = ["point", *plan.points[0].values, "seed", *FIELDS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(plan.out / "table.csv", buf.getvalue())
    atomic_write_bytes(plan.out / "summary.png", summary_png(rows))
    return rows


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
