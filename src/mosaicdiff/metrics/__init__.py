"""Metrics: consistency of colour-pairing samples; memorization, novelty, diversity and
patch-mosaic scores for any images (`creativity`)."""

from mosaicdiff.metrics.consistency import (
    REASONS,
    ConsistencyResult,
    consistency,
    random_baseline_exact,
    random_baseline_monte_carlo,
    summarize_rates,
)
from mosaicdiff.metrics.creativity import evaluate_creativity

__all__ = [
    "REASONS",
    "ConsistencyResult",
    "consistency",
    "evaluate_creativity",
    "random_baseline_exact",
    "random_baseline_monte_carlo",
    "summarize_rates",
]
