"""Score networks. Every model is grouped (S seeds at once) and predicts epsilon."""

from __future__ import annotations

from mosaicdiff.config import ModelConfig
from mosaicdiff.errors import check
from mosaicdiff.models.grouped import GroupedModel
from mosaicdiff.models.patchnet import PatchNet


def build_model(cfg: ModelConfig, image_shape: tuple[int, int, int], T: int, seeds) -> GroupedModel:
    """The network `cfg.arch` names, for every seed in `seeds`."""
    c, h, w = image_shape
    check(
        h % cfg.patch == 0 and w % cfg.patch == 0,
        f"model.patch={cfg.patch} must divide the image size {h}x{w}",
    )
    return PatchNet(cfg, image_shape, T, list(seeds))


__all__ = ["GroupedModel", "PatchNet", "build_model"]
