"""A small DiT (Peebles & Xie 2023): the all-global extreme of the locality axis.

Finn et al. (2025) place creativity between locality (a CNN's patch mosaics) and attention
(global coherence). A DiT has no locality prior at all beyond its `patch` x `patch` tokens:

    patchify (N = H W / p^2 tokens of C p^2 values) -> linear -> + learned position embedding
    -> `depth` x [x + g1 * Attn(mod(LN(x))), x + g2 * MLP(mod(LN(x)))] -> mod(LN) -> linear
    -> unpatchify

with multi-head full self-attention and the timestep entering through adaLN: shifts, scales and
gates regressed from the timestep embedding. The gates start at zero (DiT's adaLN-Zero, every
block the identity at initialisation); the final layer keeps its default initialisation so that
freshly built seeds differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mosaicdiff.config import ModelConfig
from mosaicdiff.models.patchnet import patchify, sinusoidal, unpatchify


def n_heads(d: int, head_dim: int = 16) -> int:
    """About `head_dim` channels per head, dividing `d`."""
    h = max(1, d // head_dim)
    while d % h:
        h -= 1
    return h


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, N, d), shift and scale (B, d) -> x (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Full self-attention and an MLP, each pre-norm, adaLN-modulated, gated and residual."""

    def __init__(self, d: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d)
        )
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def attention(self, x: torch.Tensor, return_attention: bool):
        """x (B, N, d) -> (B, N, d), and the head-averaged (B, N, N) weights or None."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = None
        if return_attention:
            w = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(-1)  # (B, h, N, N)
            out, a = w @ v, w.mean(1)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d/h)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), a

    def forward(self, x: torch.Tensor, c: torch.Tensor, return_attention: bool = False):
        """x (B, N, d), conditioning c (B, d) -> (B, N, d), attention (B, N, N) or None."""
        shift1, scale1, g1, shift2, scale2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        out, a = self.attention(modulate(self.norm1(x), shift1, scale1), return_attention)
        x = x + g1[:, None] * out
        x = x + g2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, a


class DiT(nn.Module):
    """One seed of `dit`: (x (B, C, H, W), t (B,)) -> eps (B, C, H, W).

    Args:
        cfg: `hidden` width, `depth` layers, `patch` size (dividing H and W), `time_embedding`
            ("none": the conditioning vector is zero).
        image_shape: (C, H, W).
        T: number of diffusion steps (size of the timestep-feature table).
    """

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], T: int):
        super().__init__()
        c, h, w = image_shape
        p, d = cfg.patch, cfg.hidden
        self.patch, self.image_shape, self.hidden = p, tuple(image_shape), d
        n = (h // p) * (w // p)
        self.embed = nn.Linear(c * p * p, d)
        self.pos = nn.Parameter(0.02 * torch.randn(1, n, d))  # learned, (1, N, d)
        self.register_buffer("t_features", sinusoidal(torch.arange(T), d), persistent=False)
        self.t_mlp = None
        if cfg.time_embedding == "sinusoidal":
            self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DiTBlock(d, n_heads(d)) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, c * p * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_attention: bool = False):
        """x (B, C, H, W), t (B,) int64 -> eps (B, C, H, W) [, last layer's (B, N, N) weights]."""
        tokens = self.embed(patchify(x, self.patch)) + self.pos  # (B, N, d)
        if self.t_mlp is not None:
            c = self.t_mlp(self.t_features[t])  # (B, d)
        else:
            c = x.new_zeros(x.shape[0], self.hidden)
        a = None
        for block in self.blocks:
            tokens, a = block(tokens, c, return_attention)
        shift, scale = self.ada(F.silu(c)).chunk(2, dim=-1)
        y = self.out(modulate(self.norm(tokens), shift, scale))  # (B, N, C p p)
        eps = unpatchify(y, self.patch, self.image_shape)
        return (eps, a) if return_attention else eps
