"""The spec's predictions on the colour pairings (SPEC Sec. 2), at test scale.

The stride-2, 2x2-patch ELS machine estimates every quadrant from itself alone, so quadrants of
its samples are independent (and its consistency is the random baseline's); the attention
machine's in-image mixture couples them, and consistency rises with its weight `lam`.
Fast settings: 300 samples, 25 DDIM steps (the full 1000-step check is scripts/theory_checks.py).
"""

import pytest
import torch

from mosaicdiff.config import DataConfig
from mosaicdiff.data import load_dataset
from mosaicdiff.diffusion import Schedule
from mosaicdiff.metrics.consistency import consistency
from mosaicdiff.sampling import ddim_sample
from mosaicdiff.theory import ELS, AttentionELS, IdealScore
from mosaicdiff.theory.report import independence_p_value, quadrant_codes

SCHEDULE = Schedule.linear()


@pytest.fixture(scope="module")
def pairings():
    return load_dataset(DataConfig(n_images=512))


def draw(machine, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ddim_sample(machine, torch.randn(n, 3, 4, 4, generator=g), g, SCHEDULE, steps=25)


def test_strided_els_makes_independent_quadrants(pairings):
    spec = pairings.info["spec"]
    els = draw(ELS(pairings.images, SCHEDULE, 2, stride=2))
    codes = quadrant_codes(els, spec)
    assert len(torch.unique(codes)) <= 6  # every quadrant is one of the six training blocks
    p_values = [independence_p_value(codes[:, i], codes[:, j]) for i, j in ((0, 1), (0, 3), (1, 2))]
    assert min(p_values) > 1e-3, p_values
    # the same test does detect dependence: ideal-score samples are whole training images
    ideal = quadrant_codes(draw(IdealScore(pairings.images, SCHEDULE)), spec)
    assert independence_p_value(ideal[:, 0], ideal[:, 1]) < 1e-6


def test_attention_with_lam_zero_is_els(pairings):
    x_t = torch.randn(20, 3, 4, 4, dtype=torch.float64)
    els = ELS(pairings.images, SCHEDULE, 2, stride=2)
    for attention in ("soft", "top1"):
        attn = AttentionELS(pairings.images, SCHEDULE, 2, stride=2, lam=0.0, attention=attention)
        for t in (0, 400, 999):
            tt = torch.tensor([t])
            torch.testing.assert_close(attn(x_t, tt), els(x_t, tt), rtol=0, atol=0)


def test_consistency_rises_with_lam(pairings):
    spec = pairings.info["spec"]
    for attention in ("soft", "top1"):
        rates = []
        for lam in (0.0, 0.5, 0.95):
            machine = AttentionELS(
                pairings.images, SCHEDULE, 2, stride=2, lam=lam, attention=attention
            )
            rates.append(consistency(draw(machine), spec).rate)
        # binomial s.e. at n = 300 is at most 0.029: demand clear, not marginal, increases
        assert rates[1] > rates[0] + 0.06 and rates[2] > rates[1] + 0.06, (attention, rates)
