"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), scaled to [-1, 1]."""

from __future__ import annotations

import torch

from mosaicdiff.data.base import ImageDataset


def load_digits() -> ImageDataset:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8) in [0, 16]
    x = x.unsqueeze(1) / 8.0 - 1.0
    return ImageDataset("digits", x, {"labels": torch.as_tensor(bunch.target)})
