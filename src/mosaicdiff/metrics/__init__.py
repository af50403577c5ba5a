"""Metrics: consistency of colour-pairing samples (more arrive with the theory and study work)."""

from mosaicdiff.metrics.consistency import (
    REASONS,
    ConsistencyResult,
    consistency,
    random_baseline_exact,
    random_baseline_monte_carlo,
    summarize_rates,
)

__all__ = [
    "REASONS",
    "ConsistencyResult",
    "consistency",
    "random_baseline_exact",
    "random_baseline_monte_carlo",
    "summarize_rates",
]
