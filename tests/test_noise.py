import math

import pytest
import torch
from scipy import stats

from mosaicdiff.noise import (
    Counters,
    check_counter_range,
    counter_normal,
    draw_key,
    seed_key,
    step_noise,
    threefry2x32,
)


def _i32(v: int) -> torch.Tensor:
    return torch.tensor([v - 2**32 if v >= 2**31 else v], dtype=torch.int32)


# Threefry-2x32-20 known answers (key, counter) -> output, from Random123's kat_vectors.
KAT = [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,ctr,expected", KAT)
def test_threefry_known_answers(key, ctr, expected):
    out = threefry2x32(_i32(key[0]), _i32(key[1]), _i32(ctr[0]), _i32(ctr[1]))
    assert [int(o) & 0xFFFFFFFF for o in out] == list(expected)


def test_counter_normals_are_standard_normal_and_uncorrelated():
    key = draw_key(torch.Generator().manual_seed(0))
    index = torch.arange(20_000, dtype=torch.int32)
    z = counter_normal(key, 7, index, 48)  # (20000, 48): 960k values
    flat = z.flatten().double()
    n = flat.numel()
    assert abs(flat.mean().item()) < 5 / math.sqrt(n)
    assert abs(flat.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(flat[:100_000].numpy(), "norm").pvalue > 1e-3
    # The cosine and sine halves of a pair, neighbouring values, and the next step: no correlation.
    z_next = counter_normal(key, 8, index, 48)
    for a, b in ((z[:, :24], z[:, 24:]), (z[:, :-1], z[:, 1:]), (z, z_next)):
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(r) < 5 / math.sqrt(a.numel())


def test_noise_depends_only_on_key_step_and_index():
    key = draw_key(torch.Generator().manual_seed(1))
    whole = counter_normal(key, 3, torch.arange(100, dtype=torch.int32), 12)
    part = counter_normal(key, 3, torch.arange(40, 60, dtype=torch.int32), 12)
    assert torch.equal(whole[40:60], part)  # chunking changes nothing
    other_key = draw_key(torch.Generator().manual_seed(2))
    assert not torch.equal(whole, counter_normal(other_key, 3, torch.arange(100).int(), 12))


def test_step_noise_threefry_is_seeded_by_the_generator_and_torch_is_randn():
    x = torch.zeros(8, 3, 4, 4)
    a = step_noise("threefry", torch.Generator().manual_seed(4), x, 1000)
    b = step_noise("threefry", torch.Generator().manual_seed(4), x, 1000)
    assert a(5).shape == x.shape and torch.equal(a(5), b(5)) and not torch.equal(a(5), a(6))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    z = step_noise("torch", g1, x, 1000)(5)
    assert torch.equal(z, torch.randn(x.shape, generator=g2))


def test_counter_range_and_bad_kind_are_rejected():
    check_counter_range(10, 3 * 5 * 5, 1000)  # an odd count is fine
    with pytest.raises(ValueError, match="counters under 2"):
        check_counter_range(10, 48, 10**8)
    with pytest.raises(ValueError, match="not one of"):
        step_noise("philox", torch.Generator(), torch.zeros(2, 4), 10)


def test_seed_keys_are_fixed_by_their_seeds_and_differ_between_them():
    assert torch.equal(seed_key(0, 1), seed_key(0, 1)) and seed_key(0, 1).dtype == torch.int32
    keys = {tuple(seed_key(*s).tolist()) for s in [(0,), (0, 0), (0, 1), (1, 0), (1,), (10, 1)]}
    assert len(keys) == 6  # (0, 1) and (1, 0) too: the order counts


def test_counters_give_each_sample_its_own_noise_whatever_the_batch():
    keys = torch.stack([seed_key(3, 0), seed_key(3, 5)])
    whole = Counters.of_seeds(keys, 0, 10)  # samples 0-9 of seeds 0 and 5, seed by seed
    part = Counters.of_seeds(keys, 4, 3)  # samples 4-6 of each
    assert whole.key.shape == (20, 2) and whole.index.tolist() == [*range(10)] * 2
    z, z_part = whole.normal(7, 12).view(2, 10, 12), part.normal(7, 12).view(2, 3, 12)
    assert torch.equal(z[:, 4:7], z_part)
    alone = Counters.of_seeds(keys[1:], 4, 3).normal(7, 12)  # seed 5 without seed 0 beside it
    assert torch.equal(alone, z_part[1]) and not torch.equal(z[0], z[1])
    x_T = whole.initial((3, 2, 2), T=50)  # the counter of t = T: no step's
    assert torch.equal(x_T.view(20, 12), whole.normal(50, 12))
    assert not any(torch.equal(whole.normal(t, 12), x_T.view(20, 12)) for t in range(50))
    keys_back, first = part.per_seed(2)
    assert torch.equal(keys_back, keys) and first.tolist() == [4, 4]
    drawn = Counters.drawn(torch.Generator().manual_seed(0), 6)  # a generator's: one key, 0..5
    assert drawn.per_seed(2)[1].tolist() == [0, 3]
    with pytest.raises(ValueError, match="not a key and a run of indices per seed"):
        Counters(whole.key, whole.index.flip(0)).per_seed(2)


def test_step_noise_reads_counters_and_refuses_them_for_torch_or_another_batch():
    counters = Counters.of_seeds(seed_key(1, 2)[None], 5, 4)
    x = torch.zeros(4, 3, 2, 2)
    assert torch.equal(
        step_noise("threefry", counters, x, 10)(3), counters.normal(3, 12).view(x.shape)
    )
    for kind, rows in (("torch", 4), ("threefry", 3)):
        with pytest.raises(ValueError, match="counters are Threefry's, one per sample"):
            step_noise(kind, counters, torch.zeros(rows, 3, 2, 2), 10)


def test_an_odd_number_of_values_is_the_next_even_ones_but_the_last():
    key, index = seed_key(0), torch.arange(5, dtype=torch.int32)
    odd, even = counter_normal(key, 3, index, 27), counter_normal(key, 3, index, 28)
    assert odd.shape == (5, 27) and torch.equal(odd, even[:, :27])
