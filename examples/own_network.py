"""A score network of your own, trained, sampled and measured by mosaicdiff as its own are.

A plain MLP over the whole image: neither local nor translation-equivariant, the two biases
that make convolutional networks compose patch mosaics (Kamb & Ganguli 2024). Name it by its
file and class wherever an architecture goes:

    mosaicdiff train --out runs/mlp --model examples/own_network.py:MLP \\
        --set data.kind=digits --epochs 1000 --set model.hidden=64 --set train.ema_decay=0.999
    mosaicdiff sample runs/mlp      # samples.png
    mosaicdiff evaluate runs/mlp    # memorization, novelty, mosaics; nearest.png

or in a sweep's grid (`model.arch: [resnet, examples/own_network.py:MLP]`), or from Python
with `ModelConfig(arch="/abs/path/own_network.py:MLP")`. The command line stores the file's
absolute path (Python stores the path as given), so the run is sampled and resumed from any
folder; keep the file where it is.
"""

import math

import torch
from torch import nn

from mosaicdiff.models.patchnet import sinusoidal


class MLP(nn.Module):
    """(x_t (B, C, H, W), t (B,)) -> eps (B, C, H, W): `depth` hidden layers of 4 x `hidden`
    units, the timestep's sinusoidal features concatenated to the flattened image."""

    reads = ("depth",)  # ModelConfig fields beyond hidden and time_embedding that it reads

    def __init__(self, cfg, image_shape: tuple[int, int, int], T: int):
        super().__init__()
        d, width = math.prod(image_shape), 4 * cfg.hidden
        self.with_time = cfg.time_embedding == "sinusoidal"
        self.register_buffer("t_features", sinusoidal(torch.arange(T), cfg.hidden), False)
        layers, n_in = [], d + cfg.hidden * self.with_time
        for _ in range(cfg.depth):
            layers += [nn.Linear(n_in, width), nn.SiLU()]
            n_in = width
        self.net = nn.Sequential(*layers, nn.Linear(n_in, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, C H W)
        if self.with_time:
            h = torch.cat([h, self.t_features[t]], 1)  # (B, C H W + hidden)
        return self.net(h).view(x.shape)
