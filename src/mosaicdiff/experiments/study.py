"""`mosaicdiff study digits`: creativity of four architectures on natural data, beside the
closed-form machines (issue 6; SPEC section 3).

Trains a CNN with a small receptive field (`resnet`), the same CNN with one self-attention layer
(`resnet_attn`), a U-Net with attention (`unet`) and a DiT (`dit`) on scikit-learn's 8x8 digits,
several seeds each; samples them with DDIM; measures memorization, novelty, diversity and the
patch-mosaic score (`metrics/creativity.py`); and compares every network with IdealScore, ELS
and AttentionELS by the r^2 of final samples drawn from the same noise (Kamb & Ganguli 2024,
Sec. 5). The machines' patch size per step is calibrated to the CNN (K&G Sec. 5). An optional
receptive-field sweep trains the CNN at a few (depth, kernel) points. Every stage is reused when
its outputs exist, so running the same command again only does what is missing:

    OUT/plan.json            the resolved plan (study settings, one RunConfig per run)
    OUT/runs/ARCH/           a run directory per architecture (all seeds in one group)
    OUT/runs/rf-dD-kK/       receptive-field sweep points (seed 0 only)
    OUT/theory/              calibration.json, machine samples, theory.json
    OUT/report/              report.md, report.html, table.csv, table.json, figures/
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from mosaicdiff.config import ARCH_FIELDS, NATURAL_SAMPLE, RunConfig, SampleConfig
from mosaicdiff.config_io import assign, check_once, from_dict, override, split_assignment, to_dict
from mosaicdiff.errors import UserError, check, check_out
from mosaicdiff.io import atomic_write_json, read_json

ARCHS = ("resnet", "resnet_attn", "unet", "dit")
SIDE = 8  # scikit-learn's digits are 8x8: the largest patch the calibration and mosaic score take
ARCH_SETS = {  # per-architecture shape; digits are 8x8, so the U-Net has two levels
    "resnet": ["model.depth=1", "model.kernel=3"],
    "resnet_attn": ["model.depth=1", "model.kernel=3"],
    "unet": ["model.depth=2"],
    "dit": ["model.depth=2", "model.patch=2"],
}
STUDY_MACHINES = {  # label -> build_machine keyword arguments
    "IdealScore": {"name": "ideal"},
    "ELS": {"name": "els"},
    "AttentionELS": {"name": "attn", "attention": "soft", "lam": 0.5},
}


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of the study's comparison stages (training sizes live in the RunConfig)."""

    n_samples: int = 256  # network samples per seed for the creativity metrics
    agree_samples: int = 16  # samples per machine compared with the networks
    agree_steps: int = 25  # DDIM steps of the network-machine comparison
    calib_samples: int = 8  # network trajectories the patch-size calibration averages over
    calib_every: int = 100  # calibrate at every calib_every-th step (and T - 1)
    candidates: tuple[int, ...] = (3, 5, 7)  # patch sizes tried by the calibration
    mosaic_patch: int = 3  # patch side of the mosaic score
    sweep: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (3, 3))  # (depth, kernel), seed 0
    archs: tuple[str, ...] = ARCHS

    def __post_init__(self):
        for name in ("n_samples", "agree_samples", "agree_steps", "calib_samples", "calib_every"):
            check(getattr(self, name) >= 1, f"study.{name}={getattr(self, name)} must be >= 1")
        check(len(self.candidates) >= 1, "study.candidates=[] must name at least one patch size")
        for k in self.candidates:
            check(
                1 <= k <= SIDE,
                f"study.candidates={list(self.candidates)}: patch size {k} must be between 1 "
                f"and {SIDE}, the image side",
            )
            check(
                k % 2 == 1,
                f"study.candidates={list(self.candidates)}: patch size {k} must be odd (the "
                "machines centre each k x k patch on a pixel, stride 1)",
            )
        check(
            1 <= self.mosaic_patch <= SIDE,
            f"study.mosaic_patch={self.mosaic_patch} must be between 1 and {SIDE}, the image side",
        )
        for depth, kernel in self.sweep:
            check(
                depth >= 1 and kernel >= 1 and kernel % 2 == 1,
                f"study.sweep: ({depth}, {kernel}) needs depth >= 1 and an odd kernel >= 1",
            )
        check(len(self.archs) >= 1, "study.archs must name at least one architecture")
        check(
            len(set(self.archs)) == len(self.archs),
            f"study.archs={list(self.archs)} names an architecture twice",
        )
        for arch in self.archs:
            check(arch in ARCHS, f"study.archs: {arch!r} is not one of {list(ARCHS)}")
        check(
            self.archs[0] == "resnet",
            f"study.archs={list(self.archs)} must start with resnet (calibration)",
        )


# Presets list only what differs from the defaults (RunConfig sections, and "study").
PRESETS: dict[str, dict] = {
    "quick": {
        "model": {"hidden": 16},  # measured: 28.5 min with the other core busy, one thread
        "train": {"epochs": 100, "seeds": (0, 1), "ema_decay": 0.995, "checkpoint_every": 50},
        "sample": {**NATURAL_SAMPLE, "n_per_run": 256},
        "study": {},
    },
    "full": {
        "model": {"hidden": 64},
        "train": {"epochs": 400, "seeds": (0, 1, 2), "ema_decay": 0.999},
        "sample": {**NATURAL_SAMPLE, "steps": 100},
        "study": {"n_samples": 1000, "agree_samples": 64, "agree_steps": 100, "calib_samples": 16},
    },
}


def preset_configs(name: str) -> tuple[RunConfig, StudyConfig]:
    """The base RunConfig (digits) and StudyConfig of preset `name`."""
    check(name in PRESETS, f"--preset {name!r} is not one of {list(PRESETS)}")
    cfg = override(RunConfig(), ["data.kind=digits"])
    study_cfg = StudyConfig()
    for section, values in PRESETS[name].items():
        if section == "study":
            study_cfg = replace(study_cfg, **values)
        else:
            cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return cfg, study_cfg


def run_configs(base: RunConfig, sc: StudyConfig) -> dict[str, RunConfig]:
    """One RunConfig per run directory: the architectures, then the sweep points (seed 0)."""
    check(base.data.kind == "digits", f"study digits needs data.kind=digits, not {base.data.kind}")
    T = base.diffusion.T
    for name in ("agree_steps", "calib_every"):
        value = getattr(sc, name)
        check(value <= T, f"study.{name}={value} must be at most diffusion.T={T}")
    out = {arch: override(base, [f"model.arch={arch}", *ARCH_SETS[arch]]) for arch in sc.archs}
    for depth, kernel in sc.sweep:
        cfg = override(
            base, ["model.arch=resnet", f"model.depth={depth}", f"model.kernel={kernel}"]
        )
        out[f"rf-d{depth}-k{kernel}"] = replace(cfg, train=replace(cfg.train, seeds=(0,)))
    return out


def creativity_stage(cfg: RunConfig, run_path: Path, sc: StudyConfig, progress: bool) -> list:
    """Sample the run (n_samples per seed) and score each seed's samples; cached per run."""
    from mosaicdiff.generate import draw_samples, load_samples, refuse_mixing
    from mosaicdiff.metrics.creativity import MOSAIC_ATOL, evaluate_creativity
    from mosaicdiff.runs import load_run

    scfg = replace(cfg.sample, n_runs=1, n_per_run=sc.n_samples)
    loaded = load_run(run_path, device=cfg.device)
    folder = loaded.run.samples_dir("study")
    cache = folder / "creativity.json"
    key = {"sample": to_dict(scfg), "patch": sc.mosaic_patch, "epoch": loaded.epoch}
    key["mosaic_atol"] = MOSAIC_ATOL  # measured before the bound existed: measured again
    if cache.is_file() and read_json(cache).get("key") == key:
        return read_json(cache)["per_seed"]
    try:  # the samples drawn so far (measured or not) are kept where they are still these
        refuse_mixing(folder, scfg, loaded.epoch, loaded.weights)
    except UserError:
        import shutil

        shutil.rmtree(folder)  # drawn with other settings or by an older checkpoint: redraw
    draw_samples(loaded, scfg, name="study", progress=progress)  # resumes, or none to draw
    samples = torch.from_numpy(load_samples(folder))  # (S, n, C, H, W)
    train_images = loaded.dataset.images
    per_seed = [evaluate_creativity(s, train_images, patch=sc.mosaic_patch) for s in samples]
    atomic_write_json(cache, {"key": key, "per_seed": per_seed})
    return per_seed


# The study sizes `theory_stage` reads: another n_samples, mosaic_patch or sweep reuses it.
THEORY_READS = ("agree_samples", "agree_steps", "calib_samples", "calib_every", "candidates")


def _theory_part(study: dict) -> dict:
    return {k: study.get(k) for k in (*THEORY_READS, "archs")}


def theory_stage(out: Path, configs: dict[str, RunConfig], sc: StudyConfig) -> dict:
    """Calibrate the machines' patch size to the CNN, sample each machine once, and compare
    every seed of every architecture with each machine (r^2 of final samples). Cached."""
    from mosaicdiff.data import load_dataset
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.runs import load_run
    from mosaicdiff.sampling import sample
    from mosaicdiff.theory.agreement import r_squared, spread
    from mosaicdiff.theory.calibrate import calibrate_patch_sizes
    from mosaicdiff.theory.machines import build_machine

    folder = out / "theory"
    cnn = configs[sc.archs[0]]
    key = {"study": _theory_part(to_dict(sc)), "runs": {a: to_dict(configs[a]) for a in sc.archs}}
    cache = folder / "theory.json"
    stored = read_json(cache) if cache.is_file() else {}
    if "key" in stored and {**stored["key"], "study": _theory_part(stored["key"]["study"])} == key:
        return stored  # (caches before the key held only these stored the whole StudyConfig)
    dataset = load_dataset(cnn.data)
    schedule = Schedule.from_config(cnn.diffusion)
    images = dataset.images
    nets = {a: load_run(out / "runs" / a, device="cpu").model for a in sc.archs}
    g = torch.Generator().manual_seed(0)
    x_calib = torch.randn((sc.calib_samples, *dataset.shape), generator=g)
    calibration = calibrate_patch_sizes(
        nets[sc.archs[0]].member(0).as_denoiser(),
        lambda k: build_machine("els", images, schedule, k),
        schedule,
        sc.candidates,
        x_calib,
        seed=1,
        every=sc.calib_every,
    )
    atomic_write_json(folder / "calibration.json", calibration)
    patch = calibration["patch_size"]
    # Networks and machines sample alike: with the runs' clip (a machine's x0 estimate is a
    # convex combination of training pixels, so the clamp only trims rounding).
    clip = cnn.sample.clip_x0
    sampler = partial(sample, sampler="ddim", steps=sc.agree_steps, eta=0.0, clip=clip)
    x_T = torch.randn((sc.agree_samples, *dataset.shape), generator=g)
    machine_x0, seconds = {}, {}
    for label, kw in STUDY_MACHINES.items():
        tick = time.perf_counter()
        machine = build_machine(images=images, schedule=schedule, patch_size=patch, **kw)
        machine_x0[label] = sampler(machine, x_T, torch.Generator().manual_seed(2), schedule)
        seconds[label] = time.perf_counter() - tick
        torch.save(machine_x0[label].float(), folder / f"{label}.pt")
    agreement = {}
    for arch, model in nets.items():
        agreement[arch] = []
        for i in range(model.n_seeds):
            net = model.member(i).as_denoiser()
            with torch.inference_mode():
                x_net = sampler(net, x_T, torch.Generator().manual_seed(2), schedule)
            per = {}
            for label, x_m in machine_x0.items():
                r2 = r_squared(x_net, x_m)
                per[label] = {"r2": r2.tolist(), **spread(r2)}
            agreement[arch].append(per)
    result = {"key": key, "calibration": calibration, "agreement": agreement, "seconds": seconds}
    atomic_write_json(cache, result)
    return result


def study(
    base: RunConfig,
    sc: StudyConfig,
    out: str | Path,
    preset: str = "quick",
    progress: bool = True,
) -> Path:
    """Run every missing stage and write the report; return the report folder."""
    from mosaicdiff.experiments.reproduce import train_stage
    from mosaicdiff.experiments.study_report import write_study_report
    from mosaicdiff.experiments.timing import Laps, done_line

    out = Path(out)
    configs = run_configs(base, sc)
    check_plan(out, configs)  # before plan.json: a refused study leaves the folder as it was
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "plan.json",
        {
            "preset": preset,
            "study": to_dict(sc),
            "configs": {k: to_dict(c) for k, c in configs.items()},
        },
    )
    start = time.perf_counter()
    timings, creativity = {}, {}
    for name, cfg in configs.items():
        laps = Laps()
        train_stage(cfg, out / "runs" / name, progress)
        laps("train")
        creativity[name] = creativity_stage(cfg, out / "runs" / name, sc, progress)
        laps("sample + creativity")
        timings[name] = laps.seconds
        print(done_line(name, laps.seconds), flush=True)
    tick = time.perf_counter()
    theory = theory_stage(out, configs, sc)
    timings["theory"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    return write_study_report(out, configs, sc, creativity, theory, preset, timings)


def check_plan(out: Path, configs: dict[str, RunConfig]) -> None:
    """Refuse a plan before anything is written: the data read and each network built (as
    `train --dry-run` does: a data.subset past the digits is refused here, not after the
    first run's folder exists), and a run already in OUT with other settings named."""
    from mosaicdiff.data import load_dataset
    from mosaicdiff.models import build_model
    from mosaicdiff.runs import RunDir

    shape = load_dataset(next(iter(configs.values())).data).shape  # one dataset for all
    for name, cfg in configs.items():
        build_model(cfg.model, shape, cfg.diffusion.T, (0,))
        RunDir(out / "runs" / name).check_continues(cfg)


def register(sub) -> None:
    """Add `study` to the CLI's subparsers."""
    from mosaicdiff.cli import out_path

    p = sub.add_parser(
        "study",
        help="creativity of CNN, CNN+attention, U-Net and DiT on digits, beside the machines",
        description="Train four architectures on scikit-learn digits, measure memorization, "
        "novelty, diversity and mosaic scores, compare each with IdealScore, ELS and "
        "AttentionELS, and write a report. Re-running reuses finished stages.",
    )
    p.add_argument("dataset", choices=["digits"], help="the natural dataset (digits)")
    p.add_argument("--preset", default="quick", help=f"one of {list(PRESETS)} (default quick)")
    p.add_argument("--out", type=out_path, help="output folder (default reports/study-DATASET)")
    p.add_argument("--seeds", help="training seeds: a count (3 -> 0,1,2) or a list (0,4,7)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (train.epochs=10) or a study size (study.n_samples=64)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_study)


STUDY_SETS_MODEL = (
    "study digits sets each run's model.arch, depth, kernel and patch itself; choose the "
    "architectures with study.archs and the CNN sweep with study.sweep"
)


def cmd_study(args) -> int:
    """Handler of `mosaicdiff study`."""
    from mosaicdiff.resolve import resolve_config
    from mosaicdiff.runs import refuse_inside_run

    preset, sc = preset_configs(args.preset)
    sets = args.set or []
    check_once(sets)
    study_sets = [s for s in sets if s.startswith("study.")]
    args.set = [s for s in sets if not s.startswith("study.")]
    given = dict(split_assignment(s) for s in args.set)
    for field in ("arch", "depth", "kernel", "patch"):  # run_configs sets these per run
        key = f"model.{field}"  # (study takes no --config file: --set is the only way in)
        check(key not in given, f"{key}={given.get(key)}: {STUDY_SETS_MODEL}")
    for key in ("sample.n_runs", "sample.n_per_run"):  # creativity_stage draws n_samples
        check(
            key not in given,
            f"{key}={given.get(key)}: study digits draws study.n_samples samples per seed in "
            "one run; set that instead",
        )
    for key, value in given.items():  # model.nonlinearity, gumbel_tau: the paper's nets only
        field = key.removeprefix("model.")
        readers = ARCH_FIELDS.get(field, ARCHS) if field != key else ARCHS
        check(
            bool(set(readers) & set(ARCHS)),
            f"{key}={value} is read by none of the study's architectures {list(ARCHS)}",
        )
    base = resolve_config(args, preset)
    sc = from_dict(StudyConfig, assign({"study": to_dict(sc)}, study_sets)["study"], "study.")
    out = check_out(args.out or f"reports/study-{args.dataset}")
    refuse_inside_run(out)
    if args.dry_run:
        configs = run_configs(base, sc)
        check_plan(out, configs)
        print(
            json.dumps(
                {"study": to_dict(sc), **{k: to_dict(c) for k, c in configs.items()}}, indent=2
            )
        )
        return 0
    tick = time.perf_counter()
    report = study(base, sc, out, args.preset, progress=not args.no_progress)
    print((report / "table.md").read_text())
    print(f"report -> {report / 'report.html'}  ({time.perf_counter() - tick:.0f} s)")
    return 0


__all__ = ["PRESETS", "StudyConfig", "study", "preset_configs", "register", "SampleConfig"]
