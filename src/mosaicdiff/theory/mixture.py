"""Posterior means under an isotropic Gaussian mixture, streamed over its components.

Every machine reduces to one computation (Kamb & Ganguli 2024, Eqs. 6 and 10-12): a noisy
vector q (an image or a patch of x_t) and clean candidates p_m (training images or patches) with
multiplicities n_m give the forward-process likelihoods N(q; a p_m, b^2 I), a = sqrt(alpha_bar_t),
b^2 = 1 - alpha_bar_t, and the posterior weights

    w_m(q) = softmax_m( log n_m - |q - a p_m|^2 / (2 b^2) ).

Expanding |q - a p|^2 = |q|^2 - 2a <q, p> + a^2 |p|^2 and dropping |q|^2 (the same for every m)
leaves logits (2a <q, p> - a^2 |p|^2) / (2 b^2) + log n, whose inner products for all pairs are
one batched matmul. The log-sum-exp runs over chunks of components with a running maximum
(the online softmax), so memory is bounded by `budget` elements whatever the training set size.

Logits more than 80 below the running maximum are raised to that (LOG_FLOOR) before the exp:
ATen's vectorised exp takes a slow path, ~10x its usual cost, for arguments below about -87
(float32) or -708 (float64), and at low noise most components are that far. Each raised weight
grows by less than e^-80 of the largest one (which is 1), so the normaliser and the mean move by
less than M e^-80 relative: 2e-29 for a million components, far below float64's rounding.
"""

from __future__ import annotations

import torch

LOG_FLOOR = -80.0  # e^-80 = 1.8e-35, a normal number in float32 (whose exp slows below -87)


def gaussian_posterior(
    q: torch.Tensor,
    p: torch.Tensor,
    values: torch.Tensor,
    a: float,
    b2: float,
    log_mult: torch.Tensor | None = None,
    budget: int = 1 << 18,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean of `values` and log normaliser of the mixture, for G independent groups.

    Args:
        q: (G, Q, d) noisy queries.
        p: (G, M, d) clean component centres (scaled by `a` inside).
        values: (G, M, v) what to average (p itself, or the centre block of each patch).
        a, b2: sqrt(alpha_bar_t) and 1 - alpha_bar_t.
        log_mult: (G, M) log multiplicities of the components, or None for all ones.
        budget: most logits held at once (G * query chunk * component chunk).

    Returns:
        lse: (G, Q) log sum_m n_m exp(logit_m), logits without the -|q|^2 / (2 b^2) term.
        mean: (G, Q, v) sum_m w_m values_m.
    """
    g, n_q, _ = q.shape
    if g == 1:  # plain 2-D products: CPU bmm carries a large fixed cost for one group
        lse, mean = _stream(
            q[0],
            p[0],
            values[0],
            a,
            b2,
            None if log_mult is None else log_mult[0],
            budget,
            torch.addmm,
            torch.mm,
        )
        return lse[None], mean[None]
    return _stream(q, p, values, a, b2, log_mult, budget, torch.baddbmm, torch.bmm)


def _stream(q, p, values, a, b2, log_mult, budget, add_mm, mm):
    """The online softmax over components, for (Q, d) or (G, Q, d) inputs."""
    lead = q.shape[:-2]
    n_q, n_p = q.shape[-2], p.shape[-2]
    g = max(1, lead.numel())
    q_chunk = max(1, min(n_q, budget // (g * min(n_p, 4096))))
    p_chunk = max(1, min(n_p, budget // (g * q_chunk)))
    bias = -(a * a) / (2 * b2) * (p * p).sum(-1)  # (..., M)
    if log_mult is not None:
        bias = bias + log_mult
    scale = a / b2  # 2a / (2 b^2)
    # Components along rows: logits (c, q) = bias + scale p_c q^T and sum_m w_m values_m as
    # values^T w, (v, c) @ (c, q). On a 2-core AVX-512 CPU MKL ran the logits 2x faster this
    # way round than as q p^T (K = d is tiny), and the weighted sum up to 6x faster than as
    # w values (its right-hand side v thin; v = 1 ran as fast either way).
    values_t = values.transpose(-1, -2).contiguous()  # (..., v, M)
    lse_parts, mean_parts = [], []
    for i in range(0, n_q, q_chunk):
        qi_t = q[..., i : i + q_chunk, :].transpose(-1, -2)  # (..., d, q)
        run_max = qi_t.new_full((*lead, qi_t.shape[-1]), float("-inf"))  # (..., q)
        total = torch.zeros_like(run_max)  # sum_m w_m, relative to run_max
        weighted = qi_t.new_zeros(*lead, values.shape[-1], qi_t.shape[-1])  # (..., v, q)
        for j in range(0, n_p, p_chunk):
            logits = add_mm(
                bias[..., j : j + p_chunk, None], p[..., j : j + p_chunk, :], qi_t, alpha=scale
            )  # (..., c, q)
            new_max = torch.maximum(run_max, logits.amax(-2))
            rescale = torch.exp(run_max - new_max)  # 0 on the first chunk
            weights = logits.sub_(new_max[..., None, :]).clamp_min_(LOG_FLOOR).exp_()
            total = total * rescale + weights.sum(-2)
            chunk_sum = mm(values_t[..., j : j + p_chunk], weights)
            weighted = weighted * rescale[..., None, :] + chunk_sum
            run_max = new_max
        lse_parts.append(run_max + total.log())
        mean_parts.append((weighted / total[..., None, :]).transpose(-1, -2))
    return torch.cat(lse_parts, -1), torch.cat(mean_parts, -2)
