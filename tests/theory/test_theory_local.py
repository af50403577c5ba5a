"""LS, ELS and boundary-broken ELS (K&G Secs. 3-4) against brute force and their limits."""

import pytest
import torch
import torch.nn.functional as F

from mosaicdiff.denoiser import Denoiser
from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import UserError
from mosaicdiff.theory import (
    ELS,
    MACHINES,
    BoundaryBrokenELS,
    IdealScore,
    LocalScore,
    build_machine,
)

SCHEDULE = Schedule.linear()


def data(n=6, c=2, h=5, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, c, h, w, generator=g) * 2 - 1
    x_t = torch.randn(3, c, h, w, generator=g, dtype=torch.float64)
    return images, x_t


def brute_force_x0(images, x_t, t, k, boundary, same, s=1):
    """Cell by cell: softmax over the windows `same(x, y)` allows, windows padded as told; each
    cell is the s x s block at the centre of its k x k window."""
    ab = float(SCHEDULE.alpha_bar[t])
    m = (k - s) // 2
    mode = "circular" if boundary == "circular" else "constant"
    pad = lambda x: F.pad(x.double(), (m, m, m, m), mode=mode)  # noqa: E731
    xp, ip = pad(x_t), pad(images)
    _, _, h, w = x_t.shape
    cells = [(i, j) for i in range(0, h, s) for j in range(0, w, s)]
    out = torch.empty_like(x_t)
    for i, j in cells:
        q = xp[:, :, i : i + k, j : j + k].flatten(1)  # (B, d)
        p = torch.cat(
            [ip[:, :, u : u + k, v : v + k].flatten(1) for u, v in cells if same((i, j), (u, v))]
        )
        logits = -(torch.cdist(q, ab**0.5 * p) ** 2) / (2 * (1 - ab))
        centre = p.reshape(p.shape[0], -1, k, k)[:, :, m : m + s, m : m + s]
        out[:, :, i : i + s, j : j + s] = torch.einsum(
            "bn,nchw->bchw", torch.softmax(logits, 1), centre
        )
    return out


def pads(x, h, k):
    m = k // 2
    return (max(0, m - x), max(0, x + m - (h - 1)))


@pytest.mark.parametrize("t", [10, 300, 900])
def test_machines_match_brute_force(t):
    images, x_t = data(n=4, h=4, w=4)
    k, h = 3, 4
    cases = [
        (LocalScore(images, SCHEDULE, k), "circular", lambda x, y: x == y),
        (ELS(images, SCHEDULE, k), "circular", lambda x, y: True),
        (
            BoundaryBrokenELS(images, SCHEDULE, k),
            "zeros",
            lambda x, y: (
                pads(x[0], h, k) == pads(y[0], h, k) and pads(x[1], h, k) == pads(y[1], h, k)
            ),
        ),
    ]
    ab = float(SCHEDULE.alpha_bar[t])
    for machine, boundary, same in cases:
        x0 = brute_force_x0(images, x_t, t, k, boundary, same)
        want = (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
        torch.testing.assert_close(machine(x_t, torch.tensor([t])), want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("boundary", ["circular", "zeros"])
def test_strided_machines_match_brute_force(boundary):
    """k = 4 windows around 2x2 blocks on a stride-2 grid of 6x6 images."""
    images, x_t = data(n=4, h=6, w=6)
    t = 250
    ab = float(SCHEDULE.alpha_bar[t])
    pad = lambda x: (max(0, 1 - x), max(0, x + 3 - 6))  # noqa: E731  rows padded above/below
    same = (
        (lambda x, y: True)
        if boundary == "circular"
        else (lambda x, y: pad(x[0]) == pad(y[0]) and pad(x[1]) == pad(y[1]))
    )
    x0 = brute_force_x0(images, x_t, t, 4, boundary, same, s=2)
    want = (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
    got = ELS(images, SCHEDULE, 4, stride=2, boundary=boundary)(x_t, torch.tensor([t]))
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_full_image_patches_recover_the_ideal_score():
    """LS with a window covering the image is IS; circular ELS is IS on all circular shifts."""
    images, x_t = data()
    t = torch.tensor([200])
    ideal = IdealScore(images, SCHEDULE)(x_t, t)
    torch.testing.assert_close(LocalScore(images, SCHEDULE, 5)(x_t, t), ideal)
    torch.testing.assert_close(LocalScore(images, SCHEDULE, 9, boundary="zeros")(x_t, t), ideal)
    shifts = torch.cat([images.roll((i, j), (2, 3)) for i in range(5) for j in range(5)])
    torch.testing.assert_close(
        ELS(images, SCHEDULE, 5)(x_t, t), IdealScore(shifts, SCHEDULE)(x_t, t)
    )


def test_els_is_equivariant_and_ls_is_not():
    images, x_t = data(h=6, w=6)
    t = torch.tensor([150])
    shift = lambda x: x.roll((1, 2), (2, 3))  # noqa: E731
    els, ls = ELS(images, SCHEDULE, 3), LocalScore(images, SCHEDULE, 3)
    torch.testing.assert_close(els(shift(x_t), t), shift(els(x_t, t)))
    assert (ls(shift(x_t), t) - shift(ls(x_t, t))).abs().max() > 1e-3
    # stride 2: equivariant under even shifts only
    els2 = ELS(images, SCHEDULE, 4, stride=2)
    even = lambda x: x.roll((2, 4), (2, 3))  # noqa: E731
    torch.testing.assert_close(els2(even(x_t), t), even(els2(x_t, t)))
    assert (els2(shift(x_t), t) - shift(els2(x_t, t))).abs().max() > 1e-3


def test_single_pixel_els_matches_the_analytic_gaussian_posterior():
    """Pixels i.i.d. N(mu, s^2): with k = 1 the ELS mixture is the empirical pixel law, so its
    x0_hat approaches mu + a s^2 / (a^2 s^2 + b^2) (x_t - a mu)."""
    g = torch.Generator().manual_seed(3)
    mu, s = 0.2, 0.3
    images = mu + s * torch.randn(500, 1, 4, 4, generator=g)  # 8,000 pixels
    machine = ELS(images, SCHEDULE, 1)
    x_t = torch.linspace(-1.5, 1.5, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    for t in (300, 600, 900):
        ab = float(SCHEDULE.alpha_bar[t])
        a, b2 = ab**0.5, 1 - ab
        want = mu + a * s * s / (a * a * s * s + b2) * (x_t - a * mu)
        got = machine.x0_hat(x_t, t, a, b2)
        assert (got - want).abs().max() < 0.03, (t, (got - want).abs().max())


def test_patch_size_schedule_picks_the_size_per_step():
    images, x_t = data()
    table = [3 if t < 500 else 5 for t in range(SCHEDULE.T)]
    scheduled = ELS(images, SCHEDULE, table)
    for t, k in ((100, 3), (700, 5)):
        tt = torch.tensor([t])
        torch.testing.assert_close(scheduled(x_t, tt), ELS(images, SCHEDULE, k)(x_t, tt))
    callable_k = ELS(images, SCHEDULE, lambda t: 3 if t < 500 else 5)
    torch.testing.assert_close(
        callable_k(x_t, torch.tensor([700])), scheduled(x_t, torch.tensor([700]))
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patch_size": 2},
        {"patch_size": 3, "stride": 2},
        {"patch_size": 0},
        {"patch_size": [3, 3]},
        {"patch_size": ["a"] * SCHEDULE.T},  # these three were tracebacks from a JSON file
        {"patch_size": [None] * SCHEDULE.T},
        {"patch_size": [3.9] * SCHEDULE.T},  # was cut to 3 without a word
        {"patch_size": "3" * SCHEDULE.T},
    ],
)
def test_bad_patch_settings_raise_user_errors(kwargs):
    images, _ = data()
    with pytest.raises(UserError):
        ELS(images, SCHEDULE, **kwargs)


@pytest.mark.parametrize("name", MACHINES)
def test_every_machine_is_a_denoiser_returning_eps_like_x_t(name):
    images, _ = data(h=4, w=4)
    machine = build_machine(name, images, SCHEDULE, 3)
    assert isinstance(machine, Denoiser)
    x_t = torch.randn(3, 2, 4, 4)
    eps = machine(x_t, torch.tensor([7]))
    assert eps.shape == x_t.shape and eps.dtype == x_t.dtype and torch.isfinite(eps).all()
