"""Exact algebraic folding of the paper's score networks for sampling (`FoldedNet`).

With hidden tokens h (N, d) after the first conv and nonlinearity, the attention logits are
q k^T / sqrt(d) = h A h^T with A = W_q W_k^T / sqrt(d) (one d x d product instead of two), and the
output projection absorbs W_v: (h + softmax(.) h W_v) W_out = h W_out + softmax(.) h (W_v W_out),
so one (d, 2P) matmul gives both terms. identity (Q = K = V = I) folds the same way:
A = I / sqrt(d) and the values are h W_out, so its N x N mixing runs on P values, not d. top1's
hard attention is a gather of the winning value row. The timestep embedding plus the first bias
is a (T, d) table per seed. Everything stays in token space: x_t as (S, B, N, P) patches.
On a CPU with AVX-512, cnn's two thin matmuls compile as broadcast sums (`thin_bmm`): one loop
over tokens, fused with the update. `fast.sampling` runs the DDPM loop over this network.
"""

from __future__ import annotations

import math

import torch

from mosaicdiff.models.patchnet import ACTIVATIONS, PatchNet, patchify, unpatchify

# Whether `thin_bmm` fuses. Measured as paired A/Bs of the compiled cnn step in one process:
# with AVX-512 the fused loop took 0.88x bmm's time (~240 -> ~210 ns per sample-step); with
# AVX2 alone (an AMD EPYC, 256-bit vectors) it took 1.15-1.22x (median 558 vs 640, 537 vs 649,
# 505 vs 618 ns at chunks of 16,384, 4,096 and 8,192), so there MKL's GEMMs stay.
FUSE_THIN_MATMULS = torch.backends.cpu.get_cpu_capability() == "AVX512"


def thin_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.bmm(a, b) for thin matrices: (S, M, K) x (S, K, N) with K, N a few dozen.

    Compiled for a CPU with AVX-512 (`FUSE_THIN_MATMULS`) it is a broadcast sum, which Inductor
    writes as one loop over the rows of a, fused with the bias, activation and update around
    it: no (M, N) intermediate goes to memory between kernels, as it does around MKL's GEMM.
    Same maths; only the order of the K-term sums may differ. Eager (where the broadcast would
    build an M x K x N tensor), on other CPUs and on a GPU it is torch.bmm.
    """
    if FUSE_THIN_MATMULS and torch.compiler.is_compiling() and not a.is_cuda:
        return (a[..., :, None] * b[:, None]).sum(-2)
    return torch.bmm(a, b)


# Up to this many tokens `mix` is a sum of N products, not a reduction over N: with AVX-512,
# Inductor parallelised the reduction of the broadcast sum over its 16 terms at 16 tokens (8x8
# images), opening an OpenMP region per row, and the attn step took 14-35 us per sample-step
# instead of ~2 (identity 13-16 us; Zen 5 EPYC, one process per run). At 4 tokens the three
# forms were within this host's noise, except torch.bmm under AVX2 (1.5-1.8x slower); past 16
# tokens the unrolled graph grows, and a GEMM has work enough.
UNROLL_TOKENS = 16


def mix(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """weights (..., N, N) @ values (..., N, P): each query's weighted sum of the value rows."""
    n = weights.shape[-1]
    if n > UNROLL_TOKENS:
        return weights @ values
    out = weights[..., :1] * values[..., :1, :]
    for j in range(1, n):
        out = out + weights[..., j : j + 1] * values[..., j : j + 1, :]
    return out


class FoldedNet:
    """A trained `PatchNet` (S seeds, eval mode) with its weights folded for sampling.

    Also a `Denoiser` on (S*B, C, H, W) batches, like `PatchNet.as_denoiser()`.
    """

    def __init__(self, model: PatchNet):
        cfg = model.cfg
        self.arch, self.patch, self.image_shape = cfg.arch, cfg.patch, model.image_shape
        self.n_seeds, self.act = model.n_seeds, ACTIVATIONS[cfg.nonlinearity]
        with torch.no_grad():
            d = cfg.hidden
            self.w_in = model.w_in.detach().clone()  # (S, P, d)
            bias = model.b_in.detach()[:, None]  # (S, 1, d)
            if cfg.time_embedding == "sinusoidal":
                temb = model.t_features @ model.w_t.detach() + model.b_t.detach()[:, None]
                bias = bias + temb  # (S, T, d)
            else:
                bias = bias.expand(-1, model.t_features.shape[0], -1)
            self.bias_t = bias.transpose(0, 1).contiguous()  # (T, S, d)
            w_out = model.w_out.detach()  # (S, d, P)
            self.b_out = model.token_bias().detach().clone()  # (S, P)
            self.scale = 1 / math.sqrt(d)
            if cfg.arch in ("cnn", "identity"):  # identity: A = I / sqrt(d) is a scalar
                self.a = None
                self.w2 = w_out.clone()  # identity: W_v = I, so the values are h W_out too
            else:
                w_q, w_k, w_v = (w.detach() for w in (model.w_q, model.w_k, model.w_v))
                self.a = (w_q @ w_k.transpose(1, 2) * self.scale).contiguous()  # (S, d, d)
                self.w2 = torch.cat([w_out, w_v @ w_out], -1).contiguous()  # (S, d, 2P)

    def eps_tokens(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Predicted noise in token space: x (S, B, N, P), bias (S, 1, d) -> (S, B, N, P)."""
        s, b, n, p = x.shape
        # cnn's h feeds one product, and with `thin_bmm` the whole network compiles into one
        # kernel: 12% off a cnn sampling step with AVX-512 (paired A/B, 240 -> 210 ns). With
        # attention, h feeds three products; the fused form was 12% faster to 7% slower for
        # attn (three runs), 2.5% slower for top1, 13x slower for identity (h recomputed per
        # logit), so they keep bmm.
        mm = thin_bmm if self.arch == "cnn" else torch.bmm
        # Biases added outside the GEMMs, where the compiler fuses them with the next kernel.
        h = self.act(mm(x.reshape(s, b * n, p), self.w_in) + bias)  # (S, B N, d)
        y2 = mm(h, self.w2)  # cnn, identity: h W_out; attn, top1: [h W_out | h W_v W_out]
        if self.arch == "cnn":
            return y2.view(s, b, n, p) + self.b_out[:, None, None]
        y2 = y2.view(s * b, n, -1)
        values = y2[..., -p:]  # softmax(.) h W_v W_out = softmax(.) values
        ha = h * self.scale if self.a is None else torch.bmm(h, self.a)  # (S, B N, d)
        # N x N products per sample as broadcast sums: one fused kernel when compiled, where
        # MKL's batched GEMM of 4 x 32 matrices is slow.
        logits = (ha.view(s * b, n, 1, -1) * h.view(s * b, 1, n, -1)).sum(-1)  # (S B, N, N)
        if self.arch == "top1":  # hard attention picks one value row per query: a gather
            winner = logits.argmax(-1, keepdim=True).expand(-1, -1, p)  # (S B, N, P)
            mixed = values.gather(1, winner)
        else:
            mixed = mix(logits.softmax(-1), values)
        y = y2[..., :p] + mixed
        return y.view(s, b, n, p) + self.b_out[:, None, None]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The `Denoiser` interface: x_t (S*B, C, H, W), t (1,) -> eps (S*B, C, H, W)."""
        if t.numel() != 1:
            raise ValueError("FoldedNet takes one timestep for the whole batch, t of shape (1,)")
        s = self.n_seeds
        x = patchify(x_t.reshape(s, -1, *x_t.shape[1:]), self.patch)
        eps = self.eps_tokens(x, self.bias_t[int(t)][:, None])
        return unpatchify(eps, self.patch, self.image_shape).reshape(x_t.shape)
