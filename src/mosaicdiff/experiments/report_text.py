"""Sentences of the reproduce report that are computed from the results, never written ahead."""

from __future__ import annotations

from itertools import pairwise, product

from mosaicdiff.data.pairings import PairingsSpec
from mosaicdiff.experiments.report import PAPER

# Most quadrant assignments `alternative_baselines` enumerates (6^4 on the paper's pairings).
ALTERNATIVES_LIMIT = 100_000


def alternative_baselines(spec: PairingsSpec) -> dict[str, float]:
    """Random-baseline values under readings of 'consistent' other than SPEC's, by enumeration
    over quadrant pairings (uniform among the dataset's pairings, as in the paper's procedure)."""
    pairings = spec.pairings
    types = [set(t) for t in spec.pattern_types]
    unordered = [{frozenset(p) for p in t} for t in spec.pattern_types]
    counts = {
        "one pattern type (ours)": 0,
        "key determines value": 0,
        "key and value determine each other": 0,
        "one pattern type, order ignored": 0,
    }
    total = 0
    for combo in product(pairings, repeat=spec.n_quadrants):
        total += 1
        key_to_value, value_to_key = {}, {}
        functional = all(key_to_value.setdefault(k, v) == v for k, v in combo)
        bijective = functional and all(value_to_key.setdefault(v, k) == k for k, v in combo)
        counts["one pattern type (ours)"] += any(set(combo) <= t for t in types)
        counts["key determines value"] += functional
        counts["key and value determine each other"] += bijective
        counts["one pattern type, order ignored"] += any(
            {frozenset(p) for p in combo} <= t for t in unordered
        )
    return {name: 100 * c / total for name, c in counts.items()}


def baseline_note(baseline: dict) -> str:
    from mosaicdiff.config import DataConfig
    from mosaicdiff.config_io import from_dict
    from mosaicdiff.metrics.consistency import enumerates

    spec = PairingsSpec.from_config(from_dict(DataConfig, baseline["key"]["data"]))
    mc = baseline["monte_carlo"]
    ci = "95% CI {:.2f}-{:.2f}".format(*(100 * v for v in mc["ci95"]))
    how = "enumeration through the metric" if enumerates(spec) else "inclusion-exclusion"
    paper = PAPER["random"]
    text = (
        f"\n**Random baseline.** When each quadrant draws a uniform pairing among the "
        f"{len(spec.pairings)} pairings, the exact consistency is {100 * baseline['exact']:.2f}% "
        f"(by {how}); the paper's Monte-Carlo procedure "
        f"({mc['n']} run{'s' * (mc['n'] != 1)} of {baseline['key']['n_per_run']:,} images) gives "
        f"{100 * mc['mean']:.2f}% ({ci}). The paper reports {paper:.2f}% from an "
        "implementation it does not publish."
    )
    if len(spec.pairings) ** spec.n_quadrants > ALTERNATIVES_LIMIT:
        return text + "\n"
    alts = alternative_baselines(spec)
    text += " Other readings of 'consistent' give: "
    text += "; ".join(f"{k}: {v:.2f}%" for k, v in alts.items()) + ". "
    matching = [k for k, v in alts.items() if round(v, 2) == paper]
    if matching:
        return text + f"The paper's {paper:.2f}% is what '{matching[0]}' gives.\n"
    return text + (
        f"None of them gives {paper:.2f}%, so the paper's checker or its random draw must "
        "differ from its description in a way it does not state; the exact value under the "
        "stated definition is the one to compare models against.\n"
    )


def ordering_note(rows: list[dict]) -> str:
    """Whether our numbers keep the order of the paper's (`report.table_rows`' rows), each pair
    of neighbours in the paper's order, and which models land more than 5 points away."""
    ours = {r["model"]: r["ours"] for r in rows if r["model"] in PAPER and r["model"] != "random"}
    order = sorted(ours, key=PAPER.get)
    chain = " < ".join(order)
    pairs = [
        f"{a} < {b}: {'holds' if ours[a] < ours[b] else 'does not hold'}"
        for a, b in pairwise(order)
    ]
    text = f"\n**The paper's ordering** ({chain}): " + (", ".join(pairs) or "one model only") + "."
    far = [f"{a} ({ours[a]:.2f}% vs {PAPER[a]:.2f}%)" for a in ours if abs(ours[a] - PAPER[a]) > 5]
    if far:
        text += " More than 5 points from the paper: " + ", ".join(far) + "."
    return text + "\n"
