import pytest
import torch

from mosaicdiff.config import DataConfig
from mosaicdiff.data.pairings import PairingsSpec
from mosaicdiff.metrics import (
    REASONS,
    consistency,
    random_baseline_exact,
    random_baseline_monte_carlo,
)

SPEC = PairingsSpec.from_config(DataConfig())
# Indices into SPEC.pairings: 0 red-green, 1 yellow-blue, 2 red-yellow, 3 green-blue,
# 4 red-blue, 5 green-yellow.


def judge(rows):
    return consistency(SPEC.render(torch.tensor(rows)), SPEC)


def test_hand_made_consistent_and_inconsistent_images():
    res = judge(
        [[0, 1, 1, 0], [2, 2, 3, 2], [4, 5, 4, 4], [0, 0, 0, 0], [0, 2, 0, 0], [1, 3, 5, 1]]
    )
    assert res.consistent.tolist() == [True, True, True, True, False, False]
    assert [REASONS[r] for r in res.reason.tolist()] == ["consistent"] * 4 + ["mixed_types"] * 2


def test_invalid_quadrant_and_unknown_pairing():
    img = SPEC.render(torch.tensor([[0, 1, 1, 0]]))
    broken = img.clone()
    broken[0, :, 0, 0] = torch.tensor([-1.0, -1, 1])  # one key pixel of quadrant 0 turns blue
    swapped = img.clone()
    swapped[0, :, 0:2, 0:2] = swapped[0, :, 0:2, 0:2].flip(-1)  # green -> red: not a pairing
    res = consistency(torch.cat([broken, swapped]), SPEC)
    assert [REASONS[r] for r in res.reason.tolist()] == ["invalid_quadrant", "unknown_pairing"]


def test_small_noise_keeps_the_verdict_large_noise_changes_it():
    rows = torch.tensor([[0, 1, 1, 0], [0, 2, 0, 0]])
    images = SPEC.render(rows)
    g = torch.Generator().manual_seed(0)
    noisy = images + 0.3 * torch.randn(images.shape, generator=g)
    assert consistency(noisy, SPEC).consistent.tolist() == [True, False]
    # Pull a key pixel halfway to another colour plus a bit: its nearest colour changes.
    moved = images.clone()
    moved[0, :, 0, 0] = 0.45 * torch.tensor([1.0, -1, -1]) + 0.55 * torch.tensor([-1.0, -1, 1])
    assert not consistency(moved, SPEC).consistent[0]


def test_rows_layout_is_judged_by_rows():
    spec = PairingsSpec.from_config(DataConfig(layout="rows"))
    images = spec.render(torch.tensor([[0, 1, 1, 0]]))
    assert consistency(images, spec).consistent.all()
    assert not consistency(images.transpose(-1, -2), spec).consistent.any()


def test_exact_random_baseline_is_3_over_81():
    assert random_baseline_exact(SPEC) == pytest.approx(3 / 81, abs=1e-12)


def test_inclusion_exclusion_equals_enumeration(monkeypatch):
    import importlib

    module = importlib.import_module("mosaicdiff.metrics.consistency")  # not the function

    spec = PairingsSpec.from_config(DataConfig(quadrants_per_side=2))
    assert module.enumerates(spec)
    enumerated = random_baseline_exact(spec)
    monkeypatch.setattr(module, "ENUMERATE_LIMIT", 0)
    assert not module.enumerates(spec)
    assert random_baseline_exact(spec) == pytest.approx(enumerated, abs=1e-12)


def test_monte_carlo_baseline_within_three_standard_errors():
    mc = random_baseline_monte_carlo(SPEC, n_runs=20, n_per_run=5000, seed=1)
    assert abs(mc["mean"] - 3 / 81) < 3 * mc["se"] + 1e-12
    assert mc["se"] > 0


def test_intervals_of_rates_stay_within_0_and_1():
    from mosaicdiff.metrics.consistency import summarize_rates
    from mosaicdiff.metrics.stats import mean_ci

    near_zero = summarize_rates([0.0, 0.0, 0.0, 0.3], [10] * 4)  # the t interval reaches below 0
    assert near_zero["ci95"][0] == 0.0 and 0.075 < near_zero["ci95"][1] < 1
    seeds = mean_ci([0.99, 1.0, 0.9])  # the t interval over 3 seeds reaches above 1
    assert seeds["ci95"][1] == 1.0 and seeds["ci95"][0] < seeds["mean"]
    one = mean_ci([0.3])  # no spread and no counts: no interval (it was [0.3, 0.3])
    assert one["ci95"] is None and one["std"] is None and one["mean"] == 0.3


def test_runs_without_spread_still_get_the_interval_their_samples_allow():
    # Probe 63: 2 runs of 200 samples, none consistent, had the 95 % interval [0, 0]
    from mosaicdiff.metrics.consistency import summarize_rates
    from mosaicdiff.metrics.stats import mean_ci, wilson_interval

    none = summarize_rates([0.0, 0.0], [200, 200])
    assert none["ci95"] == pytest.approx(list(wilson_interval(0, 400)))
    assert none["ci95"][1] > 0.009  # 3.7/400 is about the 'rule of three' bound
    one = summarize_rates([0.3], [1000])  # one run: the binomial interval of its samples
    assert one["ci95"] == pytest.approx(list(wilson_interval(300, 1000))) and one["std"] is None
    # a t interval wider than the pooled Wilson one is kept as it is
    spread = [0.1, 0.5, 0.3]
    assert summarize_rates(spread, [1000] * 3)["ci95"] == mean_ci(spread)["ci95"]
    # and one narrower (runs that agree by chance) is widened to it
    agree = summarize_rates([0.3, 0.3001, 0.2999], [100] * 3)
    assert agree["ci95"] == pytest.approx(list(wilson_interval(90, 300)))


def test_the_interval_over_five_runs_covers_the_true_rate_95_percent_of_the_time():
    # Probe 49: 1.96 standard errors over the quick preset's 5 runs covered it 89 % of the time.
    from mosaicdiff.metrics.stats import mean_ci, t95

    g = torch.Generator().manual_seed(0)
    rates = 0.5 + 0.05 * torch.randn(4000, 5, generator=g, dtype=torch.float64)
    cis = [mean_ci(r.tolist())["ci95"] for r in rates]
    covered = sum(lo <= 0.5 <= hi for lo, hi in cis) / len(cis)
    assert 0.94 < covered < 0.96
    # beyond the table: the expansion about the normal quantile, against the exact quantiles
    for df, exact in [(30, 2.0423), (31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799)]:
        assert abs(t95(df) - exact) < 1e-3


def test_a_sample_with_a_nan_or_inf_pixel_is_never_consistent():
    img = SPEC.render(torch.tensor([[0, 1, 1, 0], [2, 2, 3, 2], [4, 5, 4, 4]]))
    assert consistency(img, SPEC).consistent.all()
    img[0, 1, 0, 0], img[1, :, 3, 3] = float("nan"), float("-inf")  # the rest still pairs well
    res = consistency(img, SPEC)
    assert [REASONS[r] for r in res.reason.tolist()] == ["not_finite"] * 2 + ["consistent"]
    assert res.rate == pytest.approx(1 / 3)


def test_a_metric_over_seeds_leaves_out_the_seeds_where_it_is_undefined():
    # evaluate dropped such a metric altogether while the study table averaged the rest
    from mosaicdiff.metrics.stats import mean_sd

    assert mean_sd([0.2, None, 0.4]) == pytest.approx({"mean": 0.3, "std": 0.02**0.5, "n": 2})
    assert mean_sd([0.25]) == {"mean": 0.25, "std": None, "n": 1}
    assert mean_sd([None, None]) == {"mean": None, "std": None, "n": 0}
