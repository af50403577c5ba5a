"""Score networks. Every model is grouped (S seeds at once) and predicts epsilon.

cnn/attn/identity/top1: the paper's networks with stacked weights (`patchnet.py`); resnet,
resnet_attn (`resnet.py`), unet (`unet.py`) and dit (`dit.py`): networks for natural data, each
seed its own module inside an `Ensemble`, as a network of your own ("FILE.py:Class",
`custom.py`) is.
"""

from __future__ import annotations

from mosaicdiff.config import ModelConfig, custom_arch
from mosaicdiff.errors import check
from mosaicdiff.models.grouped import Ensemble, GroupedModel
from mosaicdiff.models.patchnet import PatchNet

PATCHNET_ARCHS = ("cnn", "attn", "identity", "top1")


def build_model(cfg: ModelConfig, image_shape: tuple[int, int, int], T: int, seeds) -> GroupedModel:
    """The network `cfg.arch` names, for every seed in `seeds`."""
    c, h, w = image_shape
    if cfg.arch in PATCHNET_ARCHS or cfg.arch == "dit":
        check(
            h % cfg.patch == 0 and w % cfg.patch == 0,
            f"model.patch={cfg.patch} must divide the image size {h}x{w}",
        )
    if cfg.arch in PATCHNET_ARCHS:
        return _steps(PatchNet(cfg, image_shape, T, list(seeds)), T)
    if custom_arch(cfg.arch):
        from mosaicdiff.models.custom import CustomMember as Net
        from mosaicdiff.models.custom import load_class

        load_class(cfg.arch)  # imported once, before the seeds' RNG is set
    elif cfg.arch in ("resnet", "resnet_attn"):
        from mosaicdiff.models.resnet import ResNet as Net
    elif cfg.arch == "unet":
        from mosaicdiff.models.unet import UNet as Net
    else:
        from mosaicdiff.models.dit import DiT as Net
    shape = tuple(image_shape)
    return _steps(Ensemble(lambda: Net(cfg, shape, T), list(seeds), cfg=cfg, image_shape=shape), T)


def _steps(model: GroupedModel, T: int) -> GroupedModel:
    model.T = T  # `GroupedModel.T`: `as_denoiser` refuses other steps
    return model


__all__ = ["Ensemble", "GroupedModel", "PatchNet", "build_model"]
