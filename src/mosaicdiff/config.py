"""Frozen configuration dataclasses, one per concept, composed into `RunConfig`.

Defaults are the paper's setup (Finn et al. 2025, Sec. 3 and App. B); where the paper is silent
the default is ours and the field's comment says so. `config_io.override(cfg,
["train.epochs=300"])` reaches every field; every field is validated on construction with a
one-line `UserError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mosaicdiff.config_io import coerce, from_dict, to_dict
from mosaicdiff.errors import check
from mosaicdiff.own_code import names_code

Pairing = tuple[str, str]
MAX_SEED = 2**31 - 1  # every seed: data, train, sample
MAX_IMAGE_SIZE = 1024  # folder data's resize side: beyond what a CPU toolkit trains on

PAPER_PATTERN_TYPES: tuple[tuple[Pairing, ...], ...] = (
    (("red", "green"), ("yellow", "blue")),
    (("red", "yellow"), ("green", "blue")),
    (("red", "blue"), ("green", "yellow")),
)


# The DataConfig fields that only kind=pairings reads.
PAIRINGS_FIELDS = ("n_images", "quadrants_per_side", "colours", "pattern_types", "layout", "seed")


Noise = Literal["threefry", "torch"]  # the samplers' noise sources (`noise.step_noise`)
# A samples folder's noise: "indexed", Threefry keyed by (sample seed, training seed) and counted
# by the sample's index, so a sample does not depend on its chunk; "threefry", the key drawn by
# each chunk's generator (earlier versions' default); "torch", torch.randn's stream (`noise.py`).
SampleNoise = Literal["indexed", "threefry", "torch"]
Layout = Literal["columns", "rows"]  # where a quadrant shows its key colour: left column, top row


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["pairings", "digits", "npz", "folder"] = "pairings"
    n_images: int = 2048  # pairings only; digits uses all 1,797
    quadrants_per_side: int = 2  # 2 -> 4x4 images of 2x2 quadrants
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    pattern_types: tuple[tuple[Pairing, ...], ...] = PAPER_PATTERN_TYPES
    layout: Layout = "columns"  # ours: key in the left column, value right
    seed: int = 0
    path: str = ""  # npz or folder
    image_size: int = 0  # folder: resize to this side (0 keeps the size)
    subset: int = 0  # digits, npz, folder: only the first N images (0: all); ours

    def __post_init__(self):
        _check_fields(self)
        check(self.n_images >= 1, f"data.n_images={self.n_images} must be at least 1")
        check_seed("data.seed", self.seed)
        check(
            1 <= self.quadrants_per_side <= 64,
            f"data.quadrants_per_side={self.quadrants_per_side} must be between 1 and 64",
        )
        check(
            0 <= self.image_size <= MAX_IMAGE_SIZE,
            f"data.image_size={self.image_size} must be 0 (keep the size) or 1 to {MAX_IMAGE_SIZE}",
        )
        if self.kind in ("npz", "folder"):
            check(bool(self.path), f"data.kind={self.kind} needs data.path")
        else:  # a path the data does not read would train on the wrong images without a word
            check(
                not self.path,
                f"data.path={self.path!r} is read by data.kind=npz or folder only, not "
                f"{self.kind}; set data.kind too",
            )
        check(
            self.kind == "folder" or self.image_size == 0,
            f"data.image_size={self.image_size} resizes data.kind=folder images only, "
            f"not {self.kind}",
        )
        check(self.subset >= 0, f"data.subset={self.subset} must be 0 (all images) or more")
        check(
            self.kind != "pairings" or self.subset == 0,
            f"data.subset={self.subset} takes the first images of digits, npz or folder data; "
            "the colour pairings' number is data.n_images",
        )
        if self.kind == "pairings":
            from mosaicdiff.data.pairings import validate_spec

            validate_spec(self.colours, self.pattern_types)


# The ModelConfig fields that only some architectures read, and those architectures.
ARCH_FIELDS = {
    "depth": ("resnet", "resnet_attn", "unet", "dit"),
    "kernel": ("resnet", "resnet_attn"),
    "patch": ("cnn", "attn", "identity", "top1", "dit"),
    "nonlinearity": ("cnn", "attn", "identity", "top1"),
    "gumbel_tau": ("top1",),
    "out_bias": ("cnn", "attn", "identity", "top1"),
}


# cnn/attn/identity/top1: the paper's networks; resnet, resnet_attn, unet, dit: natural data.
ARCHS = ("cnn", "attn", "identity", "top1", "resnet", "resnet_attn", "unet", "dit")


def custom_arch(arch: str) -> bool:
    """Whether `arch` names a network of the user's own, "FILE.py:Class" or "module:Class"
    (`models/custom.py`), rather than one of `ARCHS`."""
    return arch not in ARCHS and names_code(arch)


@dataclass(frozen=True)
class ModelConfig:
    # One of ARCHS, or a network of your own (a string, not a Literal, for that reason only).
    arch: str = "cnn"
    hidden: int = 32
    depth: int = 2  # resnet: residual blocks; dit: transformer layers; unet: levels
    kernel: int = 3  # resnet: conv kernel size (receptive field grows with depth and kernel)
    patch: int = 2  # kernel = stride of the first conv: one token per quadrant
    time_embedding: Literal["sinusoidal", "none"] = "sinusoidal"  # ours: paper silent
    nonlinearity: Literal["silu", "relu", "gelu"] = "silu"  # ours: paper silent
    gumbel_tau: float = 1.0  # top1 only: Gumbel-softmax temperature (ours: paper silent)
    # The transpose conv's bias: one per output channel, as ConvTranspose2d has (the paper's);
    # "position": one per channel and place in the p x p patch, what runs made before this
    # field existed trained (`stored_run`)
    out_bias: Literal["channel", "position"] = "channel"

    def __post_init__(self):
        _check_fields(self)
        check(
            self.arch in ARCHS or custom_arch(self.arch),
            f"model.arch={self.arch!r} is not one of {list(ARCHS)}, nor a network of your own "
            "(path/to/file.py:Class or module:Class)",
        )
        check(self.hidden >= 1, f"model.hidden={self.hidden} must be at least 1")
        check(self.patch >= 1, f"model.patch={self.patch} must be at least 1")
        check(self.depth >= 1, f"model.depth={self.depth} must be at least 1")
        check(self.kernel >= 1 and self.kernel % 2 == 1, f"model.kernel={self.kernel} must be odd")
        check(self.gumbel_tau > 0, f"model.gumbel_tau={self.gumbel_tau} must be positive")


@dataclass(frozen=True)
class DiffusionConfig:
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        _check_fields(self)
        check(self.T >= 2, f"diffusion.T={self.T} must be at least 2")
        check(
            0 < self.beta_start <= self.beta_end < 1,
            f"diffusion betas {self.beta_start}..{self.beta_end} must satisfy 0 < start <= end < 1",
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5000  # top1: 10,000 in the paper (see presets)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    ema_decay: float = 0.9999
    seeds: tuple[int, ...] = (0,)
    loss_weighting: Literal["one_minus_alpha_bar", "none"] = "one_minus_alpha_bar"
    checkpoint_every: int = 100  # epochs
    keep_every: int = 0  # epochs: also keep these checkpoints for `history` (0: the last two)

    def __post_init__(self):
        _check_fields(self)
        check(self.epochs >= 1, f"train.epochs={self.epochs} must be at least 1")
        check(self.batch_size >= 1, f"train.batch_size={self.batch_size} must be at least 1")
        check(self.lr > 0, f"train.lr={self.lr} must be positive")
        check(self.weight_decay >= 0, f"train.weight_decay={self.weight_decay} must be >= 0")
        check(0 <= self.ema_decay < 1, f"train.ema_decay={self.ema_decay} must be in [0, 1)")
        check(len(self.seeds) >= 1, "train.seeds must name at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), f"train.seeds={self.seeds} repeats a seed")
        for seed in self.seeds:
            check_seed("train.seeds", seed)
        check(
            self.checkpoint_every >= 1,
            f"train.checkpoint_every={self.checkpoint_every} must be at least 1",
        )
        check(
            self.keep_every >= 0,
            f"train.keep_every={self.keep_every} must be 0 (keep only the last two checkpoints) "
            "or a number of epochs",
        )


@dataclass(frozen=True)
class SampleConfig:
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    steps: int = 1000  # ddpm always uses every step; ddim may use fewer
    eta: float = 0.0  # ddim only; 1, unclipped, is ancestral DDPM respaced to `steps`
    n_runs: int = 100
    n_per_run: int = 10_000
    seed: int = 0
    chunk_size: int = 100_000  # samples held in memory at once, over all seeds of a run
    clip_x0: bool = False  # clamp the predicted x0 to [-1, 1] each step (diffusers' clip_sample)
    noise: SampleNoise = "indexed"  # per sample and seed; per chunk; or torch's stream

    def __post_init__(self):
        _check_fields(self)
        check(self.steps >= 1, f"sample.steps={self.steps} must be at least 1")
        # eta > 1 asks for more noise than the step has: DDIM's sigma would exceed
        # sqrt(1 - alpha_bar_prev), and the direction term's square root would be of a negative
        check(0 <= self.eta <= 1, f"sample.eta={self.eta} must be between 0 and 1")
        check(self.n_runs >= 1, f"sample.n_runs={self.n_runs} must be at least 1")
        check(self.n_per_run >= 1, f"sample.n_per_run={self.n_per_run} must be at least 1")
        check(self.chunk_size >= 1, f"sample.chunk_size={self.chunk_size} must be at least 1")
        check_seed("sample.seed", self.seed)


DDIM_STEPS = 50  # DDIM's step count wherever none is given

# Sampling defaults on data other than the colour pairings (ours): the paper's 100 x 10,000
# samples per seed at 1,000 DDPM steps would take days through a natural-data network on a
# CPU, and DDIM without clipping x0 runs away for briefly trained ones.
NATURAL_SAMPLE: dict[str, Any] = {
    "sampler": "ddim",
    "steps": DDIM_STEPS,
    "n_runs": 1,
    "n_per_run": 1000,
    "clip_x0": True,
}


def check_seed(name: str, seed: int) -> None:
    """Seeds are mixed into other seeds by products (`generate.chunk_seed`,
    `training.data_seed`) that must stay within torch's 64-bit generator seeds."""
    check(0 <= seed <= MAX_SEED, f"{name}: seed {seed} must be between 0 and {MAX_SEED}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    device: str = "cpu"

    def __post_init__(self):
        for name, cls in typing.get_type_hints(RunConfig).items():  # probe 64: a dict passed
            value = getattr(self, name)
            check(
                not dataclasses.is_dataclass(cls) or isinstance(value, cls),
                f"{name}={value!r} must be a {cls.__name__} (config_io.from_dict builds a "
                "RunConfig from nested dicts)",
            )
        check(
            isinstance(self.device, str)
            and (self.device == "cpu" or self.device.startswith("cuda")),
            f"device={self.device!r} must be 'cpu' or 'cuda' (optionally 'cuda:N')",
        )
        if self.sample.sampler == "ddpm":
            check(
                self.sample.steps == self.diffusion.T,
                f"sample.steps={self.sample.steps}: ddpm samples every one of the "
                f"{self.diffusion.T} steps; use sample.sampler=ddim for fewer (with "
                "sample.eta=1 and x0 unclipped it is DDPM's ancestral sampler, respaced)",
            )
            check(
                self.sample.eta == 0,
                f"sample.eta={self.sample.eta} is DDIM's noise level; ddpm draws its own at every "
                "step: use sample.sampler=ddim, or leave eta at 0",
            )
        check(
            self.sample.steps <= self.diffusion.T,
            f"sample.steps={self.sample.steps} must be at most diffusion.T={self.diffusion.T}",
        )


def defaults_for(kind: str) -> RunConfig:
    """The defaults for data of `kind`: the paper's setup, with `NATURAL_SAMPLE` on any data
    but the colour pairings."""
    cfg = RunConfig()
    if kind == "pairings":
        return cfg
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, **NATURAL_SAMPLE))


def new_run_config(layer: Callable[[dict], dict]) -> RunConfig:
    """A new run's config: `layer` (a `to_dict` mapping -> it with the user's settings laid
    over) applied to the defaults for the data kind those settings name."""
    kind = layer(to_dict(RunConfig()))["data"]["kind"]
    return from_dict(RunConfig, layer(to_dict(defaults_for(kind))))


# --- configs written by older versions ---------------------------------------------------


def stored_run(stored: dict) -> dict:
    """A stored `RunConfig` dict (a run's config.json, a sweep point's record), read as what
    it trained: the paper's networks made before `model.out_bias` existed had a bias per
    channel and place in the patch, not today's default of one per channel."""
    model = stored.get("model")
    if not isinstance(model, dict) or model.get("arch", "cnn") not in ARCH_FIELDS["out_bias"]:
        return stored
    return {**stored, "model": {"out_bias": "position", **model}}


# Fields whose default has changed: a run made before holds the old value (model.out_bias by
# `stored_run`; sample.noise explicitly, "threefry" or, before it existed, "torch").
CHANGED_DEFAULTS = ("model.out_bias", "sample.noise")


def older_defaults(changed: list[str]) -> str:
    """What to add to a refusal whose `differences` hold a run made before a default of
    `CHANGED_DEFAULTS` changed (a field that differs only in being today's default): the
    setting that continues it."""
    olds = []
    for name in CHANGED_DEFAULTS:  # a difference reads 'section.field: "old" -> "new"'
        section, field_name = name.split(".")
        default = getattr(getattr(RunConfig(), section), field_name)
        for d in changed:
            if d.startswith(f"{name}: ") and d.endswith(f' -> "{default}"'):
                old = d.removeprefix(f"{name}: ").split(" -> ")[0].strip('"')
                olds.append(f"{name}={old}")
    return f" (made before its default changed: {' '.join(olds)} continues it)" if olds else ""


def stored_sample(stored: dict) -> dict:
    """A stored `SampleConfig` dict, read as what it drew: samples written before
    `sample.noise` existed came from torch's generator stream, not today's default."""
    return {"noise": "torch", **stored}


def _check_fields(obj: Any) -> None:
    """Every field of a config section of its type, as `config_io.from_dict` reads one: a section
    built directly (`TrainConfig(seeds=3)`, `TrainConfig(lr="1e-3")`) is refused in one line, not
    by a TypeError in the checks after, and a list where a tuple belongs becomes the tuple."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        value = coerce(tp, getattr(obj, name), f"{_section(obj)}.{name}")
        object.__setattr__(obj, name, value)


def _section(obj: Any) -> str:
    return type(obj).__name__.removesuffix("Config").lower()
