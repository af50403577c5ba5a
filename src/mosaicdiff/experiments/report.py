"""The reproduce report: Table 1 and Appendix B beside the paper, every setting that differs,
and the figures (the paper's Figures 1-5 and what the paper lacks). Markdown and a
self-contained HTML file (figures embedded), plus the table as CSV and JSON."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import torch

from mosaicdiff import plots
from mosaicdiff.config import RunConfig
from mosaicdiff.config_io import to_dict
from mosaicdiff.experiments.timing import time_section
from mosaicdiff.io import atomic_write_csv, atomic_write_json, atomic_write_text
from mosaicdiff.metrics.consistency import REASONS

# What the stages other than the models' did, for the Time table.
STAGE_WORK = {
    "theory": "machines (unless sampled beside the models) and agreement",
    "theory machines": "machine samples, beside the models",
    "ablation": "the ablation's points",
}
CSV_COLUMNS = ("model", "paper", "ours", "ci_seeds_lo", "ci_seeds_hi", "seeds")
PAPER = {"random": 5.38, "cnn": 10.88, "top1": 21.64, "identity": 25.44, "attn": 64.03}
LABELS = {
    "cnn": "CNN",
    "top1": "CNN + top-1 attention",
    "identity": "CNN + identity attention",
    "attn": "CNN + attention",
}
PAPER_SETTINGS = {  # what the paper states (Sec. 3, App. B)
    "train.epochs": "5000 (top1: 10000)",
    "train.batch_size": 64,
    "train.lr": 0.001,
    "train.weight_decay": 1e-05,
    "train.ema_decay": 0.9999,
    "train.seeds": "1 (which one not stated)",
    "sample.n_runs": 100,
    "sample.n_per_run": 10000,
    "sample.sampler": "ddpm",
    "sample.steps": 1000,
    "diffusion.T": "1000 (standard DDPM)",
    "model.out_bias": "channel (a ConvTranspose2d's bias, one per channel)",
}
SILENT = {  # choices the paper does not state
    "model.time_embedding": "how (or whether) the timestep reaches the network",
    "model.nonlinearity": "the nonlinearity between the two convolutions",
    "model.gumbel_tau": "the Gumbel-softmax temperature of top1",
    "data.layout": "where key and value sit inside a quadrant",
    "train.loss_weighting": "stated as (1 - alpha_bar_t); listed for completeness",
    "sample.noise": "the sampler's random-number generator",
}


def _get(cfg: dict, key: str):
    section, name = key.split(".")
    return cfg[section][name]


def table_rows(configs, results, baseline) -> list[dict]:
    rows = [
        {
            "model": "random",
            "label": "Random baseline (exact)",
            "paper": PAPER["random"],
            "ours": 100 * baseline["exact"],
            "ci_runs": None,
            "ci_seeds": None,
            "seeds": 0,
        },
        {
            "model": "random_mc",
            "label": "Random baseline (Monte-Carlo)",
            "paper": PAPER["random"],
            "ours": 100 * baseline["monte_carlo"]["mean"],
            "ci_runs": _percent(baseline["monte_carlo"]["ci95"]),
            "ci_seeds": None,
            "seeds": 0,
        },
    ]
    for arch, res in results.items():
        over = res["over_seeds"]
        runs_ci = [_percent(p["ci95"]) for p in res["per_seed"]]
        rows.append(
            {
                "model": arch,
                "label": LABELS.get(arch, arch),
                "paper": PAPER.get(arch),
                "ours": 100 * over["mean"],
                "ci_runs": runs_ci[0] if len(runs_ci) == 1 else None,
                "ci_runs_per_seed": runs_ci,
                "ci_seeds": _percent(over["ci95"]),
                "seeds": over["n"],
                "epochs": configs[arch].train.epochs,
                "per_seed": [100 * p["mean"] for p in res["per_seed"]],
            }
        )
    return rows


def _percent(ci) -> list[float] | None:
    """An interval of rates in percent; None (one run or seed: no interval) stays None."""
    return [100 * v for v in ci] if ci else None


def _fmt_ci(ci) -> str:
    """A percentage interval, clipped to [0, 100] (a t-interval over few seeds can overshoot)."""
    return f"{max(ci[0], 0):.2f}-{min(ci[1], 100):.2f}" if ci else "-"


def markdown_table(rows) -> str:
    lines = [
        "| model | paper (%) | ours (%) | 95% CI over training seeds | "
        "95% CI over sampling runs (per seed) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = r.get("ci_runs_per_seed") or ([r["ci_runs"]] if r["ci_runs"] else [])
        runs = "; ".join(_fmt_ci(c) for c in per_seed if c) or "-"
        paper = f"{r['paper']:.2f}" if r["paper"] is not None else "-"
        lines.append(
            f"| {r['label']} | {paper} | {r['ours']:.2f} | {_fmt_ci(r['ci_seeds'])} | "
            f"{runs} | {r['seeds'] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def settings_section(configs: dict[str, RunConfig]) -> str:
    cfg = to_dict(next(iter(configs.values())))
    lines = ["| setting | paper | ours |", "|---|---|---|"]
    for key, paper in PAPER_SETTINGS.items():
        ours = _get(cfg, key)
        if key == "train.seeds":
            same = len(ours) == 1
            ours = f"{len(ours)} ({', '.join(map(str, ours))})"
        else:
            if key == "train.epochs" and "top1" in configs:
                ours = f"{ours} (top1: {configs['top1'].train.epochs})"
            # The paper's note in brackets is not part of its value: "1000 (standard DDPM)".
            same = str(ours) in (str(paper), str(paper).split(" (")[0])
        lines.append(f"| {key} | {paper} | {ours}{'' if same else ' **(differs)**'} |")
    for key, what in SILENT.items():
        lines.append(f"| {key} | not stated ({what}) | {_get(cfg, key)} |")
    return "\n".join(lines) + "\n"


def make_figures(out: Path, configs, results, rows) -> dict[str, str]:
    """Write every figure to OUT/report/figures; return {caption: relative path}."""
    from mosaicdiff.data import load_dataset
    from mosaicdiff.generate import load_samples
    from mosaicdiff.runs import RunDir

    fig_dir = out / "report" / "figures"
    figs = {}
    any_cfg = next(iter(configs.values()))
    spec = load_dataset(any_cfg.data).info["spec"]

    def put(name, fig, caption):
        plots.save(fig, fig_dir / name)
        figs[caption] = f"figures/{name}"

    put(
        "dataset.png",
        plots.grids({"all 48 distinct images": spec.all_images().numpy()}),
        "The colour-pairings dataset: every distinct image (Figure 1, left).",
    )
    panels = {"dataset": load_dataset(any_cfg.data).images[:64].numpy()}
    for arch in configs:
        samples = load_samples(RunDir(out / "runs" / arch).samples_dir(), limit=64)
        panels[LABELS.get(arch, arch)] = samples[0]
    put(
        "samples.png",
        plots.grids(panels),
        "Samples of each model (training seed 0) beside the dataset (the paper's Figures 1-5).",
    )
    model_rows = [r for r in rows if r["model"] in configs]
    ours = [r["ours"] for r in model_rows]
    err = []
    for r in model_rows:
        ci = r["ci_seeds"] or r["ci_runs"] or [r["ours"], r["ours"]]
        err.append([max(r["ours"] - ci[0], 0), max(ci[1] - r["ours"], 0)])
    put(
        "consistency.png",
        plots.consistency_bars(
            [r["model"] for r in model_rows],
            ours,
            err,
            [r["paper"] for r in model_rows],
            rows[0]["ours"],
        ),
        "Consistency per model: ours with 95% intervals over training seeds (over sampling "
        "runs for a single seed); the paper's values as diamonds; the exact random baseline.",
    )
    curves = {}
    for arch in configs:
        metrics = RunDir(out / "runs" / arch).read_metrics()
        curves[arch] = np.array([m["loss"] for m in metrics])
    put("loss.png", plots.loss_curves(curves), "Training loss per epoch (band: min-max seeds).")
    counts = np.zeros((len(configs), len(REASONS)))
    for i, arch in enumerate(configs):
        for p in results[arch]["per_seed"]:  # results written before not_finite lack it
            counts[i] += np.array([p["reasons"].get(r, 0) for r in REASONS])
    fractions = counts / counts.sum(1, keepdims=True)  # failure_reasons drops kinds none had
    put(
        "failures.png",
        plots.failure_reasons(list(configs), REASONS, fractions),
        "How samples fail: an invalid quadrant (key or value pixels disagree), a pairing no "
        "pattern type has, or valid pairings from different pattern types (or a NaN or "
        "infinite value, if any sampler diverged).",
    )
    for arch in configs:
        if arch in ("attn", "identity", "top1"):
            put(
                f"attention-{arch}.png",
                attention_figure(out / "runs" / arch),
                f"{LABELS[arch]}: attention weights (query token x key token, quadrants in "
                "row-major order) of four samples across sampling steps, and the samples.",
            )
    return figs


def attention_figure(run_path: Path, n: int = 4, shown=(999, 800, 600, 400, 200, 0)):
    """Sample n images with seed 0's model, recording its attention at the `shown` steps."""
    from mosaicdiff.runs import load_run
    from mosaicdiff.sampling import ddpm_sample

    loaded = load_run(run_path, device="cpu")
    model = loaded.model.member(0)
    recorded = {}

    def denoiser(x, t):
        eps, a = model(x[None], t, return_attention=True)
        if int(t[0]) in shown:
            recorded[int(t[0])] = a[0].clone()
        return eps[0]

    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((n, *loaded.dataset.shape), generator=g)
    final = ddpm_sample(denoiser, x_T, g, loaded.schedule)
    weights = torch.stack([recorded[t] for t in shown], 1).numpy()  # (n, steps, N, N)
    return plots.attention_maps(list(shown), weights, final.numpy())


def write_report(
    out: Path, configs, results, baseline, preset: str, timings, theory=None, ablation_md=""
) -> Path:
    report = out / "report"
    rows = table_rows(configs, results, baseline)
    table = markdown_table(rows)
    atomic_write_text(report / "table.md", table)
    atomic_write_json(report / "table.json", {"preset": preset, "rows": rows})
    atomic_write_json(report / "timings.json", {"timings": timings})
    cells = (
        (r["model"], r["paper"], f"{r['ours']:.4f}", *(r["ci_seeds"] or [None, None]), r["seeds"])
        for r in rows
    )
    atomic_write_csv(
        report / "table.csv", [dict(zip(CSV_COLUMNS, c, strict=True)) for c in cells], CSV_COLUMNS
    )
    figs = make_figures(out, configs, results, rows)
    theory_md = ""
    if theory is not None:
        from mosaicdiff.experiments.theory_section import theory_markdown

        theory_md = theory_markdown(theory, out, figs)
    md = render_markdown(configs, baseline, preset, timings, rows, figs, ablation_md + theory_md)
    atomic_write_text(report / "report.md", md)
    atomic_write_text(report / "report.html", render_html(md, report))
    return report


def render_markdown(configs, baseline, preset, timings, rows, figs, sections="") -> str:
    """The report: the table, its notes, the settings, then `sections` (ablation, theory)."""
    from mosaicdiff.experiments.report_text import baseline_note, ordering_note

    parts = [
        f"# Reproduction of Finn et al. (2025), Table 1 and Appendix B (preset `{preset}`)\n",
        "Consistency: the share of samples whose four quadrants are all valid and whose "
        "pairings all belong to one pattern type.\n",
        "## Table 1 and Appendix B\n",
        markdown_table(rows),
        ordering_note(rows),
        baseline_note(baseline),
        "## Settings\n",
        settings_section(configs),
        sections,
        "## Figures\n",
    ]
    for caption, path in figs.items():
        parts.append(f"![{caption}]({path})\n\n*{caption}*\n")
    parts.append(time_section(timings, STAGE_WORK))
    return "\n".join(parts)


def render_html(md: str, report: Path) -> str:
    """A minimal self-contained HTML rendering of the report's markdown (images inlined)."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            path = line[line.rindex("](") + 2 : line.rindex(")")]
            data = base64.b64encode((report / path).read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line.lstrip('- '))}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mosaicdiff report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _inline(text: str) -> str:
    text = html.escape(text)
    parts = text.split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
