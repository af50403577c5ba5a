"""ResNet score networks for natural data, with a receptive field set by depth and kernel size.

Finn et al. (2025) trace creativity to locality (Kamb & Ganguli 2024: a CNN's score is a mosaic of
training patches as large as its receptive field) plus attention, which lets every patch see the
whole image. This file makes both knobs explicit on images larger than the paper's 4x4 toys:

    resnet:      stem conv -> `depth` residual blocks -> output conv, all `kernel` x `kernel`,
                 zero padding, so an output pixel sees the input square of side
                 1 + (kernel - 1)(2 depth + 2) around it (`receptive_field`) and nothing else;
    resnet_attn: the same with one single-head self-attention layer over all H W pixels
                 (residual) before the output conv: every output sees every input.

Blocks are pre-activation (norm -> SiLU -> conv, twice) with the timestep embedding added after
the first conv. The norm is a GroupNorm over channel groups *at each pixel*: torch's GroupNorm
pools its statistics over H and W, which would let every output depend on every input and break
the receptive field the depth and kernel are meant to set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mosaicdiff.config import ModelConfig
from mosaicdiff.models.patchnet import sinusoidal


def norm_groups(channels: int, per_group: int = 8) -> int:
    """The number of groups for `channels` channels: about `per_group` channels each, dividing."""
    g = max(1, channels // per_group)
    while channels % g:
        g -= 1
    return g


def receptive_field(depth: int, kernel: int) -> int:
    """Side of the input square one output pixel of `resnet` depends on: 2 depth + 2 convs of
    size `kernel` (stem, two per block, output) each widen it by kernel - 1."""
    return 1 + (kernel - 1) * (2 * depth + 2)


class PixelGroupNorm(nn.Module):
    """GroupNorm whose statistics are taken over each group's channels at one pixel only."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = norm_groups(channels), eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d, H, W) -> (B, d, H, W)."""
        b, d, h, w = x.shape
        g = x.reshape(b, self.groups, d // self.groups, h, w)
        var, mean = torch.var_mean(g, dim=2, keepdim=True, correction=0)
        g = (g - mean) * torch.rsqrt(var + self.eps)
        return g.reshape(b, d, h, w) * self.weight[:, None, None] + self.bias[:, None, None]


class ResBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x))) + temb))), two `kernel` x `kernel` convs."""

    def __init__(self, d: int, kernel: int, with_time: bool):
        super().__init__()
        self.norm1, self.norm2 = PixelGroupNorm(d), PixelGroupNorm(d)
        self.conv1 = nn.Conv2d(d, d, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(d, d, kernel, padding=kernel // 2)
        self.t_proj = nn.Linear(d, d) if with_time else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """x (B, d, H, W), temb (B, d) or None -> (B, d, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        if self.t_proj is not None:
            h = h + self.t_proj(temb)[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class PixelAttention(nn.Module):
    """One single-head self-attention layer over all H W pixels, residual."""

    def __init__(self, d: int):
        super().__init__()
        self.norm = PixelGroupNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x (B, d, H, W) -> (B, d, H, W), and the (B, H W, H W) weights or None."""
        b, d, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, N, d), N = H W row-major
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        a = None
        if return_attention:
            a = (q @ k.transpose(1, 2) / math.sqrt(d)).softmax(-1)  # (B, N, N)
            out = a @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out).transpose(1, 2).reshape(b, d, h, w)
        return x + out, a


class ResNet(nn.Module):
    """One seed of `resnet` or `resnet_attn` (`cfg.arch`): (x (B, C, H, W), t (B,)) -> eps.

    Args:
        cfg: `hidden` channels, `depth` residual blocks, odd `kernel`, `time_embedding`.
        image_shape: (C, H, W).
        T: number of diffusion steps (size of the timestep-feature table).
    """

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], T: int):
        super().__init__()
        c, d, k = image_shape[0], cfg.hidden, cfg.kernel
        self.depth, self.kernel, self.image_shape = cfg.depth, k, tuple(image_shape)
        with_time = cfg.time_embedding == "sinusoidal"
        self.register_buffer("t_features", sinusoidal(torch.arange(T), d), persistent=False)
        self.t_mlp = (
            nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d)) if with_time else None
        )
        self.stem = nn.Conv2d(c, d, k, padding=k // 2)
        self.blocks = nn.ModuleList(ResBlock(d, k, with_time) for _ in range(cfg.depth))
        self.attn = PixelAttention(d) if cfg.arch == "resnet_attn" else None
        self.out_norm = PixelGroupNorm(d)
        self.out = nn.Conv2d(d, c, k, padding=k // 2)

    def receptive_field(self) -> int | None:
        """Side 1 + (kernel - 1)(2 depth + 2) of the input square an output pixel sees; None
        with the attention layer, which makes it the whole image."""
        return None if self.attn is not None else receptive_field(self.depth, self.kernel)

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_attention: bool = False):
        """x (B, C, H, W), t (B,) int64 -> eps (B, C, H, W) [, attention (B, H W, H W) or None]."""
        temb = self.t_mlp(self.t_features[t]) if self.t_mlp is not None else None  # (B, d)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, temb)
        a = None
        if self.attn is not None:
            h, a = self.attn(h, return_attention)
        eps = self.out(F.silu(self.out_norm(h)))
        return (eps, a) if return_attention else eps
