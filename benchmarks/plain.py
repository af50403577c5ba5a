"""The plain way: the paper's networks, training and sampling as one would first write them.

The baseline the fast paths are measured against: nn.Conv2d / nn.ConvTranspose2d and a simple
attention module (nn.Linear Q, K, V), a DataLoader, default AdamW, OneCycleLR, a Python loop
over parameters for the EMA, the noise schedule indexed per step in Python, and diffusers'
`DDPMScheduler.step` for sampling. Same maths as mosaicdiff's networks: `from_patchnet` copies
a trained member's weights in, and the outputs agree to float tolerance (checked by the
benchmark).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float64, device=t.device)
    freqs = torch.exp(-math.log(10_000.0) * steps / half)
    angles = t.double()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1).float()


class Attention(nn.Module):
    """Single-head self-attention over tokens (B, N, d): softmax, identity or top-1."""

    def __init__(self, d: int, kind: str, tau: float = 1.0):
        super().__init__()
        self.kind, self.d, self.tau = kind, d, tau
        if kind != "identity":
            self.q = nn.Linear(d, d, bias=False)
            self.k = nn.Linear(d, d, bias=False)
            self.v = nn.Linear(d, d, bias=False)

    def forward(self, h):
        if self.kind == "identity":
            q = k = v = h
        else:
            q, k, v = self.q(h), self.k(h), self.v(h)
        logits = q @ k.transpose(1, 2) / math.sqrt(self.d)
        if self.kind == "top1":
            if self.training:
                a = F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
            else:
                a = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(h.dtype)
        else:
            a = logits.softmax(-1)
        return a @ v


class PlainNet(nn.Module):
    """Conv2d(3 -> d, 2, stride 2) + time embedding -> SiLU -> [attention, residual] ->
    ConvTranspose2d(d -> 3, 2, stride 2)."""

    def __init__(self, arch: str, d: int = 32, channels: int = 3, patch: int = 2):
        super().__init__()
        self.d = d
        self.conv = nn.Conv2d(channels, d, patch, stride=patch)
        self.time = nn.Linear(d, d)
        self.attn = Attention(d, arch) if arch != "cnn" else None
        self.tconv = nn.ConvTranspose2d(d, channels, patch, stride=patch)

    def forward(self, x, t):
        h = self.conv(x) + self.time(timestep_features(t, self.d))[:, :, None, None]
        h = F.silu(h)  # (B, d, H/p, W/p)
        if self.attn is not None:
            b, d, hh, ww = h.shape
            tokens = h.flatten(2).transpose(1, 2)  # (B, N, d)
            tokens = tokens + self.attn(tokens)
            h = tokens.transpose(1, 2).reshape(b, d, hh, ww)
        return self.tconv(h)


def from_patchnet(model, i: int = 0) -> PlainNet:
    """A PlainNet holding member `i` of a mosaicdiff `PatchNet` (sinusoidal time, SiLU, and a
    ConvTranspose2d's bias: model.out_bias="channel")."""
    cfg = model.cfg
    if cfg.out_bias != "channel":
        raise ValueError(f"model.out_bias={cfg.out_bias!r}: a ConvTranspose2d has a channel's")
    c, p, d = model.image_shape[0], cfg.patch, cfg.hidden
    net = PlainNet(cfg.arch, d, c, p)
    with torch.no_grad():
        net.conv.weight.copy_(model.w_in[i].T.reshape(d, c, p, p))
        net.conv.bias.copy_(model.b_in[i])
        net.time.weight.copy_(model.w_t[i].T)
        net.time.bias.copy_(model.b_t[i])
        if cfg.arch in ("attn", "top1"):
            for name in ("q", "k", "v"):
                getattr(net.attn, name).weight.copy_(getattr(model, f"w_{name}")[i].T)
        net.tconv.weight.copy_(model.w_out[i].reshape(d, c, p, p))
        net.tconv.bias.copy_(model.b_out[i])  # one per channel (model.out_bias="channel")
    return net


class PlainTrainer:
    """Batch 64 from a shuffling DataLoader, (1 - alpha_bar)-weighted eps MSE, default AdamW,
    OneCycleLR, and an EMA updated by a Python loop over the parameters."""

    def __init__(
        self, arch: str, images: torch.Tensor, total_steps: int, seed: int = 0, device="cpu"
    ):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.net = PlainNet(arch).to(self.device).train()
        self.ema = copy.deepcopy(self.net)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=1e-5)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=1e-3, total_steps=total_steps
        )
        self.loader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True)
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - betas, 0).float().to(self.device)
        self.decay = 0.9999

    def train_steps(self, n_steps: int) -> float:
        """Run `n_steps` optimiser steps; return the last loss."""
        done = 0
        while True:
            for (x0,) in self.loader:
                x0 = x0.to(self.device)
                t = torch.randint(0, 1000, (x0.shape[0],), device=self.device)
                eps = torch.randn_like(x0)
                ab = self.alpha_bar[t].view(-1, 1, 1, 1)
                x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
                mse = ((self.net(x_t, t) - eps) ** 2).mean((1, 2, 3))
                loss = ((1 - ab.view(-1)) * mse).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.sched.step()
                with torch.no_grad():
                    for p_ema, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
                        p_ema.mul_(self.decay).add_(p, alpha=1 - self.decay)
                done += 1
                if done == n_steps:
                    return loss.item()


def diffusers_scheduler(device="cpu"):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
    )
    sched.set_timesteps(1000, device=device)
    return sched


@torch.no_grad()
def plain_sample(net: PlainNet, x_T, generator, n_steps: int | None = None) -> torch.Tensor:
    """Ancestral DDPM with diffusers' `DDPMScheduler.step`; the first `n_steps` steps only if
    given (for timing)."""
    net.eval()
    sched = diffusers_scheduler(x_T.device)
    x = x_T
    timesteps = sched.timesteps if n_steps is None else sched.timesteps[:n_steps]
    for t in timesteps:
        eps = net(x, t.expand(x.shape[0]))
        x = sched.step(eps, t, x, generator=generator).prev_sample
    return x
