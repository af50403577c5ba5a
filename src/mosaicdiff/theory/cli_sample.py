"""`mosaicdiff theory sample`: draw from a closed-form machine on a dataset, then score it.

The samples land in a folder like `mosaicdiff sample`'s (sample.json, chunk-*.npz, samples.png;
a rerun with the same settings resumes) plus samples.npz, all of them in one array. On the
colour pairings they are scored by consistency (consistency.json); on other data by the
creativity metrics `mosaicdiff evaluate` computes for networks (results-creativity.json, its
"seed" the sampling seed, and nearest.png).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from mosaicdiff.config import DDIM_STEPS, check_seed
from mosaicdiff.errors import check
from mosaicdiff.own_code import file_sha256, short
from mosaicdiff.theory.cli_checks import (
    DATA_KINDS,
    MACHINE_MAX_SIDE,
    calibrated,
    choice,
    machine_from_args,
    patch_file,
    positive,
    theory_out,
)


def cmd_sample(args) -> int:
    return prepare_sample(args)()


def prepare_sample(args) -> Callable[[], int]:
    """Check `theory sample`'s options, load its data and build its machine, and return the
    sampling itself: a bad value stops it before anything is written or printed (knob prepares
    every weight's sampling before it starts the first)."""
    from mosaicdiff.config import DataConfig
    from mosaicdiff.data import load_dataset
    from mosaicdiff.data.base import first_images
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.evaluate import CREATIVITY_LIMIT, MOSAIC_PATCH
    from mosaicdiff.generate import check_room
    from mosaicdiff.io import read_json, sha256
    from mosaicdiff.runs import fingerprints

    folder = theory_out(args.out)
    kind = choice(args.data, "--data", DATA_KINDS)
    check(kind not in ("npz", "folder") or args.data_path, f"--data {kind} needs --data-path")
    check(
        kind in ("npz", "folder") or not args.data_path,
        f"--data-path {args.data_path!r} is read by --data npz or folder only, not {kind}",
    )
    if args.data_path:  # stored with the settings: a rerun from another folder still resumes
        args.data_path = os.path.abspath(os.path.expanduser(args.data_path))
    check(
        kind == "folder" or args.image_size == 0,
        f"--image-size={args.image_size} resizes --data folder images only, not {kind}",
    )
    check(args.subset >= 0, f"--subset={args.subset} must be 0 (all images) or more")
    check(
        kind != "pairings" or args.subset == 0,
        f"--subset={args.subset} takes the first images of digits, npz or folder data; the "
        "colour pairings' number is --n-images",
    )
    pairings = DataConfig()
    for flag, dest, default in (
        ("--n-images", "n_images", pairings.n_images),
        ("--data-seed", "data_seed", pairings.seed),
    ):
        value = getattr(args, dest)
        check(
            kind == "pairings" or value is None,
            f"{flag}={value} sets the colour pairings only, not --data {kind}",
        )
        setattr(args, dest, default if value is None else value)  # stored with the settings
    check(
        kind != "pairings" or args.limit is None,
        f"--limit={args.limit} applies to the creativity metrics of data other than pairings",
    )
    args.limit = CREATIVITY_LIMIT if args.limit is None else args.limit
    # Left out, the sampler and clipping are those of a network's new run on this data
    # (config.NATURAL_SAMPLE), but a folder drawn before they were is resumed as it was drawn
    # (unclipped, by the sampler it names: probe 61).
    stored = _stored_settings(folder)
    before = stored if stored and "clip_x0" not in stored else None
    natural = kind != "pairings" and before is None
    if args.sampler is None:
        args.sampler = before.get("sampler", "ddpm") if before else ("ddim" if natural else "ddpm")
    if args.clip_x0 is None:
        args.clip_x0 = natural
    if args.noise is None:  # each sample's own (`generate.chunk_start`); as an older folder drew
        args.noise = stored.get("noise", "threefry") if stored is not None else "indexed"
    choice(args.noise, "--noise", ("indexed", "threefry"))
    choice(args.sampler, "--sampler", ("ddpm", "ddim"))
    for option in ("n", "batch", "limit"):
        positive(getattr(args, option), f"--{option}")
    check_seed("--seed", args.seed)
    # eta > 1 makes DDIM's noise exceed 1 - alpha_bar_prev: its direction term turns imaginary
    check(0 <= args.eta <= 1, f"--eta={args.eta} must be in [0, 1] (0 deterministic, 1 as DDPM)")
    check(
        args.image_size == 0 or MOSAIC_PATCH <= args.image_size <= MACHINE_MAX_SIDE,
        f"--image-size={args.image_size} must be 0 (keep the size) or between {MOSAIC_PATCH} "
        f"(the patch side of the creativity metrics) and {MACHINE_MAX_SIDE}",
    )
    schedule = Schedule.linear()
    if args.sampler == "ddpm":  # options ddpm would not read are refused, not ignored
        check(
            args.steps in (None, schedule.T),
            f"--steps={args.steps}: ddpm samples every one of the {schedule.T} steps; use "
            "--sampler ddim for fewer",
        )
        check(
            args.eta == 0,
            f"--eta={args.eta} is DDIM's noise level; ddpm draws its own at every step: use "
            "--sampler ddim",
        )
    if args.steps is None:  # stored with the settings, as before --steps could be left out
        args.steps = DDIM_STEPS
    check(1 <= args.steps <= schedule.T, f"--steps={args.steps} must be in [1, {schedule.T}]")
    data = DataConfig(
        kind=kind,
        n_images=args.n_images,
        seed=args.data_seed,
        path=args.data_path,
        image_size=args.image_size,
    )
    dataset = load_dataset(data)
    if args.subset:
        dataset = first_images(dataset, args.subset, "--subset")
    if kind != "pairings":  # scored by the creativity metrics, which compare 3x3 patches
        h, w = dataset.shape[-2:]
        check(
            min(h, w) >= MOSAIC_PATCH,
            f"images of {h}x{w} are smaller than the {MOSAIC_PATCH}x{MOSAIC_PATCH} patches the "
            "creativity metrics compare",
        )
    machine = machine_from_args(args, dataset.images, schedule, kind)
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    if patch_file(args.patch):  # a calibration: its table counts, not only its name
        table = json.dumps(read_json(args.patch)["patch_size"])
        settings["patch_sha256"] = sha256(table.encode())
        if args.stride is None:  # and the stride drawn at, the file's own: a file made
            settings["stride"] = calibrated(args.patch).get("stride", 1)  # again may differ
    if code := file_sha256(args.machine):  # a machine of your own: its code counts too
        settings["machine_sha256"] = code
    settings["data_sha256"] = fingerprints(dataset)["data_sha256"]  # --data-path's images too
    _check_same_settings(folder, stored, settings)
    # float32 chunks, then samples.npz: the same again
    check_room(folder, 2 * args.n * math.prod(dataset.shape) * 4, "--n")
    return partial(_sample, args, folder, dataset, machine, schedule, settings)


def _sample(args, folder: Path, dataset, machine, schedule, settings: dict) -> int:
    from mosaicdiff.generate import chunk_start, draw_chunks, load_samples, save_preview
    from mosaicdiff.io import save_npz
    from mosaicdiff.noise import seed_key
    from mosaicdiff.sampling import sample

    folder.mkdir(parents=True, exist_ok=True)
    n, progress = args.n, not args.no_progress

    keys = seed_key(args.seed)[None]

    def draw(lo: int, hi: int, seed: int) -> torch.Tensor:
        x_T, source = chunk_start(args.noise, keys, lo, hi, seed, dataset.shape, schedule.T)
        x0 = sample(
            machine,
            x_T,
            source,
            schedule,
            args.sampler,
            args.steps if args.sampler == "ddim" else None,  # stored as 50 for ddpm too
            args.eta,
            clip=args.clip_x0,
            progress=progress,
        )
        return x0[None]  # (1, m, C, H, W): one "seed", as a run's samples folder holds

    draw_chunks(
        folder,
        {"theory": settings},
        draw,
        n,
        per_chunk=args.batch,
        seed=args.seed,
        n_per_run=n,  # all one run
        desc=f"theory {short(args.machine)}",
        progress=progress,
    )
    samples = torch.from_numpy(load_samples(folder)[0])
    save_npz(folder / "samples.npz", samples=samples, seed=args.seed, args=json.dumps(settings))
    save_preview(folder, [args.seed])
    print(f"{n} samples -> {folder / 'samples.npz'}")
    if args.data == "pairings":
        _consistency(folder, samples, dataset.info["spec"], settings)
    else:
        from mosaicdiff.evaluate import (
            CREATIVITY_RESULTS,
            MOSAIC_PATCH,
            creativity_line,
            evaluate_creativity_samples,
        )

        images, seeds = dataset.images, [args.seed]
        res = evaluate_creativity_samples(
            folder, images, seeds, MOSAIC_PATCH, args.limit, not args.no_progress
        )
        print(creativity_line(res["per_seed"][0]))
        print(f"results -> {folder / CREATIVITY_RESULTS}, figure -> {folder / 'nearest.png'}")
    return 0


# Options that do not change the samples: a rerun that differs only in these resumes.
NOT_SETTINGS = ("handler", "command", "theory_command", "out", "no_progress", "limit")


def _stored_settings(folder: Path) -> dict | None:
    """The settings the samples in `folder` were drawn with (None where none were): read once,
    for the defaults of a folder drawn before --clip-x0 and for `_check_same_settings`."""
    from mosaicdiff.io import read_json

    meta = folder / "sample.json"
    return (read_json(meta).get("theory") or {}) if meta.is_file() else None


def _check_same_settings(folder: Path, stored: dict | None, settings: dict) -> None:
    """Refuse `settings` where `folder` holds samples drawn with others (`stored`)."""
    from mosaicdiff.generate import refuse_other_settings
    from mosaicdiff.theory.cli_checks import same_machine

    if stored is not None:
        # sampled before --subset existed: all the images; before --clip-x0: unclipped;
        # before --noise: each chunk's own
        stored = {"subset": 0, "clip_x0": False, "noise": "threefry", **stored}
        if patch_file(stored.get("patch")) and stored.get("stride") is None:
            stored["stride"] = 1  # before calibrations held their stride: drawn at 1
        if "data_sha256" not in stored:  # sampled before the images counted: resumes as it was
            settings = {k: v for k, v in settings.items() if k != "data_sha256"}
        kind = settings["data"]  # --patch and --stride compared as the machine reads them
        refuse_other_settings(
            folder, same_machine(stored, kind), same_machine(settings, kind), "--out"
        )


def _consistency(folder: Path, samples: torch.Tensor, spec, settings: dict) -> None:
    from mosaicdiff.io import atomic_write_json
    from mosaicdiff.theory.report import consistency_report

    report = {**consistency_report(samples, spec), "args": settings}
    atomic_write_json(folder / "consistency.json", report)
    lo, hi = report["ci95"]
    bad = report["reasons"].get("not_finite", 0)
    diverged = f"; {bad} samples NaN or infinite (counted inconsistent)" if bad else ""
    print(
        f"consistency {100 * report['rate']:.2f}% (95% CI {100 * lo:.2f}-{100 * hi:.2f}); "
        f"exact random baseline {100 * report['baseline_exact']:.2f}%{diverged}"
    )
    print(f"results -> {folder / 'consistency.json'}")
