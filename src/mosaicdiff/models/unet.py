"""diffusers' `UNet2DModel` with self-attention as a score network: the paper's future work.

Finn et al. (2025) end by asking whether their account of creativity (local patch mosaics made
globally coherent by attention) carries over to the U-Nets with self-attention that practical
diffusion models use. This wraps diffusers' `UNet2DModel` (Ho et al. 2020's architecture),
configured small enough for 8x8 images, as one member of an `Ensemble`:

    `depth` levels of `hidden` * 2^i channels, one ResNet layer each, halving the resolution
    between levels; attention at every level but the first (the finest) and in the mid block.

diffusers is optional (`pip install -e '.[unet]'`) and imported only when a U-Net is built.
It always embeds the timestep; with `time_embedding="none"` every timestep is read as 0.
"""

from __future__ import annotations

import torch
from torch import nn

from mosaicdiff.config import ModelConfig
from mosaicdiff.errors import UserError, check
from mosaicdiff.models.resnet import norm_groups


def _unet2d_class():
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise UserError(
            "model.arch=unet needs diffusers, an optional dependency: pip install -e '.[unet]'"
        ) from e
    return UNet2DModel


class UNet(nn.Module):
    """One seed of `unet`: (x (B, C, H, W), t (B,)) -> eps (B, C, H, W).

    Args:
        cfg: `hidden` channels at the first level, `depth` levels, `time_embedding`.
        image_shape: (C, H, W), with H and W divisible by 2^(depth - 1).
        T: number of diffusion steps.
    """

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], T: int):
        super().__init__()
        c, h, w = image_shape
        levels, d = cfg.depth, cfg.hidden
        f = 2 ** (levels - 1)
        check(
            h % f == 0 and w % f == 0,
            f"model.depth={levels}: a U-Net of {levels} levels halves the images {levels - 1} "
            f"time(s), so their sides must divide by {f}, and {h}x{w} do not; set a smaller "
            "model.depth (or data.image_size for folder images)",
        )
        down = ["AttnDownBlock2D"] * levels
        down[0] = "DownBlock2D" if levels > 1 else "AttnDownBlock2D"
        up = [b.replace("Down", "Up") for b in reversed(down)]
        self.net = _unet2d_class()(
            sample_size=(h, w),
            in_channels=c,
            out_channels=c,
            block_out_channels=tuple(d * 2**i for i in range(levels)),
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            layers_per_block=1,
            norm_num_groups=norm_groups(d),  # divides every level's d 2^i channels
            attention_head_dim=d,  # 2^i heads at level i
            num_train_timesteps=T,
        )
        self.use_time = cfg.time_embedding == "sinusoidal"

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_attention: bool = False):
        """x (B, C, H, W), t (B,) int64 -> eps (B, C, H, W) [, None: weights not exposed]."""
        timesteps = t if self.use_time else torch.zeros_like(t)  # diffusers takes a tensor
        eps = self.net(x, timesteps).sample
        return (eps, None) if return_attention else eps
