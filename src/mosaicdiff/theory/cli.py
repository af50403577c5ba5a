"""`mosaicdiff theory sample | knob | calibrate | compare`: closed-form machines from the shell.

- sample: draw from a machine on a dataset (pairings, digits, npz or folder) into a samples
  folder like `mosaicdiff sample`'s (sample.json, chunk-*.npz, samples.png; resumable) plus
  samples.npz, all samples in one array; then, on the pairings, consistency.json, and on
  other data the creativity metrics `mosaicdiff evaluate` computes for networks
  (results-creativity.json, its "seed" the sampling seed, and nearest.png).
- knob: `sample` of the attention machine at several mixing weights lam on the pairings, and
  its consistency against lam (`theory/knob.py`).
- calibrate: per-step patch sizes that best match a trained run's network (K&G Sec. 5).
- compare: per-step eps cosine and final-sample r^2 between a run's networks and a machine
  (agreement.json), drawn as samples.png (both from the same noise) and eps_cosine.png.
Bad values raise `UserError` (the main CLI prints one line and exits 2).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from mosaicdiff.config import check_seed
from mosaicdiff.errors import UserError, check
from mosaicdiff.theory.knob import cmd_knob
from mosaicdiff.theory.machines import MACHINES

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
DATA_KINDS = ("pairings", "digits", "npz", "folder")
# Largest --image-size: the machines compare every pixel's patch with every training patch,
# so their cost grows with the square of the pixels (a side of 100000 never finished). Stricter
# than the networks' bound on data.image_size (config.MAX_IMAGE_SIZE).
MACHINE_MAX_SIDE = 256


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except None (its help says what None means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def register(subparsers) -> None:
    """Add the `theory` command and its subcommands to the main parser's subparsers."""
    p = subparsers.add_parser("theory", help="closed-form score machines (IS, LS, ELS, attention)")
    sub = p.add_subparsers(dest="theory_command", required=True)

    shows_defaults = {"formatter_class": _ShowDefaults}
    s = sub.add_parser("sample", help="sample a machine on a dataset", **shows_defaults)
    _sample_options(s)
    s.set_defaults(handler=cmd_sample)
    k = sub.add_parser(
        "knob",
        help="consistency of the attention machine over its mixing weight lam",
        description="Sample AttentionELS on the colour pairings at each --lams weight (a "
        "`theory sample` folder each, OUT/lam=X) and write OUT/knob.csv and OUT/knob.png. "
        "The defaults (1,000 DDPM samples at 6 weights) take ~30 s on 2 cores.",
        **shows_defaults,
    )
    _sample_options(k, knob=True)
    k.add_argument("--lams", default="0,0.1,0.25,0.5,0.75,1", help="weights lam in [0, 1]")
    k.set_defaults(handler=cmd_knob, machine="attn", lam=None)  # --lams names the weights

    for name, text, out in (
        ("calibrate", "per-step patch sizes for a run", "output JSON file"),
        ("compare", "agreement of a run's networks with a machine", "output folder"),
    ):
        c = sub.add_parser(name, help=text, **shows_defaults)
        c.add_argument("run", help="trained run directory (see `mosaicdiff train`)")
        _machine_options(c)
        c.add_argument("--n", type=int, default=16, help="trajectories (samples) per seed")
        c.add_argument("--every", type=int, default=10, help="evaluate every n-th timestep")
        c.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise")
        c.add_argument("--member", type=int, help="model seed index (default: all)")
        c.add_argument("--out", required=True, help=out)
        c.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub.choices["calibrate"].add_argument(
        "--candidates", default="1,3,5,7", help="comma-separated patch sizes to try"
    )
    sub.choices["calibrate"].set_defaults(handler=cmd_calibrate)
    sub.choices["compare"].set_defaults(handler=cmd_compare)


def _sample_options(s, knob: bool = False) -> None:
    """The options of `theory sample` (and of `theory knob`, which runs it once per lam)."""
    s.add_argument("--data", default="pairings", help=f"dataset: {', '.join(DATA_KINDS)}")
    s.add_argument("--data-path", default="", help="npz or folder: where the images are")
    s.add_argument(
        "--image-size",
        type=int,
        default=0,
        help=f"folder: resize to this side (0 keeps it; at most {MACHINE_MAX_SIDE})",
    )
    s.add_argument("--n-images", type=int, default=2048, help="pairings: training images")
    s.add_argument("--data-seed", type=int, default=0, help="pairings: dataset seed")
    _machine_options(s, knob)
    s.add_argument("--n", type=int, default=1000, help="number of samples")
    s.add_argument("--batch", type=int, default=1000, help="samples per sampler call")
    s.add_argument("--sampler", default="ddpm", help="ddpm (all T steps) or ddim")
    s.add_argument("--steps", type=int, default=50, help="ddim: number of steps")
    s.add_argument("--eta", type=float, default=0.0, help="ddim: noise in [0, 1] (0 deterministic)")
    s.add_argument("--seed", type=int, default=0, help="seed of x_T and the sampler noise")
    s.add_argument(
        "--limit", type=int, default=1000, help="creativity (not pairings): the first N samples"
    )
    s.add_argument("--out", required=True, help="output folder (run again to resume)")
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _machine_options(p, knob: bool = False) -> None:
    """With `knob`, --machine and --lam stay out of the help: knob samples the attn machine at
    its --lams weights. They are still parsed, so that knob refuses them in words (else
    argparse would take --lam for an abbreviation of --lams)."""
    hidden = argparse.SUPPRESS
    p.add_argument(
        "--machine", default="els", help=hidden if knob else f"one of {', '.join(MACHINES)}"
    )
    p.add_argument(
        "--patch",
        default=None,
        help="patch size: an int, or a JSON file from `theory calibrate` "
        "(default: 2 with stride 2 on pairings, 3 otherwise)",
    )
    p.add_argument("--stride", type=int, default=None, help="grid stride (default: as --patch)")
    p.add_argument("--boundary", default="circular", help="padding: circular or zeros")
    p.add_argument(
        "--lam", type=float, default=0.5, help=hidden if knob else "attn: in-image mixture weight"
    )
    p.add_argument("--attention", default="soft", help="attn: soft or top1")
    p.add_argument("--precision", default="float64", help="softmax arithmetic: float64|float32")


def _choice(value: str, option: str, valid) -> str:
    check(value in valid, f"{option} {value!r} is not one of {list(valid)}")
    return value


def _positive(value: int, option: str) -> int:
    check(value >= 1, f"{option}={value} must be at least 1")
    return value


def check_out(out: str, what: str = "folder") -> Path:
    """--out as a Path, refused before any work if the results could not be written there: empty,
    under a file, or a file where a folder goes (a folder where a file goes)."""
    check(bool(out), f"--out '' is empty; name an output {what}")
    path = Path(out)
    for parent in path.parents:
        check(not parent.is_file(), f"--out {out!r} lies under {str(parent)!r}, a file")
    if what == "folder":
        check(not path.is_file(), f"--out {out!r} is a file; name a folder")
    else:
        check(not path.is_dir(), f"--out {out!r} is a folder; name a {what}")
    return path


def machine_from_args(args, images: torch.Tensor, schedule, kind: str, patch: int | None = None):
    """Build the machine the options name, for a dataset of `kind` (`patch` overrides --patch)."""
    from mosaicdiff.theory.machines import build_machine
    from mosaicdiff.theory.schedule import PatchSchedule

    name = _choice(args.machine, "--machine", MACHINES)
    _choice(args.boundary, "--boundary", ("circular", "zeros"))
    _choice(args.attention, "--attention", ("soft", "top1"))
    precision = PRECISIONS[_choice(args.precision, "--precision", PRECISIONS)]
    default = args.patch is None and patch is None
    if patch is None:
        if args.patch is None:
            patch = 2 if kind == "pairings" else 3
        elif args.patch.lstrip("-").isdigit():
            patch = int(args.patch)
        else:
            patch = PatchSchedule.load(args.patch, schedule.T)
    if name != "ideal":  # the local machines see k x k windows of the image
        side = min(images.shape[-2:])
        sizes = set(patch.sizes()) if isinstance(patch, PatchSchedule) else {patch}
        for k in sorted(sizes):
            check(1 <= k <= side, f"patch size {k} must be between 1 and {side}, the image side")
    stride = args.stride
    if stride is None:
        stride = 2 if kind == "pairings" and default else 1
    return build_machine(
        name,
        images,
        schedule,
        patch,
        stride=stride,
        boundary=args.boundary,
        lam=args.lam,
        attention=args.attention,
        dtype=precision,
    )


def cmd_sample(args) -> int:
    return prepare_sample(args)()


def prepare_sample(args) -> Callable[[], int]:
    """Check `theory sample`'s options, load its data and build its machine, and return the
    sampling itself: a bad value stops it before anything is written or printed (knob prepares
    every weight's sampling before it starts the first)."""
    from mosaicdiff.config import DataConfig
    from mosaicdiff.data import load_dataset
    from mosaicdiff.diffusion import Schedule
    from mosaicdiff.evaluate import MOSAIC_PATCH

    folder = check_out(args.out)
    kind = _choice(args.data, "--data", DATA_KINDS)
    check(kind not in ("npz", "folder") or args.data_path, f"--data {kind} needs --data-path")
    _choice(args.sampler, "--sampler", ("ddpm", "ddim"))
    for option in ("n", "batch", "limit"):
        _positive(getattr(args, option), f"--{option}")
    check_seed("--seed", args.seed)
    # eta > 1 makes DDIM's noise exceed 1 - alpha_bar_prev: its direction term turns imaginary
    check(0 <= args.eta <= 1, f"--eta={args.eta} must be in [0, 1] (0 deterministic, 1 as DDPM)")
    check(
        args.image_size == 0 or MOSAIC_PATCH <= args.image_size <= MACHINE_MAX_SIDE,
        f"--image-size={args.image_size} must be 0 (keep the size) or between {MOSAIC_PATCH} "
        f"(the patch side of the creativity metrics) and {MACHINE_MAX_SIDE}",
    )
    schedule = Schedule.linear()
    check(1 <= args.steps <= schedule.T, f"--steps={args.steps} must be in [1, {schedule.T}]")
    data = DataConfig(
        kind=kind,
        n_images=args.n_images,
        seed=args.data_seed,
        path=args.data_path,
        image_size=args.image_size,
    )
    dataset = load_dataset(data)
    if kind != "pairings":  # scored by the creativity metrics, which compare 3x3 patches
        h, w = dataset.shape[-2:]
        check(
            min(h, w) >= MOSAIC_PATCH,
            f"images of {h}x{w} are smaller than the {MOSAIC_PATCH}x{MOSAIC_PATCH} patches the "
            "creativity metrics compare",
        )
    machine = machine_from_args(args, dataset.images, schedule, kind)
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    _check_same_settings(folder, settings)
    return partial(_sample, args, folder, dataset, machine, schedule, settings)


def _sample(args, folder: Path, dataset, machine, schedule, settings: dict) -> int:
    from mosaicdiff.generate import draw_chunks, load_samples, save_preview
    from mosaicdiff.io import save_npz
    from mosaicdiff.sampling import sample

    folder.mkdir(parents=True, exist_ok=True)
    n, progress = args.n, not args.no_progress

    def draw(m: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x_T = torch.randn(m, *dataset.shape, generator=g)
        x0 = sample(
            machine, x_T, g, schedule, args.sampler, args.steps, args.eta, progress=progress
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
        desc=f"theory {args.machine}",
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


def _check_same_settings(folder: Path, settings: dict) -> None:
    from mosaicdiff.generate import refuse_other_settings
    from mosaicdiff.io import read_json

    meta = folder / "sample.json"
    if meta.is_file():
        refuse_other_settings(folder, read_json(meta).get("theory") or {}, settings, "--out")


def _consistency(folder: Path, samples: torch.Tensor, spec, settings: dict) -> None:
    from mosaicdiff.io import atomic_write_json
    from mosaicdiff.theory.report import consistency_report

    report = {**consistency_report(samples, spec), "args": settings}
    atomic_write_json(folder / "consistency.json", report)
    lo, hi = report["ci95"]
    print(
        f"consistency {100 * report['rate']:.2f}% (95% CI {100 * lo:.2f}-{100 * hi:.2f}); "
        f"exact random baseline {100 * report['baseline_exact']:.2f}%"
    )
    print(f"results -> {folder / 'consistency.json'}")


def _load(args):
    from mosaicdiff.runs import load_run

    check_seed("--seed", args.seed)
    _positive(args.n, "--n")
    _positive(args.every, "--every")
    check(not Path(args.run).is_file(), f"{args.run!r} is a file, not a run directory")
    check(Path(args.run).is_dir(), f"run directory {args.run!r} does not exist")
    run = load_run(args.run, device="cpu")
    members = range(run.model.n_seeds) if args.member is None else [args.member]
    for m in members:
        check(0 <= m < run.model.n_seeds, f"--member={m} must be in [0, {run.model.n_seeds})")
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(args.n, *run.dataset.shape, generator=g)
    return run, list(members), x_T


def cmd_calibrate(args) -> int:
    from mosaicdiff.theory.calibrate import calibrate_patch_sizes, save_calibration

    try:
        candidates = [int(k) for k in args.candidates.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"--candidates {args.candidates!r} must be integers like 1,3,5") from None
    check(bool(candidates), f"--candidates {args.candidates!r} names no patch size")
    check_out(args.out, "JSON file")
    run, members, x_T = _load(args)
    kind = run.cfg.data.kind
    machine_for = partial(machine_from_args, args, run.dataset.images, run.schedule, kind)
    for k in candidates:  # refuse a bad size before any work (machines build their tables lazily)
        machine_for(patch=k)
    results = []
    for m in members:
        network = run.model.member(m).as_denoiser()
        results.append(
            calibrate_patch_sizes(
                network,
                lambda k: machine_for(patch=k),
                run.schedule,
                candidates,
                x_T,
                args.seed,
                args.every,
                progress=not args.no_progress,
            )
        )
    calibration = {**results[0], "machine": args.machine, "members": members}
    if len(results) > 1:
        calibration["per_member"] = results
    save_calibration(calibration, args.out)
    print(f"patch sizes over t (member {members[0]}): {_runs(results[0]['patch_size'])}")
    print(f"calibration -> {args.out}")
    return 0


def cmd_compare(args) -> int:
    from mosaicdiff.io import atomic_write_json
    from mosaicdiff.theory.agreement import eps_agreement, sample_agreement

    folder = check_out(args.out)
    run, members, x_T = _load(args)
    machine = machine_from_args(args, run.dataset.images, run.schedule, run.cfg.data.kind)
    steps = sorted(set(range(0, run.schedule.T, args.every)) | {run.schedule.T - 1})
    per_member, pairs, progress = [], {}, not args.no_progress
    for m in members:
        network = run.model.member(m).as_denoiser()
        cos = eps_agreement(network, machine, run.schedule, x_T, args.seed, steps, progress)
        r2 = sample_agreement(network, machine, run.schedule, x_T, args.seed, progress=progress)
        pairs[m] = r2.pop("samples")
        per_member.append({"member": m, "eps_cosine": cos, "r2": r2})
        print(f"member {m}: median r^2 {r2['median']:.3f} (IQR {r2['q25']:.3f}-{r2['q75']:.3f})")
    folder.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(args).items() if k != "handler"}
    atomic_write_json(folder / "agreement.json", {"args": meta, "members": per_member})
    _compare_figures(folder, args.machine, per_member, pairs)
    print(f"agreement -> {folder / 'agreement.json'}, figures -> samples.png, eps_cosine.png")
    return 0


def _compare_figures(folder: Path, machine: str, per_member: list[dict], pairs: dict) -> None:
    """FOLDER/samples.png: the first member's samples beside the machine's from the same noise;
    FOLDER/eps_cosine.png: each member's eps cosine with the machine over t."""
    from mosaicdiff import plots

    first = per_member[0]
    x_net, x_machine = (x[:16].numpy() for x in pairs[first["member"]])
    title = f"the same noise through both: median r^2 {first['r2']['median']:.3f}"
    panels = {f"network (member {first['member']})": x_net, f"machine ({machine})": x_machine}
    plots.save(plots.grids(panels, title=title), folder / "samples.png")
    curves = {f"member {p['member']}": p["eps_cosine"] for p in per_member}
    plots.save(plots.cosine_curves(curves), folder / "eps_cosine.png")


def _runs(table: list[int]) -> str:
    """[7, 7, 5, 5, 5] -> 't0-1:7 t2-4:5' (the schedule in words)."""
    parts, start = [], 0
    for t in range(1, len(table) + 1):
        if t == len(table) or table[t] != table[start]:
            parts.append(f"t{start}-{t - 1}:{table[start]}")
            start = t
    return " ".join(parts)
