"""A run's config from what the user gives, layered: the defaults for its data kind (or the
stored run, or a preset) <- a --config file <- the flags <- --set; a sweep's base and grid
values are laid the same way. Every field given that the data kind or the architecture never
reads is refused, rather than run as if it had not been given.
"""

from __future__ import annotations

import json
import os
from functools import partial

from mosaicdiff.config import (
    ARCH_FIELDS,
    DDIM_STEPS,
    PAIRINGS_FIELDS,
    RunConfig,
    custom_arch,
    new_run_config,
)
from mosaicdiff.config_io import (
    assign,
    check_once,
    from_dict,
    read_mapping,
    split_assignment,
    to_dict,
)
from mosaicdiff.errors import UserError, check
from mosaicdiff.own_code import anchored

MAX_SEEDS = 10_000  # seeds of one run train together, as one batched program


def parse_seeds(text: str) -> tuple[int, ...]:
    """'3' -> (0, 1, 2); '4,7' -> (4, 7)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds {text!r} must be a count (3) or a list (0,4,7)") from None
    if len(parts) == 1:
        count = parts[0]
        check(
            1 <= count <= MAX_SEEDS,
            f"--seeds {text!r}: a count must be 1 to {MAX_SEEDS} (--seeds 1 trains seed 0; one "
            "other seed alone is --set 'train.seeds=[5]')",
        )
        return tuple(range(count))
    return tuple(parts)


# The flags that are short for one config field (and --seeds, parsed first, for train.seeds).
FLAG_KEYS = {
    "model": "model.arch",
    "epochs": "train.epochs",
    "runs": "sample.n_runs",
    "per_run": "sample.n_per_run",
    "sampler": "sample.sampler",
    "steps": "sample.steps",
    "sample_seed": "sample.seed",
    "device": "device",
}


def resolve_config(args, base: RunConfig | None = None) -> RunConfig:
    """base <- --config file <- flags <- --set. Without a base (a new run) the base is the
    defaults for the data kind these name (`config.defaults_for`)."""
    path = getattr(args, "config", None)
    layer = partial(_layered, args, read_mapping(path, "--config") if path else None)
    cfg = new_run_config(layer) if base is None else from_dict(RunConfig, layer(to_dict(base)))
    check_device(cfg.device)
    check_own_network(cfg)
    return cfg


def check_own_network(cfg: RunConfig) -> None:
    """A network of your own is imported, and its class checked, as its config is resolved:
    a --dry-run or a sweep's plan refuses a missing or broken file too."""
    if custom_arch(cfg.model.arch):
        from mosaicdiff.models.custom import load_class

        load_class(cfg.model.arch)


def _layered(args, from_file: dict | None, data: dict) -> dict:
    """`data` with the --config file's mapping (read once), the flags and --set laid over it;
    not yet validated."""
    from_file_changed = set()
    if from_file is not None:
        from_file_changed = changed_keys(data, from_file)
        data = lay_over(data, from_file, "--config")
    flags = {}  # config key -> the flag that set it
    sets = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            flags[key] = flag
            sets.append(f"{key}={json.dumps(value)}")
    if getattr(args, "seeds", None) is not None:
        flags["train.seeds"] = "seeds"
        sets.append(f"train.seeds={json.dumps(list(parse_seeds(args.seeds)))}")
    check_once(getattr(args, "set", None) or [])
    for text in getattr(args, "set", None) or []:
        key = split_assignment(text)[0]
        check(
            key not in flags,
            f"--set {text} and --{flags.get(key, '').replace('_', '-')} both set {key}; "
            "give it once",
        )
        sets.append(text)
    data = assign(data, sets)
    sampler = getattr(args, "sampler", None)
    given = {split_assignment(s)[0] for s in sets}
    if "sample.steps" not in given | from_file_changed:
        # --sampler ddim without --steps: its 50 steps; ddpm (given or not): every one of T
        if sampler == "ddim":
            data["sample"]["steps"] = DDIM_STEPS
        elif data["sample"]["sampler"] == "ddpm":
            data["sample"]["steps"] = data["diffusion"]["T"]
    if sampler == "ddpm" and "sample.eta" not in given:
        data["sample"]["eta"] = 0.0  # a run sampled with DDIM's eta, now sampled with ddpm
    anchor_paths(given | from_file_changed, data)
    refuse_unread(given | from_file_changed, data)
    return data


def anchor_paths(given: set[str], data: dict) -> None:
    """A data.path, or the file of a network of your own (model.arch=FILE.py:Class), given
    relative to the folder the command runs in is stored absolute: the run is later sampled,
    resumed or swept from other folders (and `~` is expanded)."""
    path = data["data"]["path"]
    if "data.path" in given and path and not os.path.isabs(path):
        data["data"]["path"] = os.path.abspath(os.path.expanduser(path))
    if "model.arch" in given and custom_arch(data["model"]["arch"]):
        data["model"]["arch"] = anchored(data["model"]["arch"])


def changed_keys(data: dict, extra: dict) -> set[str]:
    """The `section.field` keys that `extra` sets to something other than `data` holds: a
    saved --dry-run lists every field, and the ones left at their values are not choices."""
    plain = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 (tuples as lists)
    return {
        f"{section}.{name}"
        for section, fields in extra.items()
        if isinstance(fields, dict) and isinstance(data.get(section), dict)
        for name, value in fields.items()
        if plain(value) != plain(data[section].get(name))
    }


def refuse_unread(given: set[str], data: dict) -> None:
    """Refuse a field given on the command line (or changed by --config) that the data kind or
    the architecture never reads: else --set model.depth=4 on the cnn would train the usual cnn
    without a word."""
    kind, arch = data["data"]["kind"], data["model"]["arch"]
    for key in sorted(given):
        section, _, name = key.partition(".")
        value = data[section][name] if section in ("data", "model") else None
        if section == "data" and name in PAIRINGS_FIELDS:
            check(
                kind == "pairings",
                f"{key}={value!r} sets the colour pairings only, not data.kind={kind}",
            )
        if section == "model" and name in ARCH_FIELDS and custom_arch(arch):
            from mosaicdiff.models.custom import reads

            read = reads(arch)
            check(
                name in read,
                f"{key}={value!r} is not read by model.arch={arch} (its class's `reads` lists "
                f"{list(read)})",
            )
        elif section == "model" and name in ARCH_FIELDS:
            readers = ARCH_FIELDS[name]
            check(
                arch in readers,
                f"{key}={value!r} is read by model.arch in {list(readers)} only, not {arch}",
            )


def check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        check(
            torch.cuda.is_available(),
            f"device {device} (from --device, --set device or the run's config.json): no CUDA "
            "GPU is visible; use --device cpu",
        )


def lay_over(data: dict, extra: dict, what: str = "") -> dict:
    """`extra` (a --config file's mapping, a sweep's base) merged into `data`, a `to_dict`;
    refused, naming `what`, where it puts a value in place of a config section."""
    for section, fields in extra.items():
        check(
            isinstance(fields, dict) or not isinstance(data.get(section), dict),
            f"{what}{': ' if what else ''}config section {section} must be a mapping, "
            f"not {fields!r}",
        )
    return deep_merge(data, extra)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out
