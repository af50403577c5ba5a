"""The paper's score networks (Finn et al. 2025, Sec. 3 and App. B), in token space.

    cnn:      Conv2d(C -> d, kernel p, stride p) -> nonlinearity -> ConvTranspose2d(d -> C, p, p)
    attn:     cnn + one single-head self-attention block (learnable Q, K, V), residual,
              right before the transpose conv
    identity: the same block with Q = K = V = I:   h + softmax(h h^T / sqrt(d)) h
    top1:     the same block with winner-take-all attention: straight-through Gumbel-softmax
              while training, a hard argmax when sampling (Eq. 5)

A kernel-p, stride-p conv is exactly a linear map on non-overlapping p x p patches, and the
transpose conv is a linear map back, so the network works on N = (H/p)(W/p) tokens of C p^2
values throughout (one token per quadrant for the paper's 4x4 images). A timestep embedding
(sinusoidal features -> linear) is added to the hidden features before the nonlinearity, unless
`time_embedding="none"`. Weights carry a leading seed dimension (see `grouped.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mosaicdiff.config import ModelConfig
from mosaicdiff.models.grouped import GroupedModel, init_uniform, stacked

ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "gelu": F.gelu}


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., N, C p p) with tokens in row-major order of the p x p patches."""
    *lead, c, h, w = x.shape
    x = x.reshape(*lead, c, h // p, p, w // p, p)
    n = len(lead)
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)  # (..., H/p, W/p, C, p, p)
    return x.reshape(*lead, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of `patchify`: (..., N, C p p) -> (..., C, H, W)."""
    c, h, w = shape
    *lead, _, _ = tokens.shape
    n = len(lead)
    x = tokens.reshape(*lead, h // p, w // p, c, p, p)
    x = x.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)  # (..., C, H/p, p, W/p, p)
    return x.reshape(*lead, c, h, w)


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal features of timesteps: (*shape) -> (*shape, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.double()[..., None] * freqs
    out = torch.cat([angles.sin(), angles.cos()], -1)
    return F.pad(out, (0, dim - 2 * half)).float()


class PatchNet(GroupedModel):
    """cnn / attn / identity / top1 for `len(seeds)` independent seeds at once.

    Args:
        cfg: the architecture.
        image_shape: (C, H, W), with H and W divisible by `cfg.patch`.
        T: number of diffusion steps (size of the timestep-embedding table).
        seeds: one initialisation seed per member; member i depends on seeds[i] alone.
    """

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], T: int, seeds):
        super().__init__()
        self.cfg, self.image_shape, self.n_seeds = cfg, tuple(image_shape), len(seeds)
        c, p, d = image_shape[0], cfg.patch, cfg.hidden
        P = c * p * p
        per_seed = [self._init_one(P, d, torch.Generator().manual_seed(s)) for s in seeds]
        for name in per_seed[0]:
            setattr(self, name, stacked([w[name] for w in per_seed]))
        self.register_buffer("t_features", sinusoidal(torch.arange(T), d), persistent=False)
        self.act = ACTIVATIONS[cfg.nonlinearity]

    def _init_one(self, P: int, d: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        p2 = self.cfg.patch**2
        w = {
            "w_in": init_uniform((P, d), P, g),  # Conv2d(C, d, p, p): fan_in = C p p
            "b_in": init_uniform((d,), P, g),
            "w_out": init_uniform((d, P), P, g),  # ConvTranspose2d: PyTorch's fan_in = C p p
            # ConvTranspose2d's bias, one per channel; "position": one per value of a token
            "b_out": init_uniform((P if self.cfg.out_bias == "position" else P // p2,), P, g),
        }
        if self.cfg.time_embedding == "sinusoidal":
            w["w_t"] = init_uniform((d, d), d, g)
            w["b_t"] = init_uniform((d,), d, g)
        if self.cfg.arch in ("attn", "top1"):
            for name in ("w_q", "w_k", "w_v"):
                w[name] = init_uniform((d, d), d, g)
        return w

    def hidden(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tokens after the first conv, time embedding and nonlinearity: (S, B, N, d)."""
        tokens = patchify(x, self.cfg.patch)  # (S, B, N, P)
        s, b, n, P = tokens.shape
        # One (S, B N, P) @ (S, P, d) bmm: 4-d broadcasting matmuls are ~3x slower here.
        h = torch.baddbmm(self.b_in[:, None], tokens.reshape(s, b * n, P), self.w_in)
        h = h.view(s, b, n, -1)
        if self.cfg.time_embedding == "sinusoidal":
            # t (S, B) -> features (S, B, d); t (1,) -> (1, d), broadcast over seeds by the matmul.
            temb = self.t_features[t] @ self.w_t + self.b_t[:, None]  # (S, B or 1, d)
            h = h + temb[:, :, None]  # broadcast over tokens
        return self.act(h)

    def token_bias(self) -> torch.Tensor:
        """The output bias of each value of a token, (S, C p p): each channel's bias at every
        place of its p x p patch, as ConvTranspose2d adds it (model.out_bias="position": a bias
        of each value's own)."""
        if self.cfg.out_bias == "position":
            return self.b_out
        return self.b_out.repeat_interleave(self.cfg.patch**2, dim=-1)  # tokens are (C, p, p)

    @property
    def gumbel_shape(self) -> tuple[int, int] | None:
        """The (N, N) Gumbel noise per sample that top1 draws while training (`top1_weights`);
        None for the other architectures."""
        if self.cfg.arch != "top1":
            return None
        _, h, w = self.image_shape
        n = (h // self.cfg.patch) * (w // self.cfg.patch)
        return n, n

    def qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of hidden tokens h (S, B, N, d), each (S, B, N, d):
        identity's are h itself (Q = K = V = I), the others' learned projections."""
        if self.cfg.arch == "identity":
            return h, h, h
        return tuple(_tokens_matmul(h, w) for w in (self.w_q, self.w_k, self.w_v))

    def attention(
        self, h: torch.Tensor, gumbel: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention block's output and weights: (S, B, N, d), (S, B, N, N); `gumbel`:
        top1's training noise (`top1_weights`)."""
        q, k, v = self.qkv(h)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.cfg.hidden)
        if self.cfg.arch == "top1":
            if self.training:
                a = top1_weights(logits, self.cfg.gumbel_tau, gumbel)
            else:
                a = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(h.dtype)
        else:
            a = logits.softmax(-1)
        return a @ v, a

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        return_attention: bool = False,
        gumbel: torch.Tensor | None = None,
    ):
        """Predict eps.

        Args:
            x: (S, B, C, H, W) noisy images, one block of B per seed.
            t: (S, B) int64 timesteps, or (1,) for one timestep shared by the whole batch.
            return_attention: also return the (S, B, N, N) attention weights (None for cnn).
            gumbel: top1 in training only: (S, B, N, N) Gumbel noise (`top1_weights`).
        """
        h = self.hidden(x, t)  # (S, B, N, d)
        a = None
        if self.cfg.arch != "cnn":
            if return_attention or self.cfg.arch == "top1":
                out, a = self.attention(h, gumbel)
            else:
                # Same maths as `attention` for softmax attention, through the fused kernel.
                out = F.scaled_dot_product_attention(*self.qkv(h))
            h = h + out
        y = _tokens_matmul(h, self.w_out) + self.token_bias()[:, None, None]  # (S, B, N, C p p)
        eps = unpatchify(y, self.cfg.patch, self.image_shape)
        return (eps, a) if return_attention else eps


def top1_weights(
    logits: torch.Tensor, tau: float, gumbel: torch.Tensor | None = None
) -> torch.Tensor:
    """top1's attention while training: the straight-through Gumbel-softmax (Eq. 5), one-hot
    forward and softmax backward. `F.gumbel_softmax(hard=True)` draws its noise from the global
    random stream, once for all seeds of a group, so a seed's noise would depend on the seeds
    beside it; training gives each seed's noise, drawn from that seed's own generator, as
    `gumbel` (-log of Exp(1) draws, as `F.gumbel_softmax` draws it), and this is that function
    with the noise given (tested equal). Without `gumbel`, `F.gumbel_softmax` itself."""
    if gumbel is None:
        return F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
    soft = ((logits + gumbel) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def _tokens_matmul(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(S, B, N, a) @ (S, a, b) -> (S, B, N, b) as one bmm."""
    s, b, n, a = h.shape
    return torch.bmm(h.reshape(s, b * n, a), w).view(s, b, n, -1)
