"""Calibration of patch sizes and agreement measures (K&G Sec. 5) on networks whose answer is
known: a machine standing in for the network."""

import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.theory import ELS, IdealScore, PatchSchedule
from mosaicdiff.theory.agreement import eps_agreement, r_squared, sample_agreement
from mosaicdiff.theory.calibrate import calibrate_patch_sizes

SCHEDULE = Schedule.linear()


def images(seed=0):
    return torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_calibration_recovers_the_patch_size_of_a_machine_network():
    schedule = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)  # short, to stay fast
    data = images()
    table = [3 if t < 40 else 5 for t in range(schedule.T)]
    network = ELS(data, schedule, table)
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    cal = calibrate_patch_sizes(
        network, lambda k: ELS(data, schedule, k), schedule, [1, 3, 5], x_T, every=10
    )
    assert cal["steps"][0] == 0 and cal["steps"][-1] == schedule.T - 1
    for t, row in zip(cal["steps"], cal["cosine"], strict=True):
        assert cal["patch_size"][t] == table[t]
        assert max(row) > 1 - 1e-12  # the true size reproduces the network exactly
    assert PatchSchedule.from_json(cal, schedule.T).sizes() == cal["patch_size"]


def test_agreement_of_a_machine_with_itself_is_perfect_and_with_another_is_not():
    schedule = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)  # short, to stay fast
    data = images()
    els, ideal = ELS(data, schedule, 3), IdealScore(data, schedule)
    x_T = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    same = eps_agreement(els, els, schedule, x_T, steps=[0, 50, 99])
    assert min(same["q25"]) > 1 - 1e-12
    assert sample_agreement(els, els, schedule, x_T)["median"] > 1 - 1e-12
    other = sample_agreement(ideal, els, schedule, x_T)
    assert other["median"] < 0.99
    assert other["q25"] <= other["median"] <= other["q75"]


def test_the_eps_trajectory_ends_in_the_networks_own_ddpm_samples():
    # `theory compare` takes the network's samples for r^2 from the end of its eps trajectory
    # rather than drawing them again: that is exact only if the two draws are the same.
    schedule = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    data = images()
    network, machine = ELS(data, schedule, 3), IdealScore(data, schedule)
    x_T = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    reused = eps_agreement(network, machine, schedule, x_T, seed=4, steps=[0, 99])["samples"]
    drawn = sample_agreement(network, machine, schedule, x_T, seed=4)
    assert torch.equal(reused, drawn["samples"][0])
    given = sample_agreement(network, machine, schedule, x_T, seed=4, network_samples=reused)
    assert given["r2"] == drawn["r2"]
    assert not torch.equal(
        reused, sample_agreement(network, machine, schedule, x_T, 5)["samples"][0]
    )


def test_r_squared_is_the_squared_correlation():
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(r_squared(x, 2 * x + 1), torch.ones(4, dtype=torch.float64))
    y = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    want = torch.stack(
        [
            torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] ** 2
            for a, b in zip(x, y, strict=True)
        ]
    )
    torch.testing.assert_close(r_squared(x, y), want)
