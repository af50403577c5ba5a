"""Figures shared by every report: image grids, consistency bars, loss curves, eps cosine
curves, failure reasons, attention maps. Each function takes plain arrays and returns a
matplotlib Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def mosaic(images: np.ndarray, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """(n, C, H, W) in [-1, 1] -> one (rows (H+pad), cols (W+pad), 3) image in [0, 1]."""
    images = np.asarray(images, dtype=np.float32)
    n, c, h, w = images.shape
    x = np.clip((images + 1) / 2, 0, 1).transpose(0, 2, 3, 1)
    if c == 1:
        x = np.repeat(x, 3, -1)
    rows = -(-n // ncols)
    grid = np.ones((rows * (h + pad) + pad, ncols * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = x[i]
    return grid


def grids(panels: dict[str, np.ndarray], ncols: int = 8, title: str | None = None):
    """Side-by-side image grids, one panel per name, the figure as tall as the grids need."""
    tiles = {name: mosaic(images, ncols) for name, images in panels.items()}
    aspect = max(t.shape[0] / t.shape[1] for t in tiles.values())
    height = 2.6 * aspect + 0.4 + (0.3 if title else 0)  # the grids, their names, the title
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), height), squeeze=False)
    for ax, (name, tile) in zip(axes[0], tiles.items(), strict=True):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def pairs(
    top: np.ndarray,
    bottom: np.ndarray,
    names: tuple[str, str],
    notes: list[str],
    ncols: int = 8,
    title: str | None = None,
):
    """Each image of `top` directly above its partner in `bottom` (both (n, C, H, W)), with
    `notes[i]` under pair i and `names` beside the two rows of every line of pairs."""
    import textwrap

    n, _, h, w = top.shape
    lines, cols, pad = -(-n // ncols), min(n, ncols), 1
    width = 0.8 * cols + 1.2
    if title:  # wrapped to the figure's width: about 13 characters of 10 pt an inch
        title = textwrap.fill(title, width=max(20, int(13 * width)))
    above = 0.3 * (title.count("\n") + 1) if title else 0
    fig, axes = plt.subplots(lines, 1, figsize=(width, 1.95 * lines + above), squeeze=False)
    blank = np.ones((cols, *top.shape[1:]), dtype=np.float32)  # white tiles end a short line
    for line, ax in enumerate(axes[:, 0]):
        part = slice(line * ncols, line * ncols + cols)
        k = len(top[part])
        tile = mosaic(np.concatenate([top[part], blank[k:], bottom[part], blank[k:]]), cols, pad)
        ax.imshow(tile, interpolation="nearest")
        centre = [pad + i * (w + pad) + (w - 1) / 2 for i in range(k)]  # of each tile, in pixels
        ax.set_xticks(centre, notes[part], fontsize=7)
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(2)], names, fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def consistency_bars(names, ours, ours_err, paper=None, baseline=None):
    """Bars of consistency (%) with error bars; the paper's values as markers."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(names))
    err = np.array(ours_err, dtype=float).T if ours_err is not None else None
    ax.bar(x, ours, yerr=err, capsize=4, color="#4C72B0", label="ours (95% CI)")
    if paper is not None:
        px = [i for i, p in enumerate(paper) if p is not None]
        ax.scatter(px, [paper[i] for i in px], color="#C44E52", marker="D", zorder=3, label="paper")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="random (exact)")
    ax.set_xticks(x, names)
    ax.set_ylabel("consistent samples (%)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(curves: dict[str, np.ndarray]):
    """Training loss per epoch, one line per model (mean over seeds, band = min..max)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, losses in curves.items():
        losses = np.asarray(losses)  # (epochs, seeds)
        epochs = np.arange(1, len(losses) + 1)
        ax.plot(epochs, losses.mean(1), label=name, lw=1.2)
        ax.fill_between(epochs, losses.min(1), losses.max(1), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted eps MSE")
    ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def cosine_curves(curves: dict[str, dict]):
    """Per-step cosine of two eps predictions, one line per name: a dict with t, median,
    q25 and q75 (`theory.agreement.eps_agreement`), the band the interquartile range."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, c in curves.items():
        ax.plot(c["t"], c["median"], label=name, lw=1.2)
        ax.fill_between(c["t"], c["q25"], c["q75"], alpha=0.2)
    ax.set_xlabel("timestep t (T-1 is pure noise)")
    ax.set_ylabel("cosine(network eps, machine eps)")
    ax.set_ylim(top=1.0)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def agreement_curves(rows: list[dict], machine: str):
    """A run's agreement with a machine against the epoch of its checkpoints, a line per member:
    the median r^2 of their samples (band: the quartiles) above the eps cosine averaged over the
    steps; rows as `theory.compare_epochs` writes agreement.csv."""
    fig, axes = plt.subplots(2, 1, figsize=(6, 4.6), sharex=True)
    for member in sorted({r["member"] for r in rows}):
        mine = sorted((r for r in rows if r["member"] == member), key=lambda r: r["epoch"])
        c = {key: np.array([r[key] for r in mine]) for key in mine[0]}
        (line,) = axes[0].plot(c["epoch"], c["r2_median"], "o-", ms=3, label=f"member {member}")
        axes[0].fill_between(c["epoch"], c["r2_q25"], c["r2_q75"], alpha=0.2)
        axes[1].plot(c["epoch"], c["eps_cosine"], "o-", ms=3, color=line.get_color())
    axes[0].set_ylabel(f"r^2 with {machine}'s samples", fontsize=8)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylabel("eps cosine (mean over steps)", fontsize=8)
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(frameon=False, fontsize=7, ncol=4, loc="lower left", bbox_to_anchor=(0, 1))
    fig.tight_layout()
    return fig


def knob_curve(rows: list[dict], attention: str):
    """Consistency (%) of the attention machine against its mixing weight lam, with its 95 %
    interval, beside the share of samples with identical quadrants and the random baseline;
    rows as `theory.knob` writes them."""
    rows = sorted(rows, key=lambda r: r["lam"])
    lam = np.array([r["lam"] for r in rows])
    rate = 100 * np.array([r["consistency"] for r in rows])
    low, high = (100 * np.array([r[k] for r in rows]) for k in ("ci95_low", "ci95_high"))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(lam, rate, "o-", color="#4C72B0", label="consistent")
    ax.fill_between(lam, low, high, color="#4C72B0", alpha=0.2, label="95% interval")
    identical = 100 * np.array([r["identical_quadrants"] for r in rows])
    ax.plot(lam, identical, "s--", color="#C44E52", lw=1, label="all quadrants identical")
    ax.axhline(100 * rows[0]["baseline"], color="gray", ls=":", lw=1, label="random (exact)")
    ax.set_xlabel("lam: weight of the in-image mixture (0 = ELS)")
    ax.set_ylabel("samples (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"AttentionELS ({attention}) on the colour pairings", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def history_curves(epochs, panels: dict, loss, seeds, baseline: float | None = None):
    """Metrics of a run's kept checkpoints against the epoch, a panel each, above its training
    loss.

    Args:
        epochs: (E,) the checkpoints' epochs.
        panels: axis label -> (E, S) values per epoch and seed (a thin line per seed, the mean
            over seeds thick).
        loss: (epochs, mean loss over seeds), from the run's log.
        seeds: the S seeds, for the legend.
        baseline: a dotted line in the first panel (the random baseline), if any.
    """
    fig, axes = _history_axes(len(panels))
    for ax, (label, values) in zip(axes, panels.items(), strict=False):
        for j, seed in enumerate(seeds):
            ax.plot(epochs, values[:, j], "o-", lw=0.8, ms=3, alpha=0.5, label=f"seed {seed}")
        if len(seeds) > 1:
            ax.plot(epochs, values.mean(1), "k-", lw=1.8, label="mean")
        ax.set_ylabel(label, fontsize=8)
    axes[-1].plot(*loss, color="#4C72B0", lw=1)
    return _finish_history(fig, axes, baseline, ncol=5)


def history_overlay(runs: dict, baseline: float | None = None):
    """Several runs' histories in one figure: per panel a line per run (the mean over its
    seeds, the band from its lowest to its highest seed), and their training losses below.

    Args:
        runs: name -> {"epochs": (E,), "panels": {label: (E, S)}, "loss": (epochs, mean)},
            every run with the same panel labels.
        baseline: a dotted line in the first panel (the random baseline), if any.
    """
    labels = list(next(iter(runs.values()))["panels"])
    fig, axes = _history_axes(len(labels))
    for name, c in runs.items():
        for ax, label in zip(axes, labels, strict=False):
            values = c["panels"][label]
            (line,) = ax.plot(c["epochs"], values.mean(1), "o-", lw=1.4, ms=3, label=name)
            ax.fill_between(c["epochs"], values.min(1), values.max(1), alpha=0.2)
            ax.set_ylabel(label, fontsize=8)
        axes[-1].plot(*c["loss"], lw=1, color=line.get_color())
    return _finish_history(fig, axes, baseline, ncol=4)


def _history_axes(n_panels: int):
    """A figure of `n_panels` metric panels above a training-loss panel, sharing the epoch
    axis; returns it and its axes, top to bottom."""
    n = n_panels + 1
    fig, axes = plt.subplots(n, 1, figsize=(6, 1.9 * n + 0.4), sharex=True, squeeze=False)
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    return fig, axes[:, 0]


def _finish_history(fig, axes, baseline: float | None, ncol: int):
    """The random baseline (if any) and the legend on the first panel, the loss panel on a log
    scale, the labels."""
    if baseline is not None:
        axes[0].axhline(baseline, color="gray", ls=":", lw=1, label="random (exact)")
    axes[0].legend(frameon=False, fontsize=7, ncol=ncol, loc="lower left", bbox_to_anchor=(0, 1))
    for ax in axes[:-1]:  # rates and distances: from 0 (all zero: 0 to 1, not -0.05 to 0.05)
        values = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines])
        top = values[np.isfinite(values)].max(initial=0.0)  # all NaN: no numpy warning
        ax.set_ylim(0, None if top > 0 else 1)
    axes[-1].set_yscale("log")
    axes[-1].set_ylabel("training loss\n(raw weights)", fontsize=8)
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    return fig


def history_samples(shown: dict, title: str):
    """The first samples at each epoch: `shown` maps an epoch to (n, C, H, W), a row each."""
    epochs = list(shown)
    n = max(len(x) for x in shown.values())
    rows = [mosaic(shown[e], ncols=n) for e in epochs]
    width = max(r.shape[1] for r in rows)
    tile = np.ones((sum(r.shape[0] for r in rows), width, 3), dtype=np.float32)
    top, centres = 0, []
    for r in rows:
        tile[top : top + r.shape[0], : r.shape[1]] = r
        centres.append(top + r.shape[0] / 2)
        top += r.shape[0]
    fig, ax = plt.subplots(figsize=(0.5 * n + 1.2, 0.5 * len(epochs) + 0.8))
    ax.imshow(tile, interpolation="nearest")
    ax.set_yticks(centres, [f"epoch {e}" for e in epochs], fontsize=7)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def failure_reasons(names, reason_names, fractions):
    """Stacked bars: how each model's samples split into consistent and failure kinds
    (`fractions`: a row per name, a column per reason); kinds no model has are left out."""
    fractions = np.asarray(fractions, dtype=float)
    seen = fractions.any(0)
    reason_names, fractions = np.asarray(reason_names)[seen].tolist(), fractions[:, seen]
    long = max(len(n) for n in names) > 10  # a sweep's point names: slanted, and more room
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names) + 3) if long else 6, 3.4 + long))
    bottom = np.zeros(len(names))
    for j, reason in enumerate(reason_names):
        vals = fractions[:, j] * 100
        ax.bar(names, vals, bottom=bottom, label=reason.replace("_", " "))
        bottom += vals
    ax.set_ylabel("samples (%)")
    if long:
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.legend(frameon=False, fontsize=8, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.tight_layout()
    return fig


def attention_maps(steps, weights, finals):
    """Attention weights (tokens x tokens) of a few samples at a few sampling steps.

    Args:
        steps: the timesteps t shown, one column each.
        weights: (n_samples, n_steps, N, N) attention weights.
        finals: (n_samples, C, H, W) the finished samples (last column).
    """
    n, k = weights.shape[:2]
    fig, axes = plt.subplots(n, k + 1, figsize=(1.5 * (k + 1), 1.5 * n), squeeze=False)
    for i in range(n):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(weights[i, j], vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={steps[j]}", fontsize=8)
        axes[i, k].imshow(mosaic(finals[i : i + 1], 1, pad=0), interpolation="nearest")
        axes[i, k].axis("off")
        if i == 0:
            axes[i, k].set_title("sample", fontsize=8)
    fig.supylabel("query token", fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    """Save a figure atomically as PNG and close it."""
    import io as _io

    from mosaicdiff.io import atomic_write_bytes

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
