"""Config dataclasses as text and back: read from YAML, TOML or JSON files, turned into plain
dicts and rebuilt with every value checked, compared, and overridden by `section.field=value`.

Generic over any (nested) frozen dataclass; config.py holds the dataclasses themselves.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from mosaicdiff.errors import UserError, check


def read_mapping(path: str | Path, what: str) -> dict:
    """A mapping from a YAML (.yaml, .yml), TOML (.toml) or JSON (any other) file. `what` names
    the file in the one-line errors, e.g. "--config"."""
    p = Path(path)
    check(p.is_file(), f"{what} {str(p)!r} is not a file")
    try:
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            data = _load_yaml(text)
        elif p.suffix == ".toml":  # tomllib refuses a key given twice itself
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except Exception as e:  # the parsers' own error types differ
        mark = getattr(e, "problem_mark", None)  # YAML's message spans lines, with a caret
        detail = f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else e
        raise UserError(f"{what} {str(p)!r} could not be parsed ({detail})") from None
    data = {} if data is None else data  # an empty YAML file
    check(
        isinstance(data, dict), f"{what} {str(p)!r} must hold a mapping, not {type(data).__name__}"
    )
    return data


def _refuse_duplicates(pairs: list[tuple]) -> dict:
    """A JSON object as a dict, refusing a key given twice (json keeps the last silently)."""
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"key(s) {twice} given twice in one mapping")
    return dict(pairs)


def _load_yaml(text: str) -> Any:
    """YAML by the safe loader, refusing a key given twice in one mapping: the safe loader
    keeps the last silently, so a grid's first list of values would vanish unseen."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=Loader)


def to_dict(cfg: Any) -> dict:
    """The config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    check(
        not unknown, f"unknown config key(s) {unknown} for {cls.__name__}; valid: {sorted(names)}"
    )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if is_dataclass(tp):
            check(isinstance(value, dict), f"config section {prefix}{name} must be a mapping")
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(tp, value, prefix + name)
    return cls(**kwargs)


def matches(stored: dict, cfg: Any) -> bool:
    """Whether `stored` (a `to_dict` written earlier) describes `cfg`. Fields added since it was
    written take their defaults, so a run made before a new option existed still matches."""
    try:
        return to_dict(from_dict(type(cfg), stored)) == to_dict(cfg)
    except UserError:
        return False


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The fields where two `to_dict`s differ, as 'key: old -> new' (nested keys dotted)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out


def override(cfg: Any, assignments: list[str]) -> Any:
    """Apply `section.field=value` assignments (values are JSON or bare strings) all at once,
    so fields that depend on each other (data.kind and data.path) can change together."""
    return from_dict(type(cfg), assign(to_dict(cfg), assignments))


# A number in decimal or exponent notation: what a float field takes from text.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def split_assignment(item: str) -> tuple[str, str]:
    """'section.field = value' -> ('section.field', ' value'): the key it sets, its raw value."""
    check("=" in item, f"override {item!r} must look like section.field=value")
    key, raw = item.split("=", 1)
    return key.strip(), raw


def check_once(assignments: list[str], option: str = "--set") -> set[str]:
    """The keys `assignments` set, refused where two of them set one key to different values
    (the later one would silently win)."""
    seen = {}
    for item in assignments:
        key = split_assignment(item)[0]
        first = seen.setdefault(key, item)
        check(first == item, f"{option} {first} and {option} {item} both set {key}; give it once")
    return set(seen)


def assign(data: dict, assignments: list[str]) -> dict:
    """`override` on a `to_dict` mapping: a copy of `data` with the assignments made, every key
    checked to exist but no value validated yet."""
    data = copy.deepcopy(data)
    for item in assignments:
        key, raw = split_assignment(item)
        node, names = data, key.split(".")
        for depth, name in enumerate(names):
            valid = sorted(node) if isinstance(node, dict) else []
            check(name in valid, f"unknown config key {key!r}; valid here: {valid}")
            if depth < len(names) - 1:
                node = node[name]
        check(not isinstance(node[names[-1]], dict), f"config key {key!r} is a section")
        try:
            node[names[-1]] = json.loads(raw)
        except json.JSONDecodeError as e:
            text = raw.strip()
            if isinstance(node[names[-1]], list) and text.startswith("["):
                # [resnet, unet] is resnet,unet; nested or unclosed brackets are not guessed at.
                inner = text[1:-1]
                flat = text.endswith("]") and "[" not in inner and "]" not in inner
                check(flat, f"{key}={raw!r} is not a JSON list ({e.msg}, column {e.colno})")
                node[names[-1]] = _split(inner)
            else:
                node[names[-1]] = raw
    return data


def coerce(tp: Any, value: Any, name: str) -> Any:
    """`value` as a field of type `tp` takes it (a list for a tuple, a number written as text for
    a float), or a one-line `UserError` naming the field `name`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        check(value in args, f"{name}={value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        # --seeds 3 is a count (seeds 0, 1, 2); a bare train.seeds=3 would silently be seed 3.
        check(
            name != "train.seeds" or not isinstance(value, int),
            f"train.seeds={value!r} is ambiguous: write [{value!r}] for that one seed, or "
            f"--seeds {value!r} for {value!r} seeds",
        )
        if isinstance(value, (int, float, str)) and args and args[-1] is Ellipsis:
            value = [value] if not isinstance(value, str) else _split(value)
        check(isinstance(value, (list, tuple)), f"{name}={value!r} must be a list")
        if args and args[-1] is Ellipsis:
            return tuple(coerce(args[0], v, f"{name}[{i}]") for i, v in enumerate(value))
        check(len(value) == len(args), f"{name}={value!r} must have {len(args)} items")
        return tuple(coerce(a, value[i], f"{name}[{i}]") for i, a in enumerate(args))
    if tp is bool:
        check(isinstance(value, bool), f"{name}={value!r} must be true or false")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        check(ok, f"{name}={value!r} must be a whole number")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 3e-4, without a dot, as text
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        check(ok and math.isfinite(value), f"{name}={value!r} must be a finite number")
        return float(value)
    if tp is str:
        check(isinstance(value, str), f"{name}={value!r} must be a string")
        return value
    raise UserError(f"{name}: unsupported config type {tp}")


def _split(text: str) -> list:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    out = []
    for p in parts:
        try:
            out.append(json.loads(p))
        except json.JSONDecodeError:
            out.append(p)
    return out
