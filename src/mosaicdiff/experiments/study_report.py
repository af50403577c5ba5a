"""The study report: creativity metrics and machine agreement per architecture on digits.

Writes OUT/report/{report.md, report.html (self-contained), table.md, table.csv, table.json,
figures/}. The HTML renderer and the image grids are the reproduce report's (`report.py`,
`plots.py`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from mosaicdiff import plots
from mosaicdiff.config import RunConfig
from mosaicdiff.io import atomic_write_csv, atomic_write_json, atomic_write_text
from mosaicdiff.metrics.stats import mean_sd

LABELS = {
    "resnet": "CNN (ResNet)",
    "resnet_attn": "CNN + attention",
    "unet": "U-Net (attention)",
    "dit": "DiT",
}
METRICS = {  # table column -> creativity key
    "memorization": "memorization_rate",
    "copy": "copy_rate",
    "novelty": "novelty",
    "diversity": "diversity",
    "mosaic_ratio": "mosaic_ratio",
    "mosaic_rate": "mosaic_rate",
}
COLUMNS = [
    "model",
    "arch",
    "receptive_field",
    "seeds",
    *[c for m in METRICS for c in (m, f"{m}_sd")],
    "mosaic_ratio_seeds",  # the seeds it averages: undefined on a seed whose samples all copy
    "r2_IdealScore",
    "r2_ELS",
    "r2_AttentionELS",
    "r2_AttentionELS_minus_ELS",
]


def receptive_field(cfg: RunConfig) -> int | None:
    """The resnet's receptive field side; None (the whole image) for the other networks."""
    from mosaicdiff.models.resnet import receptive_field as rf

    return rf(cfg.model.depth, cfg.model.kernel) if cfg.model.arch == "resnet" else None


def table_rows(configs: dict[str, RunConfig], creativity: dict, theory: dict) -> list[dict]:
    """One row per run: creativity metrics (mean and sd over seeds), and the median r^2 of
    each machine (median over samples, mean over seeds)."""
    rows = []
    for name, cfg in configs.items():
        per_seed = creativity[name]
        row = {
            "model": LABELS.get(name, name),
            "arch": name,
            "receptive_field": receptive_field(cfg),
            "seeds": len(per_seed),
        }
        for col, key in METRICS.items():
            over = mean_sd([s[key] for s in per_seed])
            row[col], row[f"{col}_sd"] = over["mean"], over["std"]
            if col == "mosaic_ratio":
                row["mosaic_ratio_seeds"] = over["n"]
        agree = theory["agreement"].get(name)
        for label in ("IdealScore", "ELS", "AttentionELS"):
            row[f"r2_{label}"] = (
                statistics.fmean(s[label]["median"] for s in agree) if agree else None
            )
        row["r2_AttentionELS_minus_ELS"] = row["r2_AttentionELS"] - row["r2_ELS"] if agree else None
        rows.append(row)
    return rows


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pm(mean, sd) -> str:
    """mean ± sd over seeds; the mean alone where one seed has no spread to give."""
    return _fmt(mean) if sd is None else f"{_fmt(mean)} ± {_fmt(sd)}"


def _ratio(r: dict) -> str:
    """The mosaic ratio's cell, naming its seeds where some had none (all their samples copy)."""
    n = r["mosaic_ratio_seeds"]
    return _fmt(r["mosaic_ratio"]) + (f" ({n} of {r['seeds']} seeds)" if n < r["seeds"] else "")


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| model | RF | seeds | memorized | novelty | diversity | mosaic ratio | mosaic rate "
        "| r^2 Ideal | r^2 ELS | r^2 AttnELS |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        rf = "image" if r["receptive_field"] is None else str(r["receptive_field"])
        lines.append(
            f"| {r['model']} ({r['arch']}) | {rf} | {r['seeds']} "
            f"| {_pm(r['memorization'], r['memorization_sd'])} "
            f"| {_pm(r['novelty'], r['novelty_sd'])} "
            f"| {_fmt(r['diversity'])} | {_ratio(r)} | {_fmt(r['mosaic_rate'])} "
            f"| {_fmt(r['r2_IdealScore'])} | {_fmt(r['r2_ELS'])} | {_fmt(r['r2_AttentionELS'])} |"
        )
    return "\n".join(lines) + "\n"


def make_figures(out: Path, configs, sc, theory: dict) -> dict[str, str]:
    """Every figure as {caption: relative path}."""
    import matplotlib.pyplot as plt

    from mosaicdiff.data import load_dataset
    from mosaicdiff.evaluate import nearest_figure
    from mosaicdiff.generate import load_samples

    figs, folder = {}, out / "report" / "figures"
    first = configs[sc.archs[0]]
    train_images = load_dataset(first.data).images

    def put(name, fig, caption):
        plots.save(fig, folder / name)
        figs[caption] = f"figures/{name}"

    for arch in sc.archs:
        x = torch.from_numpy(load_samples(out / "runs" / arch / "samples" / "study", 16)[0])
        put(
            f"nearest-{arch}.png",
            nearest_figure(
                x, train_images, LABELS[arch], label=f"sample (seed {configs[arch].train.seeds[0]})"
            ),
            f"{LABELS[arch]}: each sample above its nearest training image, RMS distance below.",
        )
    machine_panels = {
        label: torch.load(out / "theory" / f"{label}.pt").numpy()[:16]
        for label in ("IdealScore", "ELS", "AttentionELS")
    }
    put(
        "machines.png",
        plots.grids(machine_panels),
        "Samples of the machines (calibrated patch sizes), from the comparison's initial noise.",
    )

    labels = ("IdealScore", "ELS", "AttentionELS")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        data = [[r for s in theory["agreement"][a] for r in s[label]["r2"]] for a in sc.archs]
        pos = np.arange(len(sc.archs)) + (j - 1) * width
        box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True)
        for patch in box["boxes"]:
            patch.set_facecolor(f"C{j}")
        ax.plot([], [], color=f"C{j}", lw=6, label=label)
    ax.set_xticks(np.arange(len(sc.archs)), [LABELS[a] for a in sc.archs], fontsize=8)
    ax.set_ylabel("r^2 network vs machine")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    put("r2.png", fig, "r^2 between network and machine samples, all seeds, per machine.")

    cal = theory["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axes[0].step(range(len(cal["patch_size"])), cal["patch_size"], where="post")
    axes[0].set_xlabel("step t")
    axes[0].set_ylabel("calibrated patch size")
    table = np.asarray(cal["cosine"])
    for j, k in enumerate(cal["candidates"]):
        axes[1].plot(cal["steps"], table[:, j], marker=".", label=f"k={k}")
    axes[1].set_xlabel("step t")
    axes[1].set_ylabel("mean cosine(ELS eps, CNN eps)")
    axes[1].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    put("calibration.png", fig, "Patch size of ELS that best matches the CNN, per step.")
    return figs


def sweep_figure(rows: list[dict], out: Path, figs: dict) -> None:
    """Memorization and novelty against the CNN's receptive field (seed 0 and the main runs)."""
    import matplotlib.pyplot as plt

    pts = sorted(
        (r["receptive_field"], r["memorization"], r["novelty"], r["arch"])
        for r in rows
        if r["receptive_field"] is not None
    )
    if len(pts) < 2:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    rf = [p[0] for p in pts]
    ax.plot(rf, [p[1] for p in pts], "o-", label="memorization rate")
    ax.plot(rf, [p[2] for p in pts], "s-", label="novelty (RMS to nearest)")
    for p in pts:
        ax.annotate(p[3], (p[0], p[2]), fontsize=7)
    ax.set_xlabel("receptive field side (pixels; the image is 8)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    plots.save(fig, out / "report" / "figures" / "sweep.png")
    figs["CNN receptive-field sweep: memorization and novelty."] = "figures/sweep.png"


def write_study_report(out: Path, configs, sc, creativity, theory, preset, timings) -> Path:
    """Write the report files; return OUT/report."""
    from mosaicdiff.experiments.report import render_html
    from mosaicdiff.experiments.study_text import render_markdown

    report = out / "report"
    rows = table_rows(configs, creativity, theory)
    table = markdown_table(rows)
    atomic_write_text(report / "table.md", table)
    atomic_write_json(
        report / "table.json",
        {"preset": preset, "rows": rows, "creativity": creativity, "theory": theory},
    )
    atomic_write_csv(report / "table.csv", [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)
    atomic_write_json(report / "timings.json", {"timings": timings})
    figs = make_figures(out, configs, sc, theory)
    sweep_figure(rows, out, figs)
    md = render_markdown(configs, sc, rows, table, theory, figs, preset, timings)
    atomic_write_text(report / "report.md", md)
    atomic_write_text(report / "report.html", render_html(md, report))
    return report
