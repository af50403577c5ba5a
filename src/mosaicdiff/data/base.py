"""The dataset interface: a tensor of images in [-1, 1] with a name, whatever its source."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mosaicdiff.config import DataConfig
from mosaicdiff.errors import check


@dataclass
class ImageDataset:
    """Images (N, C, H, W), float32 in [-1, 1]; `info` holds source-specific extras
    (for pairings: the spec, the pattern type and the pairing of every quadrant)."""

    name: str
    images: torch.Tensor
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        x = self.images
        check(
            x.ndim == 4, f"dataset {self.name}: images must be (N, C, H, W), got {tuple(x.shape)}"
        )
        check(x.shape[0] >= 1, f"dataset {self.name}: has no images")
        check(
            bool(torch.isfinite(x).all()), f"dataset {self.name}: contains NaN or infinite values"
        )
        lo, hi = float(x.min()), float(x.max())
        check(
            lo >= -1 - 1e-6 and hi <= 1 + 1e-6,
            f"dataset {self.name}: values span [{lo:.3g}, {hi:.3g}], must lie in [-1, 1]",
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]


def load_dataset(cfg: DataConfig) -> ImageDataset:
    """Build the dataset a `DataConfig` names."""
    if cfg.kind == "pairings":
        from mosaicdiff.data.pairings import PairingsSpec, make_dataset

        return make_dataset(PairingsSpec.from_config(cfg), cfg.n_images, cfg.seed)
    if cfg.kind == "digits":
        from mosaicdiff.data.digits import load_digits

        dataset = load_digits()
    elif cfg.kind == "npz":
        from mosaicdiff.data.arrays import load_npz

        dataset = load_npz(cfg.path)
    else:
        from mosaicdiff.data.arrays import load_folder

        dataset = load_folder(cfg.path, cfg.image_size)
    return first_images(dataset, cfg.subset) if cfg.subset else dataset


def first_images(dataset: ImageDataset, n: int, option: str = "data.subset") -> ImageDataset:
    """The dataset's first `n` images (and the rows of its per-image extras, such as labels);
    `option` names `n` in the error when the dataset has fewer."""
    total = len(dataset)
    check(n <= total, f"{option}={n} asks for more than the {total:,} images of {dataset.name}")

    def cut(v):
        return v[:n] if isinstance(v, torch.Tensor) and v.shape[:1] == (total,) else v

    info = {k: cut(v) for k, v in dataset.info.items()}
    return ImageDataset(dataset.name, dataset.images[:n], info)
