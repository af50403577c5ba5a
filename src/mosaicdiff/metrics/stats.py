"""Intervals of rates. `mean_ci`: the mean of a handful of rates (one per sampling run, or per
training seed) with a 95 % Student-t interval; with 5 runs a normal interval (1.96 standard
errors) covers the true rate only about 88 % of the time, and with 2 runs about 70 %, where the
t interval covers it 95 %. Given the samples behind each rate, the interval also covers the
Wilson interval of the pooled rate: runs that happen to agree (0 of 200 consistent in each)
have no spread, yet their 400 samples leave the rate uncertain. `wilson_interval`: one
proportion of many samples (a machine's consistent samples).
"""

from __future__ import annotations

import math

import numpy as np

# Stored results carry this, so results with an older interval (normal; t alone, which is
# [0, 0] for runs that all had rate 0) are measured again.
CI_METHOD = "student-t+wilson"

# Two-sided 95 % Student-t quantiles for 1..30 degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip
Z975 = 1.959964


def t95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom: the table to 30,
    beyond it the Cornish-Fisher expansion about the normal quantile (within 1e-4)."""
    if df <= len(T95):
        return T95[df - 1]
    z, v = Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def mean_ci(values, counts=None) -> dict:
    """Mean, standard deviation, standard error and 95 % t interval of `values`, each in
    [0, 1]; the interval is clipped to [0, 1] (over few values it can overshoot what a rate
    can be). One value has no spread: its std and se are None, and so is its interval unless
    `counts` are given.

    Args:
        values: rates, one per sampling run or training seed.
        counts: with rates of samples, how many samples each rate is of: the interval is
            widened to cover the Wilson interval of the pooled rate (alone, for one value).
    """
    v = np.asarray(values, dtype=np.float64)
    mean, n = float(v.mean()), len(v)
    std = se = ci95 = None
    if n >= 2:
        std = float(v.std(ddof=1))
        se = std / math.sqrt(n)
        half = t95(n - 1) * se
        ci95 = [max(mean - half, 0.0), min(mean + half, 1.0)]
    if counts is not None:
        c = np.asarray(counts, dtype=np.float64)
        low, high = wilson_interval(round(float((v * c).sum())), round(float(c.sum())))
        ci95 = [low, high] if ci95 is None else [min(ci95[0], low), max(ci95[1], high)]
    return {"mean": mean, "std": std, "se": se, "ci95": ci95, "n": n, "ci_method": CI_METHOD}


def mean_sd(values) -> dict:
    """Mean and standard deviation of a metric over seeds, and over how many: seeds where it is
    None (undefined there, such as the mosaic ratio of a seed whose samples are all copies) are
    left out. No seed with a value: mean None; one: std None."""
    v = [float(x) for x in values if x is not None]
    n = len(v)
    mean = float(np.mean(v)) if n else None
    return {"mean": mean, "std": float(np.std(v, ddof=1)) if n > 1 else None, "n": n}


def wilson_interval(successes: int, n: int, z: float = Z975) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
