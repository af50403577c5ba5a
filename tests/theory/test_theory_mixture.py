"""The streamed Gaussian-mixture posterior (theory/mixture.py) against a direct computation."""

import torch

from mosaicdiff.theory.mixture import gaussian_posterior


def direct(q, p, values, a, b2, log_mult):
    """Unstreamed reference: full distances, torch.logsumexp, torch.softmax."""
    d2 = ((q[:, :, None] - a * p[:, None]) ** 2).sum(-1)  # (G, Q, M)
    logits = -d2 / (2 * b2) + log_mult[:, None] + (q * q).sum(-1)[..., None] / (2 * b2)
    return torch.logsumexp(logits, -1), torch.softmax(logits, -1) @ values


def test_chunked_log_sum_exp_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 37, 5, generator=g, dtype=torch.float64)
    p = torch.randn(3, 101, 5, generator=g, dtype=torch.float64)
    values = torch.randn(3, 101, 2, generator=g, dtype=torch.float64)
    log_mult = torch.rand(3, 101, generator=g, dtype=torch.float64).log()
    for a, b2 in [(0.99, 1e-3), (0.5, 0.75), (0.01, 0.9999)]:
        ref = direct(q, p, values, a, b2, log_mult)
        whole = gaussian_posterior(q, p, values, a, b2, log_mult, budget=10**9)
        tiny = gaussian_posterior(q, p, values, a, b2, log_mult, budget=60)  # chunks of 6 and 3
        for got in (whole, tiny):
            torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-9)
            torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-12)


def test_sharp_posterior_does_not_overflow():
    """At t = 0 (b^2 = 1e-4) the logits reach ~1e4; the running max keeps exp finite."""
    p = torch.tensor([[[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    q = p[:, [2]] + 1e-3
    lse, mean = gaussian_posterior(q, p, p, a=1.0, b2=1e-4, budget=1)
    assert torch.isfinite(lse).all()
    torch.testing.assert_close(mean, p[:, [2]])
