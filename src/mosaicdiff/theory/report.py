"""Consistency of machine samples on the colour pairings, with an exact binomial view.

The spec's prediction (SPEC Sec. 2): the stride-2, 2x2-patch ELS machine makes independent
quadrants, so its consistency equals the exact random baseline (3/81 for the paper's rules);
the attention machine raises it. Quadrant independence is checked directly with chi-square tests
on every pair of quadrants. One batch of n samples gives a binomial count, so the interval
here is Wilson's 95 % score interval, and the baseline check is a two-sided binomial z-test.
"""

from __future__ import annotations

import math

import torch

from mosaicdiff.data.pairings import PairingsSpec
from mosaicdiff.metrics.consistency import consistency, nearest_colour, random_baseline_exact
from mosaicdiff.metrics.stats import wilson_interval


def identical_quadrants(images: torch.Tensor, spec: PairingsSpec) -> torch.Tensor:
    """(N,) bool: every quadrant shows the same 2x2 colour labels (pure copy-and-paste)."""
    codes = quadrant_codes(images, spec)
    return (codes == codes[:, :1]).all(-1)


def quadrant_codes(images: torch.Tensor, spec: PairingsSpec) -> torch.Tensor:
    """(N, Q) int64: every quadrant's 2x2 nearest-colour labels as one code."""
    labels = nearest_colour(images.float(), spec)  # (N, H, W)
    k = len(spec.colours)
    blocks = spec.quadrants(labels).flatten(2)  # (N, Q, 4)
    return (blocks * k ** torch.arange(4, device=blocks.device)).sum(-1)


def independence_p_value(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson chi-square test that two (N,) categorical samples are independent."""
    ra, ia = torch.unique(a, return_inverse=True)
    rb, ib = torch.unique(b, return_inverse=True)
    if len(ra) < 2 or len(rb) < 2:
        return 1.0  # a constant is independent of anything
    table = torch.zeros(len(ra), len(rb), dtype=torch.float64)
    table.index_put_((ia, ib), torch.ones_like(ia, dtype=torch.float64), accumulate=True)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    df = (len(ra) - 1) * (len(rb) - 1)
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2))


def quadrant_independence(images: torch.Tensor, spec: PairingsSpec) -> dict[str, float]:
    """Chi-square p-values of independence for every pair of quadrants, keyed "i-j"."""
    codes = quadrant_codes(images, spec)
    n_q = codes.shape[1]
    return {
        f"{i}-{j}": independence_p_value(codes[:, i], codes[:, j])
        for i in range(n_q)
        for j in range(i + 1, n_q)
    }


def consistency_report(images: torch.Tensor, spec: PairingsSpec) -> dict:
    """Rate, Wilson 95 % interval, the exact baseline and a z-test against it, failure reasons,
    and the share of samples whose quadrants are all identical."""
    result = consistency(images, spec)
    n, k = images.shape[0], int(result.consistent.sum())
    base = random_baseline_exact(spec)
    z = (k / n - base) / math.sqrt(base * (1 - base) / n)
    return {
        "n": n,
        "consistent": k,
        "rate": k / n,
        "ci95": list(wilson_interval(k, n)),
        "baseline_exact": base,
        "z_vs_baseline": z,
        "p_vs_baseline": math.erfc(abs(z) / math.sqrt(2)),
        "reasons": result.reason_counts(),
        "identical_quadrants": float(identical_quadrants(images, spec).double().mean()),
        "independence_p": quadrant_independence(images, spec),
    }
