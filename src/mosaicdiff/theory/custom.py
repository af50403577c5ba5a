"""Score machines of your own: `theory sample|compare|calibrate --machine FILE.py:Class` (or
"module:Class").

The class subclasses `ScoreMachine` (and implements `x0_hat`) or one of its machines (`ELS`,
`LocalScore`, `AttentionELS`, `IdealScore`), and is built as `Class(images, schedule, **options)`:
`dtype` and `budget` always, and of `OPTIONS` those its `__init__` takes by name (an ELS
subclass takes patch_size, stride and boundary), with the command's defaults where they are
left out. An `__init__` with `**kwargs` is taken to pass them on to its base class's: the
options that one takes are given to it too, but only when set (else the class's own defaults
stand, and an `__init__` that fixes one of them keeps working). A theory option the class does
not take is refused when given, rather than ignored. One image goes through the machine before any
sample is drawn, so a machine that fails fails on one line naming the line of its file
(`own_code.py`). Sampled folders store the file's sha256: a rerun after it changed is refused
instead of resuming samples of the old code.
"""

from __future__ import annotations

import inspect

import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import UserError, check, check_like
from mosaicdiff.own_code import failed, load
from mosaicdiff.theory.base import ScoreMachine

# The theory options a machine of your own may take, by its __init__'s parameter names.
OPTIONS = ("patch_size", "stride", "boundary", "lam", "attention")  # cli_checks.FLAGS' keys


def load_machine_class(spec: str) -> type[ScoreMachine]:
    """The `ScoreMachine` subclass that `spec` ("FILE.py:Class" or "module:Class") names."""
    option, name = f"--machine {spec!r}", spec.rpartition(":")[2]
    cls = load(spec, option)
    check(
        isinstance(cls, type) and issubclass(cls, ScoreMachine),
        f"{option}: {name} is not a subclass of mosaicdiff.theory.base.ScoreMachine",
    )
    check(
        cls.x0_hat is not ScoreMachine.x0_hat,
        f"{option}: {name} does not implement x0_hat(self, x_t, t, a, b2), the posterior mean "
        "of the clean images that every ScoreMachine defines",
    )
    return cls


def takes(cls: type[ScoreMachine], passed_on: bool = True) -> set[str]:
    """The `OPTIONS` that `cls.__init__` takes by name and, with `passed_on`, those it takes
    through `**kwargs`: the parameters of the `__init__` it inherits, and so on up the classes
    it derives from (as `super().__init__(..., **kwargs)` passes them)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters
        names |= set(parameters)
        if not passed_on or not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return set(OPTIONS) & names


def build_custom(
    spec: str, images: torch.Tensor, schedule: Schedule, dtype: torch.dtype, **options
) -> ScoreMachine:
    """`Class(images, schedule, dtype=dtype, **options)`, tried on two images at the first and
    at the last step."""
    option, cls = f"--machine {spec!r}", load_machine_class(spec)
    try:
        machine = cls(images, schedule, dtype=dtype, **options)
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's class does not build so)
        what = f"{cls.__name__}(images, schedule, ...)"
        raise failed(option, what, e, "building", called=cls) from e
    inner = machine.x0_hat

    def x0_hat(x_t, t, a, b2):  # a failure while sampling is one line too, naming its line
        try:
            x0 = inner(x_t, t, a, b2)
        except UserError:
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 (the user's x0_hat fails)
            raise failed(option, f"{cls.__name__} on {len(x_t)} images", e, "running") from e
        check_like(x0, x_t, f"{option}: {cls.__name__}.x0_hat", "x0")
        check(
            x0.is_floating_point(),
            f"{option}: {cls.__name__}.x0_hat returned x0 of dtype {x0.dtype}; it must be a "
            f"floating-point tensor (x_t is {x_t.dtype}, the machine's --precision)",
        )
        x0 = x0.to(x_t.dtype)  # as the sampler computes
        check(  # else its samples are written, and only measuring them finds them NaN
            bool(torch.isfinite(x0).all()) or not bool(torch.isfinite(x_t).all()),
            f"{option}: {cls.__name__}.x0_hat returned NaN or infinite values at step {t}",
        )
        return x0

    machine.x0_hat = x0_hat
    x = images[:1].expand(2, -1, -1, -1).float()
    for t in (0, schedule.T - 1):
        machine(x, torch.tensor([t]))
    return machine
