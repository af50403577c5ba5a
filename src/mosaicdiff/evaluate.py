"""Evaluating drawn samples: consistency per seed and per sampling run, with intervals; or,
on any data, the creativity metrics (memorization, novelty, mosaics; `metrics/creativity.py`).

Two spreads are reported for consistency, as SPEC asks: over sampling runs within a seed (how
precisely a model's rate is measured) and over training seeds (how much the rate depends on the
seed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mosaicdiff.errors import UserError, check
from mosaicdiff.generate import iter_chunks, load_samples, read_meta
from mosaicdiff.io import atomic_write_json
from mosaicdiff.metrics.consistency import REASONS, consistency, summarize_rates
from mosaicdiff.metrics.stats import CI_METHOD, mean_ci, mean_sd


def evaluate_consistency(samples_dir: Path, spec, seeds: list[int]) -> dict:
    """Consistency of every seed's samples, per sampling run, and how failures split by reason.

    Writes and returns SAMPLES/results.json.
    """
    meta = read_meta(samples_dir, "sample")
    n_runs = meta["sample"]["n_runs"]
    s = len(seeds)
    hits = torch.zeros(s, n_runs, dtype=torch.float64)
    counts = torch.zeros(s, n_runs, dtype=torch.float64)
    reasons = torch.zeros(s, len(REASONS), dtype=torch.int64)
    for chunk in iter_chunks(samples_dir):
        run = torch.as_tensor(chunk["run"])
        for i in range(s):
            res = consistency(torch.as_tensor(chunk["samples"][i]), spec)
            hits[i].index_add_(0, run, res.consistent.double())
            counts[i].index_add_(0, run, torch.ones_like(run, dtype=torch.float64))
            reasons[i] += torch.bincount(res.reason, minlength=len(REASONS))
    per_seed = []
    for i, seed in enumerate(seeds):
        rates = (hits[i] / counts[i]).tolist()
        per_seed.append(
            {
                "seed": seed,
                **summarize_rates(rates, counts[i].tolist()),
                "reasons": dict(zip(REASONS, reasons[i].tolist(), strict=True)),
            }
        )
    result = {
        "metric": "consistency",
        "per_seed": per_seed,
        # over seeds, at least the interval of all their samples (seeds that all measured 0 of
        # 200 are not certain of 0: probe 64); one seed has no interval over seeds
        "over_seeds": mean_ci(
            [p["mean"] for p in per_seed], counts.sum(1).tolist() if len(seeds) > 1 else None
        ),
        "n_samples_per_seed": int(counts[0].sum()),
    }
    atomic_write_json(samples_dir / CONSISTENCY_RESULTS, result)
    return result


CONSISTENCY_RESULTS = "results.json"  # the file name predates the creativity metrics
CREATIVITY_RESULTS = "results-creativity.json"
MOSAIC_PATCH = 3  # side of the patches a sample is a mosaic of, unless the user picks another
CREATIVITY_LIMIT = 1000  # samples per seed the creativity metrics measure, unless told otherwise


def metric_for(kind: str) -> str:
    """What samples of data of `kind` are measured by unless asked otherwise: consistency where
    the data has rules to obey (the colour pairings), creativity anywhere else."""
    return "consistency" if kind == "pairings" else "creativity"


def check_metric(metric: str, kind: str, patch: int | None, limit: int | None) -> str:
    """The metric that `--metric METRIC` names for data of `kind` ('auto' resolved), with
    --patch and --limit refused where they do not apply."""
    metric = metric if metric != "auto" else metric_for(kind)
    if metric == "consistency":
        for flag, value in (("patch", patch), ("limit", limit)):
            what = f"--{flag} {value} applies to --metric creativity, not consistency"
            check(value is None, what)
        check(
            kind == "pairings",
            f"--metric consistency needs data.kind=pairings, not {kind}; use --metric creativity",
        )
    return metric


def creativity_options(
    patch: int | None, limit: int | None, images: torch.Tensor
) -> tuple[int, int]:
    """--patch and --limit of the creativity metrics, defaults filled in, checked against the
    training `images` (N, C, H, W)."""
    patch = MOSAIC_PATCH if patch is None else patch
    limit = CREATIVITY_LIMIT if limit is None else limit
    side = min(images.shape[-2:])
    check(1 <= patch <= side, f"--patch={patch} must be between 1 and {side}, the image side")
    check(limit >= 1, f"--limit={limit} must be at least 1")
    return patch, limit


def results_name(metric: str) -> str:
    """The file in a samples folder that holds `metric`'s results."""
    return CONSISTENCY_RESULTS if metric == "consistency" else CREATIVITY_RESULTS


def evaluate_creativity_samples(
    samples_dir: Path,
    train_images: torch.Tensor,
    seeds: list[int],
    patch: int,
    limit: int,
    progress: bool = False,
) -> dict:
    """The creativity metrics of each seed's first `limit` samples against the training set,
    and their mean and standard deviation over seeds.

    Writes SAMPLES/results-creativity.json and SAMPLES/nearest.png (the first samples of the
    first seed, each above its nearest training image), and returns the results. `progress`
    shows a bar over the seeds (10,000 digits take ~50 s a seed on 2 cores).
    """
    from tqdm.auto import tqdm

    from mosaicdiff import plots

    samples = torch.from_numpy(load_samples(samples_dir, limit))  # (S, n, C, H, W)
    per_seed = [
        {"seed": seed, **_measured(seed, x, train_images, patch)}
        for seed, x in tqdm(
            zip(seeds, samples, strict=True),
            desc="creativity",
            total=len(seeds),
            unit="seed",
            disable=not progress,
            leave=False,
        )
    ]
    settings = ("memorization_ratio", "copy_atol", "duplicate_atol", "mosaic_threshold")
    settings += ("mosaic_atol",)
    metrics = [k for k in per_seed[0] if k not in settings]
    over_seeds = {
        key: mean_sd([p[key] for p in per_seed])
        for key in metrics
        if all(isinstance(p[key], float | None) for p in per_seed)
    }
    result = {"metric": "creativity", "per_seed": per_seed, "over_seeds": over_seeds}
    title = f"seed {seeds[0]}: samples and their nearest training images"
    shown = samples[0][torch.isfinite(samples[0]).flatten(1).all(1)][:16]
    plots.save(nearest_figure(shown, train_images, title), samples_dir / "nearest.png")
    atomic_write_json(samples_dir / CREATIVITY_RESULTS, result)
    return result


def measured_as_now(result: dict) -> bool:
    """Whether stored results (results*.json, a sweep point's) were measured by today's rules:
    creativity results from before a mosaic's cover distance was bounded are not, nor
    consistency results with an older interval (`stats.CI_METHOD`)."""
    from mosaicdiff.metrics.creativity import MOSAIC_ATOL

    per_seed = result.get("per_seed")
    if not isinstance(per_seed, list) or not per_seed:  # edited or damaged: measured again
        return False
    if result.get("metric") == "creativity":
        key, now = "mosaic_atol", MOSAIC_ATOL
    else:
        key, now = "ci_method", CI_METHOD
    return all(isinstance(p, dict) and p.get(key) == now for p in per_seed)


def _measured(seed: int, x: torch.Tensor, train_images: torch.Tensor, patch: int) -> dict:
    from mosaicdiff.metrics.creativity import evaluate_creativity

    try:
        return evaluate_creativity(x, train_images, patch=patch)
    except UserError as e:  # every sample of this seed diverged: say which seed
        raise UserError(f"seed {seed}: {e}") from None


def nearest_figure(
    samples: torch.Tensor, train_images: torch.Tensor, title: str, label: str = "sample"
):
    """Samples (n, C, H, W), each above its nearest training image with their RMS distance."""
    from mosaicdiff import plots
    from mosaicdiff.metrics.creativity import nearest

    distance, index = nearest(samples.flatten(1), train_images.flatten(1), k=1)
    return plots.pairs(
        samples.numpy(),
        train_images[index[:, 0]].numpy(),
        names=(label, "nearest"),
        notes=[f"{d:.2f}" for d in distance[:, 0].tolist()],
        title=f"{title} (RMS distance below each pair)",
    )


def creativity_line(p: dict) -> str:
    """One seed's creativity metrics (a `per_seed` entry) as one line of text."""
    mosaic = "n/a" if p["mosaic_ratio"] is None else f"{p['mosaic_ratio']:.3f}"
    bad = p.get("n_not_finite", 0)  # results written before it was counted lack it
    left_out = f" ({bad} more NaN or infinite, left out)" if bad else ""
    return (
        f"seed {p['seed']}: {p['n_samples']} samples{left_out}; "
        f"memorized {100 * p['memorization_rate']:.1f}%, "
        f"mosaics {100 * p['mosaic_rate']:.1f}%, novelty {p['novelty']:.3f} "
        f"(RMS to the nearest training image), mosaic ratio {mosaic}"
    )
