"""The study report's prose: method, settings, and what the numbers say (computed, not canned)."""

from __future__ import annotations

from mosaicdiff.config import RunConfig
from mosaicdiff.experiments.timing import time_section
from mosaicdiff.metrics.creativity import MOSAIC_ATOL


def method_section(configs: dict[str, RunConfig], sc, theory: dict) -> str:
    first = configs[sc.archs[0]]
    t, s = first.train, first.sample
    cal = theory["calibration"]
    sizes = sorted(set(cal["patch_size"]))
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in theory.get("seconds", {}).items())
    clip = ", x0 estimate clamped to [-1, 1] at every step" if s.clip_x0 else ""
    return "\n".join(
        [
            "## Method\n",
            f"- Data: scikit-learn digits, 1,797 images of 8x8 in [-1, 1]. "
            f"Training: {t.epochs} epochs, batch {t.batch_size}, lr {t.lr}, EMA {t.ema_decay}, "
            f"seeds {list(t.seeds)}; width {first.model.hidden}.",
            "- Shapes: "
            + "; ".join(
                f"{a}: depth {configs[a].model.depth}"
                + (f", kernel {configs[a].model.kernel}" if "resnet" in a else "")
                for a in sc.archs
            )
            + ".",
            f"- Creativity: {sc.n_samples} samples per seed ({s.sampler.upper()}, {s.steps} "
            f"steps{clip}); memorization = nearest training image closer than 1/3 of the second "
            f"nearest, or an exact copy; novelty = mean RMS distance to the nearest training "
            f"image; diversity = mean pairwise RMS distance between samples; mosaic ratio = "
            f"cover distance / nearest-image distance, where the cover distance is the mean "
            f"over pixels of the best {sc.mosaic_patch}x{sc.mosaic_patch} training patch (any "
            f"location) covering the pixel (near 0: a mosaic of training patches that copies no "
            f"image); mosaic rate = share of samples not memorized with mosaic ratio < 1/3 "
            f"and cover distance at most {MOSAIC_ATOL} (the ratio alone is small for noise too, "
            f"which some training patch lies near everywhere).",
            f"- Machines: exact IdealScore, ELS and AttentionELS (soft, lam 0.5) on all 1,797 "
            f"images, stride 1, circular windows. Their patch size per step was calibrated to "
            f"the CNN (seed {t.seeds[0]}) on {cal['n_samples']} DDPM trajectories, every "
            f"{sc.calib_every} steps, candidates {cal['candidates']} (sizes used: {sizes}). "
            f"Exact ELS weighs every patch of a sample against every training patch at every "
            f"step, so the comparison uses only {sc.agree_samples} samples per machine with "
            f"DDIM (eta 0) in {sc.agree_steps} steps{' (clamped likewise)' * s.clip_x0}: every "
            f"network seed is sampled from the same initial noise and compared by r^2 of the "
            f"final images. Machine time: {secs}.",
            "",
        ]
    )


def findings(rows: list[dict], sc) -> str:
    """Answers to the study's questions, read from the table."""
    by = {r["arch"]: r for r in rows}
    lines = ["## What the numbers say\n"]
    for a in sc.archs:
        r = by[a]
        d = r["r2_AttentionELS_minus_ELS"]
        lines.append(
            f"- {r['model']}: median r^2 with AttentionELS {r['r2_AttentionELS']:.3f} vs ELS "
            f"{r['r2_ELS']:.3f} ({'+' if d >= 0 else ''}{d:.3f}); IdealScore "
            f"{r['r2_IdealScore']:.3f}."
        )
    if "resnet" in by and "resnet_attn" in by:
        cnn, att = by["resnet"], by["resnet_attn"]
        lines.append(
            f"- Adding attention to the CNN moves memorization {cnn['memorization']:.3f} -> "
            f"{att['memorization']:.3f} and novelty {cnn['novelty']:.3f} -> "
            f"{att['novelty']:.3f}; its gain of AttentionELS over ELS goes "
            f"{cnn['r2_AttentionELS_minus_ELS']:+.3f} -> {att['r2_AttentionELS_minus_ELS']:+.3f}."
        )
    sweep = sorted(
        (r["receptive_field"], r["memorization"], r["novelty"])
        for r in rows
        if r["receptive_field"] is not None
    )
    if len(sweep) >= 2:
        pts = ", ".join(f"RF {rf}: {m:.3f} / {n:.3f}" for rf, m, n in sweep)
        lines.append(
            f"- CNN receptive field (memorization / novelty, seed 0 for sweep runs): {pts}."
        )
    lines.append(
        "- Few samples, few seeds and short training: differences smaller than the ± spread "
        "over seeds, or than the quartiles in the r^2 figure, are not evidence."
    )
    return "\n".join(lines) + "\n"


def render_markdown(configs, sc, rows, table, theory, figs, preset, timings) -> str:
    """The whole report as markdown."""
    parts = [
        f"# Creativity on digits: CNN, attention, U-Net, DiT (preset `{preset}`)\n",
        "Memorization, novelty, diversity and patch-mosaic scores of each architecture's "
        "samples (mean ± sd over seeds), and agreement with the closed-form machines "
        "(median r^2 over samples, mean over seeds). RF: the CNN's receptive field side "
        "(`image`: attention or a U-Net/DiT sees the whole image). Rows `rf-dD-kK` are the "
        "receptive-field sweep (CNN of depth D, kernel K, seed 0).\n",
        table,
        findings(rows, sc),
        method_section(configs, sc, theory),
        "## Figures\n",
    ]
    for caption, path in figs.items():
        parts.append(f"![{caption}]({path})\n\n*{caption}*\n")
    notes = {"theory": "patch calibration, machine samples and agreement"}
    parts.append(time_section(timings, notes))
    return "\n".join(parts)
