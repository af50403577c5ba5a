"""The self-consistency metric of the colour pairings (SPEC Sec. 1; Finn et al. 2025, Sec. 3).

Each pixel maps to its nearest colour. A quadrant is valid when both key pixels share a colour
and both value pixels share a colour; it then shows the pairing (key, value). An image is
consistent when every quadrant is valid and all its pairings belong to one pattern type.
Every image gets a reason code (`REASONS`), so failures can be counted by kind. An image with a
NaN or infinite value (a sampler that diverged) is never consistent: its reason is `not_finite`,
whatever colours its finite pixels happen to be nearest to.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, product

import torch

from mosaicdiff.data.pairings import PairingsSpec
from mosaicdiff.metrics.stats import mean_ci

REASONS = ("consistent", "invalid_quadrant", "unknown_pairing", "mixed_types", "not_finite")


@dataclass
class ConsistencyResult:
    """Per image: `consistent` (N,) bool and `reason` (N,) int64 indexing `REASONS`."""

    consistent: torch.Tensor
    reason: torch.Tensor

    @property
    def rate(self) -> float:
        return float(self.consistent.double().mean())

    def reason_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.reason, minlength=len(REASONS))
        return {name: int(c) for name, c in zip(REASONS, counts, strict=True)}


def nearest_colour(images: torch.Tensor, spec: PairingsSpec) -> torch.Tensor:
    """(N, 3, H, W) images -> (N, H, W) index of the nearest colour in `spec.colours`; a pixel
    exactly as near to two colours takes the first of them."""
    rgb = spec.rgb().to(images)  # (K, 3)
    d = ((images[:, None] - rgb[None, :, :, None, None]) ** 2).sum(2)  # (N, K, H, W)
    return d.argmin(1)


def consistency(images: torch.Tensor, spec: PairingsSpec) -> ConsistencyResult:
    """Judge every image of a batch.

    Args:
        images: (N, 3, 2q, 2q) images, any real values (nearest colour decides).
        spec: the dataset's rules.
    """
    check_shape(images, spec)
    n, k = images.shape[0], len(spec.colours)
    labels = nearest_colour(images.float(), spec)  # (N, H, W)
    blocks = spec.quadrants(labels)  # (N, Q, 2, 2)
    if spec.layout == "rows":
        blocks = blocks.transpose(-1, -2)  # make column 0 the key, column 1 the value
    key, value = blocks[..., 0], blocks[..., 1]  # (N, Q, 2) each
    valid = (key[..., 0] == key[..., 1]) & (value[..., 0] == value[..., 1])  # (N, Q)
    code = key[..., 0] * k + value[..., 0]  # (N, Q) ordered colour pair

    # in_type[c, j]: ordered colour pair c is a pairing of pattern type j.
    idx = {c: i for i, c in enumerate(spec.colours)}
    in_type = torch.zeros(k * k, len(spec.pattern_types), dtype=torch.bool)
    for j, ptype in enumerate(spec.pattern_types):
        for kc, vc in ptype:
            in_type[idx[kc] * k + idx[vc], j] = True
    in_type = in_type.to(labels.device)
    per_quadrant = in_type[code]  # (N, Q, n_types)
    known = per_quadrant.any(-1)  # (N, Q)
    one_type = per_quadrant.all(1).any(-1)  # (N,)

    all_valid = valid.all(1)
    reason = torch.full((n,), REASONS.index("mixed_types"), device=labels.device)
    reason[one_type] = REASONS.index("consistent")
    reason[all_valid & ~known.all(1)] = REASONS.index("unknown_pairing")
    reason[~all_valid] = REASONS.index("invalid_quadrant")
    reason[~torch.isfinite(images).flatten(1).all(1)] = REASONS.index("not_finite")
    return ConsistencyResult(reason == 0, reason)


def check_shape(images: torch.Tensor, spec: PairingsSpec) -> None:
    from mosaicdiff.errors import check

    want = (3, spec.side, spec.side)
    check(
        images.ndim == 4 and tuple(images.shape[1:]) == want,
        f"images of shape {tuple(images.shape)} do not fit the pairings spec (N, {want})",
    )


# --- the random baseline --------------------------------------------------------------------


ENUMERATE_LIMIT = 200_000  # most assignments `random_baseline_exact` puts through the metric


def enumerates(spec: PairingsSpec) -> bool:
    """Whether `random_baseline_exact` enumerates `spec`'s assignments (else it uses
    inclusion-exclusion)."""
    return len(spec.pairings) ** spec.n_quadrants <= ENUMERATE_LIMIT


def random_baseline_exact(spec: PairingsSpec) -> float:
    """P(consistent) when every quadrant draws a uniform pairing among `spec.pairings`.

    Enumerates every assignment through the metric itself when there are at most
    `ENUMERATE_LIMIT`; otherwise uses inclusion-exclusion over pattern types, which is exact too:
    P = sum over non-empty type sets A of (-1)^(|A|+1) (|shared pairings of A| / P)^Q.
    """
    n_pairings, n_q = len(spec.pairings), spec.n_quadrants
    if enumerates(spec):
        rows = torch.tensor(list(product(range(n_pairings), repeat=n_q)))
        return consistency(spec.render(rows), spec).rate
    members = [set(m) for m in spec.type_members()]
    total = 0.0
    for size in range(1, len(members) + 1):
        for subset in combinations(members, size):
            shared = set.intersection(*subset)
            total += (-1) ** (size + 1) * (len(shared) / n_pairings) ** n_q
    return total


def random_baseline_monte_carlo(
    spec: PairingsSpec, n_runs: int = 100, n_per_run: int = 10_000, seed: int = 0
) -> dict:
    """The paper's procedure: `n_runs` runs of `n_per_run` random images; mean rate and spread."""
    g = torch.Generator().manual_seed(seed)
    rates = []
    for _ in range(n_runs):
        rows = torch.randint(len(spec.pairings), (n_per_run, spec.n_quadrants), generator=g)
        rates.append(consistency(spec.render(rows), spec).rate)
    return summarize_rates(rates, [n_per_run] * n_runs)


def summarize_rates(rates: list[float], counts: list[int]) -> dict:
    """Mean, standard deviation, standard error and a 95 % interval of per-run rates, each of
    `counts` samples (`stats.mean_ci`), and the rates themselves."""
    return {**mean_ci(rates, counts), "rates": [float(x) for x in rates]}
