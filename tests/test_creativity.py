import json
import math

import pytest
import torch

from mosaicdiff.errors import UserError
from mosaicdiff.metrics.creativity import (
    cover_map,
    creativity_scores,
    evaluate_creativity,
    nearest,
    pairwise_stats,
)


@pytest.fixture
def train():
    """20 random 1x8x8 images in [-1, 1]: no patch of one recurs elsewhere by chance."""
    return torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _mosaic(train):
    """Quadrants of training images 0, 1, 2, 3, each in its own place."""
    x = torch.empty(1, 1, 8, 8)
    for i, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[..., r : r + 4, c : c + 4] = train[i, :, r : r + 4, c : c + 4]
    return x


def test_nearest_matches_brute_force_and_chunking_does_not_matter():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(13, 7, generator=g), torch.randn(29, 7, generator=g)
    want = (torch.cdist(q.double(), k.double()) / math.sqrt(7)).sort(1)
    for chunk in (1, 4, 1000):
        d, i = nearest(q, k, k=3, chunk=chunk)
        torch.testing.assert_close(d, want.values[:, :3])
        assert torch.equal(i, want.indices[:, :3])
    d, i = nearest(q, k[:1], k=2)  # one key: the second neighbour is missing
    assert torch.isinf(d[:, 1]).all() and (i[:, 1] == -1).all()


def test_exact_copy_is_memorized_at_distance_zero(train):
    s = creativity_scores(train[7:8].clone(), train)
    assert s.nearest.item() == 0.0 and s.nearest_index.item() == 7
    assert s.copy.item() and s.memorized.item() and math.isnan(s.mosaic_ratio.item())
    assert s.patch_distance.item() == 0.0


def test_a_training_set_with_duplicates_still_shows_near_copies(train):
    # The pairings hold each of 48 images many times: the second nearest training image was the
    # nearest again, and a sample 0.05 from one was never memorized.
    near = train[7:8] + 0.05 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    twice = torch.cat([train, train])
    s = creativity_scores(near, twice)
    assert s.memorized.item() and not s.copy.item() and s.nearest_index.item() == 7
    assert s.second.item() > 3 * s.nearest.item()  # the second *distinct* image
    r = evaluate_creativity(near, twice)
    assert r["memorization_rate"] == 1.0 and (r["n_train"], r["n_train_distinct"]) == (40, 20)


def test_quadrant_mosaic_is_explained_by_patches_but_copies_no_image(train):
    s = creativity_scores(_mosaic(train), train, patch=3)
    assert s.cover_distance.item() < 1e-6  # every pixel lies in a 3x3 patch of one quadrant
    assert s.nearest.item() > 0.3  # three quarters differ from any one training image
    assert s.patch_distance.item() < 0.5 * s.nearest.item()
    assert not s.memorized.item() and s.mosaic_ratio.item() < 1e-5
    assert evaluate_creativity(_mosaic(train), train)["mosaic_rate"] == 1.0


def test_noise_is_novel_and_not_memorized(train):
    noise = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    r = evaluate_creativity(noise, train)
    assert r["novelty"] > 0.5 and r["memorization_rate"] == 0.0 and r["copy_rate"] == 0.0
    assert r["cover_distance"] > 0.1 and r["mosaic_rate"] == 0.0
    assert r["duplicate_pair_rate"] == 0.0 and r["diversity"] > 1.0


def test_noise_is_no_mosaic_of_the_digits_but_a_digit_held_out_is():
    # By the ratio alone, uniform noise was 100 % mosaics of the digits: some of their 3x3
    # patches lie near any 3x3 of noise. The cover distance tells the two apart.
    from mosaicdiff.config import DataConfig
    from mosaicdiff.data import load_dataset

    digits = load_dataset(DataConfig(kind="digits")).images
    train, held_out = digits[:1500], digits[1500:1600]
    noise = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = evaluate_creativity(noise, train)
    assert r["mosaic_ratio"] < 1 / 3 and r["cover_distance"] > 0.15 and r["mosaic_rate"] == 0
    r = evaluate_creativity(held_out, train)
    assert r["cover_distance"] < 0.05 and r["mosaic_rate"] > 0.95 and r["mosaic_atol"] == 0.1


def test_chunked_equals_unchunked_and_results_are_json(train):
    samples = torch.cat([train[:3], _mosaic(train), torch.randn(6, 1, 8, 8)])
    small = evaluate_creativity(samples, train, chunk=16)
    big = evaluate_creativity(samples, train, chunk=100_000)
    assert small.keys() == big.keys()
    for key in small:
        assert small[key] == pytest.approx(big[key], abs=1e-9), key
    assert json.loads(json.dumps(small)) == small
    assert small["copy_rate"] == pytest.approx(0.3) and small["memorization_rate"] >= 0.3


def test_pairwise_stats_and_duplicates():
    x = torch.zeros(4, 5)
    x[3] = 2.0  # three identical samples, one at RMS distance 2 from them
    mean, dup = pairwise_stats(x, duplicate_atol=0.1)
    assert mean == pytest.approx(3 * 2.0 / 6) and dup == pytest.approx(3 / 6)
    assert pairwise_stats(x[:1], 0.1) == (None, None)


def test_cover_map_takes_the_best_patch_over_each_pixel():
    pmap = torch.tensor([[[0.0, 5.0], [5.0, 5.0]]])  # 2x2 patches of a 3x3 image
    cover = cover_map(pmap, 2)
    assert cover.shape == (1, 3, 3)
    assert torch.equal(cover[0], torch.tensor([[0.0, 0, 5], [0, 0, 5], [5, 5, 5]]))


def test_one_training_image_only_the_copy_rule_applies(train):
    s = creativity_scores(train[1:3], train[:1])
    assert not s.memorized.any()
    with pytest.raises(UserError):
        creativity_scores(train[:1], train, patch=9)


def test_samples_that_diverged_are_left_out_and_counted(train):
    samples = torch.cat([train[:3], _mosaic(train), torch.randn(6, 1, 8, 8)])
    bad = samples.clone()
    bad[1, 0, 2, 5], bad[7, 0, 0, 0] = float("nan"), float("inf")  # a copy and a noise image
    kept = torch.cat([samples[:1], samples[2:7], samples[8:]])
    got, want = evaluate_creativity(bad, train), evaluate_creativity(kept, train)
    assert got.pop("n_not_finite") == 2 and want.pop("n_not_finite") == 0
    assert got == pytest.approx(want) and got["n_samples"] == 8
    assert math.isfinite(got["novelty"]) and got["copy_rate"] == pytest.approx(2 / 8)
    with pytest.raises(UserError, match="all 10 samples are NaN or infinite"):
        evaluate_creativity(torch.full_like(samples, float("nan")), train)
