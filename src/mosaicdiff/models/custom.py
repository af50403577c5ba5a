"""Score networks of your own: `model.arch="FILE.py:Class"` or `"package.module:Class"`.

The class is built once per seed, as `Class(cfg, image_shape, T)` (a `ModelConfig`, (C, H, W)
and the number of diffusion steps), right after `torch.manual_seed(seed)`, and maps
`(x_t (B, C, H, W), t (B,) int64)` to eps (B, C, H, W). Inside an `Ensemble` it then trains,
checkpoints, resumes, samples and is measured exactly as the built-in natural-data networks are.
Training is eager unless compiling is asked for (`MOSAICDIFF_COMPILE=1`): torch.compile is not
assumed to take arbitrary code whole.

Optional class attributes:
    reads: the `ModelConfig` fields of `config.ARCH_FIELDS` (depth, kernel, patch, ...) the
        class reads; `--set` of any other is refused, as for the built-in networks. `hidden`
        and `time_embedding` are given to every network.
A `forward` that takes `return_attention` is passed it and returns (eps, attention or None).

Importing it, and its one-line errors, are `own_code.py`'s.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from mosaicdiff.config import ARCH_FIELDS, ModelConfig
from mosaicdiff.errors import UserError, check, check_like
from mosaicdiff.own_code import failed, load


def load_class(arch: str) -> type[nn.Module]:
    """The `nn.Module` subclass that `arch` ("FILE.py:Class" or "module:Class") names."""
    option, name = f"model.arch={arch!r}", arch.rpartition(":")[2]
    cls = load(arch, option)
    check(
        isinstance(cls, type) and issubclass(cls, nn.Module),
        f"{option}: {name} is not a torch.nn.Module class",
    )
    reads = getattr(cls, "reads", ())
    ok = isinstance(reads, (tuple, list)) and all(f in ARCH_FIELDS for f in reads)
    fields = list(ARCH_FIELDS)
    check(ok, f"{option}: {name}.reads={reads!r} must list fields of {fields}")
    return cls


def reads(arch: str) -> tuple[str, ...]:
    """The `config.ARCH_FIELDS` fields the network `arch` names says it reads."""
    return tuple(getattr(load_class(arch), "reads", ()))


class CustomMember(nn.Module):
    """One seed of a network of your own behind the members' interface of `Ensemble`:
    (x, t, return_attention) -> eps, or (eps, attention or None); checks eps's shape."""

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int], T: int):
        super().__init__()
        cls = load_class(cfg.arch)
        self.arch, self.option = cfg.arch, f"model.arch={cfg.arch!r}"
        self.name = cls.__name__
        try:
            self.net = cls(cfg, tuple(image_shape), T)
        except UserError:  # one line already (a network of ours, built inside the user's)
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's class does not build)
            what = f"{self.name}(cfg, image_shape, T)"
            raise failed(self.option, what, e, "building", called=cls) from e
        forward = inspect.signature(self.net.forward).parameters
        self.attends = "return_attention" in forward
        check(
            any(p.requires_grad for p in self.net.parameters()),
            f"{self.option}: {self.name} has no trainable parameters",
        )
        self.probe(image_shape, T)

    def probe(self, image_shape: tuple[int, int, int], T: int) -> None:
        """Two images, at the first and the last step, through the network before any run is
        written, as training will send them: in eval mode (no RNG drawn, no batch statistics
        changed), with gradients, which eps must carry back to the weights."""
        self.net.eval()
        x, t = torch.zeros(2, *image_shape), torch.tensor([0, T - 1])
        with torch.enable_grad():
            eps = self(x, t)
        check(
            eps.requires_grad,
            f"{self.option}: {self.name}'s eps does not depend on its weights (no gradient "
            "reaches them); it cannot be trained",
        )
        self.net.train()

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_attention: bool = False):
        try:
            if self.attends:
                out = self.net(x, t, return_attention=return_attention)
                eps, a = out if return_attention else (out, None)
            else:
                eps, a = self.net(x, t), None
        except UserError:
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's forward fails)
            raise failed(self.option, f"{self.name} on {len(x)} images", e, "running") from e
        check_like(eps, x, self.option, "eps")
        check(
            eps.dtype == x.dtype,
            f"{self.option} returned eps of dtype {eps.dtype} for x_t of {x.dtype}; they must "
            "match",
        )
        return (eps, a) if return_attention else eps
