"""Sentences of the reproduce report that are computed from the results, never written ahead."""

from __future__ import annotations

from itertools import product

from mosaicdiff.data.pairings import PairingsSpec

PAPER = {"cnn": 10.88, "top1": 21.64, "identity": 25.44, "attn": 64.03}


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
    from mosaicdiff.config import DataConfig, from_dict

    spec = PairingsSpec.from_config(from_dict(DataConfig, baseline["key"]["data"]))
    mc = baseline["monte_carlo"]
    ci = "one run: no interval"  # --runs 1
    if mc["ci95"]:
        ci = "95% CI {:.2f}-{:.2f}".format(*(100 * v for v in mc["ci95"]))
    alts = alternative_baselines(spec) if len(spec.pairings) ** spec.n_quadrants <= 100_000 else {}
    alt_text = "; ".join(f"{k}: {v:.2f}%" for k, v in alts.items())
    return (
        f"\n**Random baseline.** When each quadrant draws a uniform pairing among the "
        f"{len(spec.pairings)} pairings, the exact consistency is {100 * baseline['exact']:.2f}% "
        f"(by enumeration through the metric); the paper's Monte-Carlo procedure "
        f"({mc['n']} run{'s' * (mc['n'] != 1)} of {baseline['key']['n_per_run']:,} images) gives "
        f"{100 * mc['mean']:.2f}% ({ci}). The paper reports 5.38% from an "
        f"implementation it does not publish. Other readings of 'consistent' give: {alt_text}. "
        "None of them gives 5.38%, so the paper's checker or its random draw must differ from "
        "its description in a way it does not state; the exact value under the stated "
        "definition is the one to compare models against.\n"
    )


def ordering_note(configs, table: str) -> str:
    """Whether the paper's ordering holds, and which models land more than 5 points away."""
    import re

    ours = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2:
            ours[cells[0]] = cells[2]
    from mosaicdiff.experiments.report import LABELS

    values = {}
    for arch in configs:
        v = ours.get(LABELS.get(arch, arch))
        if v and re.match(r"^[\d.]+$", v):
            values[arch] = float(v)
    lines = ["\n**The paper's ordering** (cnn < top1 and identity < attn): "]
    checks = []
    if {"cnn", "top1"} <= values.keys():
        checks.append(("cnn < top1", values["cnn"] < values["top1"]))
    if {"cnn", "identity"} <= values.keys():
        checks.append(("cnn < identity", values["cnn"] < values["identity"]))
    if {"top1", "attn"} <= values.keys():
        checks.append(("top1 < attn", values["top1"] < values["attn"]))
    if {"identity", "attn"} <= values.keys():
        checks.append(("identity < attn", values["identity"] < values["attn"]))
    lines.append(
        ", ".join(f"{name}: {'holds' if ok else 'does not hold'}" for name, ok in checks) + "."
    )
    far = [
        f"{a} ({values[a]:.2f}% vs {PAPER[a]:.2f}%)"
        for a in values
        if a in PAPER and abs(values[a] - PAPER[a]) > 5
    ]
    if far:
        lines.append(" More than 5 points from the paper: " + ", ".join(far) + ".")
    return "".join(lines) + "\n"
