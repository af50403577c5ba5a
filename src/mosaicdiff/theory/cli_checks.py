"""Checks of the `theory` commands' option values, and the machine they name (`theory/cli.py`).

Each check raises `UserError` naming the bad value and what would be valid, before any work.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mosaicdiff.errors import UserError, check, check_out
from mosaicdiff.own_code import anchored, names_code
from mosaicdiff.theory.custom import OPTIONS, build_custom, load_machine_class, takes
from mosaicdiff.theory.machines import MACHINES

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
DATA_KINDS = ("pairings", "digits", "npz", "folder")
# Largest --image-size: the machines compare every pixel's patch with every training patch,
# so their cost grows with the square of the pixels (a side of 100000 never finished). Stricter
# than the networks' bound on data.image_size (config.MAX_IMAGE_SIZE).
MACHINE_MAX_SIDE = 256
# The options a machine may read, by its parameter names: their flags, and the defaults of those
# that have one. argparse leaves them None, so that a machine which does not read an option
# refuses it whatever its value, the default's too; `with_defaults` fills them in.
FLAGS = {key: "--" + key.removesuffix("_size") for key in OPTIONS}
DEFAULTS = {"boundary": "circular", "lam": 0.5, "attention": "soft"}


def choice(value: str, option: str, valid) -> str:
    check(value in valid, f"{option} {value!r} is not one of {list(valid)}")
    return value


def positive(value: int, option: str) -> int:
    check(value >= 1, f"{option}={value} must be at least 1")
    return value


def theory_out(out: str, what: str = "folder") -> Path:
    """`errors.check_out`, and more: a theory command writes beside a trained run, never into
    it (its config.json, its checkpoints, samples or history, or a folder of its own there),
    and a calibration overwrites only another."""
    from mosaicdiff.io import read_json
    from mosaicdiff.runs import run_holding

    path = check_out(out, what)
    held = run_holding(path if what == "folder" else path.parent)
    if held is not None:
        raise UserError(
            f"--out {out!r} would write into the trained run {str(held[0])!r}; name another "
            f"{what}, beside the run"
        )
    if path.is_file() and what != "folder":
        try:
            ours = "patch_size" in read_json(path)
        except UserError:
            ours = False
        check(ours, f"--out {out!r} is a file but not a calibration; name a new {what}")
    return path


def patch_file(patch: str | None) -> str | None:
    """--patch when it names a patch schedule file rather than one int, else None."""
    return None if patch is None or re.fullmatch("-?[0-9]+", patch.strip()) else patch


def spelled_out(kind: str, patch: str | None, stride: int | None) -> tuple[str, int]:
    """--patch and --stride on data of `kind` as the machine reads them: left out, 2 with stride
    2 on the pairings (one patch per quadrant) and 3 with stride 1 otherwise; a patch size given
    alone has stride 1, a calibration file the stride it was calibrated at."""
    default = patch is None
    if default:
        patch = "2" if kind == "pairings" else "3"
    elif patch_file(patch) is None:
        patch = str(int(patch))
    if stride is None:
        stride = 2 if kind == "pairings" and default else calibrated(patch).get("stride", 1)
    return patch, stride


def calibrated(patch: str | None) -> dict:
    """What a calibration file named by --patch says of how it was made (`theory calibrate`
    stores its stride, data and members; one from before that, nothing), else {}."""
    from mosaicdiff.io import read_json

    file = patch_file(patch)
    if file is None or not Path(file).is_file():
        return {}
    try:
        data = read_json(Path(file))
    except UserError:
        return {}  # refused, naming the file, where the schedule is loaded
    made = {k: data[k] for k in ("stride", "data", "members") if k in (data or {})}
    stride = made.get("stride")
    if not isinstance(stride, int) or isinstance(stride, bool):
        made.pop("stride", None)
    return made


def _check_calibrated(file: str, stride: int, kind: str, shape: tuple) -> None:
    """Refuse --patch FILE at a stride other than its own (its sizes were chosen at that one);
    note once where FILE was calibrated on other data, or for several members."""
    made = calibrated(file)
    own = made.get("stride")
    check(
        own is None or own == stride,
        f"--stride {stride}: {file} was calibrated at stride {own}; leave --stride out or give "
        f"{own}",
    )
    data, members = made.get("data") or {}, made.get("members") or []
    notes = []
    if data and (data.get("kind"), list(data.get("shape") or ())) != (kind, list(shape)):
        shape_text = "x".join(map(str, data.get("shape") or ())) or "?"
        notes.append(
            f"it was calibrated on {data.get('kind')} images of {shape_text}, "
            f"not these {kind} images of {'x'.join(map(str, shape))}"
        )
    if len(members) > 1:
        notes.append(f"it holds members {members}; its patch_size is member {members[0]}'s")
    for note in notes:
        if (file, note) not in _NOTED:
            _NOTED.add((file, note))
            print(f"note: --patch {file}: {note}")


_NOTED: set = set()  # the notes already printed: a command builds its machine more than once


def with_defaults(options: dict) -> dict:
    """--boundary, --lam and --attention of `options` (as given: None when left out) with
    their defaults filled in."""
    return {
        key: default if options.get(key) is None else options[key]
        for key, default in DEFAULTS.items()
    }


def same_machine(settings: dict, kind: str) -> dict:
    """`settings` (options as given) with --patch, --stride and the `DEFAULTS` spelled out, so
    that a rerun that spells out the defaults (or leaves them out) resumes the same folder
    (folders sampled before argparse left them None stored them spelled out). A machine of
    your own that gets --patch and --stride only when given (`own_reads`) keeps them as given:
    left out, it runs at its own defaults, not the command's."""
    patch, stride = spelled_out(kind, settings.get("patch"), settings.get("stride"))
    machine = settings.get("machine") or ""
    if names_code(machine) and "patch_size" not in _own_reads_if_there(machine):
        patch, stride = settings.get("patch"), settings.get("stride")
    spelled = {**settings, **with_defaults(settings), "patch": patch, "stride": stride}
    if machine == "bbels":  # zero padding, whatever was stored (circular, once)
        spelled["boundary"] = "zeros"
    return spelled


def machine_from_args(args, images: torch.Tensor, schedule, kind: str, patch: int | None = None):
    """Build the machine the options name, for a dataset of `kind` (`patch` overrides --patch).
    A machine of your own (--machine FILE.py:Class) is named by its absolute path from here on."""
    from mosaicdiff.theory.machines import build_machine
    from mosaicdiff.theory.schedule import PatchSchedule

    own = names_code(args.machine)
    if own:
        args.machine = anchored(args.machine)
    check(
        own or args.machine in MACHINES,
        f"--machine {args.machine!r} is not one of {list(MACHINES)}, nor one of your own as "
        "FILE.py:Class (examples/own_machine.py)",
    )
    name = args.machine
    for flag, valid in (("boundary", ("circular", "zeros")), ("attention", ("soft", "top1"))):
        if getattr(args, flag) is not None:
            choice(getattr(args, flag), f"--{flag}", valid)
    precision = PRECISIONS[choice(args.precision, "--precision", PRECISIONS)]
    # Options the machine never reads are refused when given, even at their default values.
    given = {
        "patch_size": args.patch if patch is None else patch,
        "stride": args.stride,
        "boundary": args.boundary,
        "lam": args.lam,
        "attention": args.attention,
    }
    unset = lambda key: given[key] is None  # noqa: E731
    if own:
        taken = own_options(name)
        for key, flag in FLAGS.items():
            check(key in taken or unset(key), f"{flag} {given[key]}: {name} takes no {key}")
    if not own and name != "attn":
        for key in ("lam", "attention"):
            value = given[key]
            check(unset(key), f"{FLAGS[key]} {value} is read by --machine attn only, not {name}")
    if name == "ideal":
        for key in ("patch_size", "stride", "boundary"):
            check(
                unset(key),
                f"{FLAGS[key]} {given[key]}: --machine ideal scores whole images, not patches",
            )
    check(
        name != "bbels" or given["boundary"] in (None, "zeros"),
        f"--boundary {given['boundary']}: --machine bbels is ELS with zero padding (els "
        "--boundary zeros); for circular padding use --machine els",
    )
    # What the machine reads is stored as it reads it, a default spelled out; one of your own
    # gets the defaults of the options its __init__ names, the others only when set.
    if own:
        reads = own_reads(name)
    else:
        reads = {"ideal": (), "attn": FLAGS}.get(name, ("patch_size", "stride", "boundary"))
    for key, default in DEFAULTS.items():
        if key in reads and getattr(args, key) is None:
            setattr(args, key, "zeros" if (name, key) == ("bbels", "boundary") else default)
    named, stride = spelled_out(kind, args.patch if patch is None else str(patch), args.stride)
    if patch is None:
        if patch_file(named) is None:
            patch = int(named)
        else:
            check(
                Path(args.patch).is_file(),
                f"--patch {args.patch!r} is neither an int nor a file (a patch schedule JSON "
                "from `theory calibrate`)",
            )
            patch = PatchSchedule.load(args.patch, schedule.T)
            _check_calibrated(args.patch, stride, kind, tuple(images.shape[1:]))
    if name == "attn":
        h, w = images.shape[-2:]
        check(
            stride < 1 or h % stride or w % stride or (h // stride) * (w // stride) >= 2,
            f"--stride {stride}: one cell covers the whole {h}x{w} image, so --machine attn "
            "has no other patch to attend to and is ELS whatever --lam; use a smaller --stride",
        )
    if name != "ideal" and (not own or "patch_size" in taken):  # they see k x k windows
        side = min(images.shape[-2:])
        sizes = set(patch.sizes()) if isinstance(patch, PatchSchedule) else {patch}
        named_in = f" (in {args.patch})" if isinstance(patch, PatchSchedule) else ""
        for k in sorted(sizes):
            check(
                1 <= k <= side,
                f"patch size {k}{named_in} must be between 1 and {side}, the image side",
            )
    options = {"stride": stride, **with_defaults(vars(args))}
    # The ranges the built-in machines check, named by flag (and for one of your own that may
    # not check them); an option a machine does not read was refused above.
    check(stride >= 1 or (own and "stride" not in taken), f"--stride={stride} must be at least 1")
    lam = options["lam"]
    check(0 <= lam <= 1 or (own and "lam" not in taken), f"--lam={lam} must lie in [0, 1]")
    if own:
        options = {"patch_size": patch, **options}
        options = {k: v for k, v in options.items() if k in reads or not unset(k)}
        return build_custom(name, images, schedule, precision, **options)
    return build_machine(name, images, schedule, patch, dtype=precision, **options)


def own_reads(spec: str) -> set[str]:
    """The options the machine of your own `spec` gets with the command's defaults where they
    are left out: those its `__init__` names, and the stride with a patch size it names (the
    pairings' default patch 2 goes with stride 2, also where the stride is passed on through
    `**kwargs`, as in a subclass of AttentionELS). The others it takes only when given."""
    named = own_options(spec, passed_on=False)
    if "patch_size" in named and "stride" in own_options(spec):
        named.add("stride")
    return named


def _own_reads_if_there(spec: str) -> set[str]:
    """`own_reads`, or nothing for a machine whose file is gone (a folder's stored machine that
    another --machine now replaces: the settings differ anyway)."""
    try:
        return own_reads(spec)
    except UserError:
        return set()


def own_options(spec: str, passed_on: bool = True) -> set[str]:
    """The options of `FLAGS` that the machine of your own `spec` names takes (`custom.takes`)."""
    return takes(load_machine_class(spec), passed_on)
