"""`mosaicdiff theory calibrate | compare`: a machine against the networks of a trained run.

- calibrate: per-step patch sizes that best match a run's network (K&G Sec. 5), as a JSON file
  that `theory sample --patch FILE` reads.
- compare: per-step eps cosine and final-sample r^2 between a run's networks and a machine, from
  the same noise (agreement.json), drawn as samples.png and eps_cosine.png. Several of a run's
  checkpoints (`--epoch all`) are compared by `compare_epochs.py`, with `agree` and
  `write_agreement` from here.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from mosaicdiff.config import check_seed
from mosaicdiff.errors import UserError, check
from mosaicdiff.own_code import anchored, names_code, short
from mosaicdiff.theory.cli_checks import machine_from_args, own_options, positive, theory_out


def check_options(args) -> None:
    """Refuse a bad --seed, --n, --every or run path before anything is loaded."""
    check_seed("--seed", args.seed)
    positive(args.n, "--n")
    positive(args.every, "--every")
    check(not Path(args.run).is_file(), f"{args.run!r} is a file, not a run directory")
    check(Path(args.run).is_dir(), f"run directory {args.run!r} does not exist")


def members_and_noise(args, run) -> tuple[list[int], torch.Tensor]:
    """The seeds of `run` that --member names (all by default) and the x_T of --n and --seed."""
    members = range(run.model.n_seeds) if args.member is None else [args.member]
    for m in members:
        check(0 <= m < run.model.n_seeds, f"--member={m} must be in [0, {run.model.n_seeds})")
    g = torch.Generator().manual_seed(args.seed)
    x_T = torch.randn(args.n, *run.dataset.shape, generator=g)
    return list(members), x_T


def _load(args):
    from mosaicdiff.runs import load_run

    check_options(args)
    run = load_run(args.run, device="cpu", epoch=args.epoch)
    return run, *members_and_noise(args, run)


def cmd_calibrate(args) -> int:
    from mosaicdiff.theory.calibrate import calibrate_patch_sizes, save_calibration

    theory_out(args.out, "JSON file")
    check(
        args.patch is None,
        f"--patch {args.patch}: calibrate tries each size of --candidates; name them there",
    )
    check(
        args.machine != "ideal",
        "--machine ideal scores whole images: it has no patch size to calibrate",
    )
    if names_code(args.machine):
        check(
            "patch_size" in own_options(anchored(args.machine)),
            f"--machine {args.machine}: its __init__ takes no patch_size, so it has no patch "
            "size to calibrate",
        )
    run, members, x_T = _load(args)
    kind = run.cfg.data.kind
    if args.candidates is None:  # 4x4 pairings: 1,3 (at --stride 2: 2,4)
        side, s = min(run.dataset.shape[-2:]), max(args.stride or 1, 1)
        args.candidates = ",".join(str(k) for k in range(s, s + 7, 2) if k <= side)
    try:
        candidates = [int(k) for k in args.candidates.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"--candidates {args.candidates!r} must be integers like 1,3,5") from None
    check(bool(candidates), f"--candidates {args.candidates!r} names no patch size")
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
    calibration = {
        **results[0],
        "machine": args.machine,
        "stride": args.stride or 1,  # one for every candidate; --patch FILE samples at it
        "boundary": args.boundary,
        "members": members,
        "run": str(Path(args.run).resolve()),
        "epoch": run.epoch,
        "checkpoint_sha256": run.checkpoint_sha256,
        "data": {"kind": kind, "shape": list(run.dataset.shape)},
    }
    if len(results) > 1:
        calibration["per_member"] = results
    save_calibration(calibration, args.out)
    print(f"patch sizes over t (member {members[0]}): {_runs(results[0]['patch_size'])}")
    print(f"calibration -> {args.out}")
    return 0


def cmd_compare(args) -> int:
    from mosaicdiff.theory.compare_epochs import compare_over_training, parse_epochs

    folder = theory_out(args.out)
    args.epoch = parse_epochs(args.epoch)
    if isinstance(args.epoch, list):
        return compare_over_training(args, folder)
    check(
        not (folder / "compare.json").is_file(),
        f"{folder} holds comparisons over training (--epoch all); choose another --out",
    )
    run, members, x_T = _load(args)
    args.epoch = run.epoch  # agreement.json names the checkpoint's epoch, the newest too
    machine = machine_from_args(args, run.dataset.images, run.schedule, run.cfg.data.kind)
    per_member, pairs = agree(args, run, members, x_T, machine)
    write_agreement(folder, args, per_member, pairs, run.checkpoint_sha256)
    print(f"agreement -> {folder / 'agreement.json'}, figures -> samples.png, eps_cosine.png")
    return 0


def agree(args, run, members, x_T, machine, machine_samples=None) -> tuple[list[dict], dict]:
    """Each member's eps cosine and sample r^2 with `machine` from the noise `x_T`: their rows
    of agreement.json, and {member: (network samples, machine samples)}."""
    from mosaicdiff.theory.agreement import eps_agreement, sample_agreement

    steps = sorted(set(range(0, run.schedule.T, args.every)) | {run.schedule.T - 1})
    per_member, pairs, progress = [], {}, not args.no_progress
    for m in members:
        network = run.model.member(m).as_denoiser()
        cos = eps_agreement(network, machine, run.schedule, x_T, args.seed, steps, progress)
        r2 = sample_agreement(  # the DDPM trajectory's end is the network's sample: not redrawn
            network,
            machine,
            run.schedule,
            x_T,
            args.seed,
            progress=progress,
            machine_samples=machine_samples,
            network_samples=cos.pop("samples"),
        )
        pairs[m] = r2.pop("samples")
        for who, x in zip(("network", "machine"), pairs[m], strict=True):
            bad = int((~torch.isfinite(x).flatten(1).all(1)).sum())
            check(
                bad == 0,
                f"{bad} of the {len(x)} samples of the {who} (member {m}) are NaN or infinite: "
                "it diverged, and r^2 would be nan; nothing was written",
            )
        per_member.append({"member": m, "eps_cosine": cos, "r2": r2})
        print(f"member {m}: median r^2 {r2['median']:.3f} (IQR {r2['q25']:.3f}-{r2['q75']:.3f})")
    return per_member, pairs


def write_agreement(
    folder: Path, args, per_member: list[dict], pairs: dict, checkpoint_sha256: str
) -> None:
    """FOLDER/agreement.json (the options, the sha256 of the checkpoint compared and each
    member's agreement) and its figures, the figures first: agreement.json marks the folder
    done (`compare_epochs` resumes by it)."""
    from mosaicdiff.io import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    _compare_figures(folder, short(args.machine), per_member, pairs)
    meta = {k: v for k, v in vars(args).items() if k != "handler"}
    found = {"args": meta, "checkpoint_sha256": checkpoint_sha256, "members": per_member}
    atomic_write_json(folder / "agreement.json", found)


def _compare_figures(folder: Path, machine: str, per_member: list[dict], pairs: dict) -> None:
    """FOLDER/samples.png: the first member's samples, each above the machine's from the same
    noise with their r^2; FOLDER/eps_cosine.png: each member's eps cosine with the machine."""
    from mosaicdiff import plots

    first = per_member[0]
    x_net, x_machine = (x[:16].numpy() for x in pairs[first["member"]])
    fig = plots.pairs(
        x_net,
        x_machine,
        names=(f"network (member {first['member']})", f"machine ({machine})"),
        notes=[f"{r:.2f}" for r in first["r2"]["r2"][:16]],
        title=f"the same noise through both: median r^2 {first['r2']['median']:.3f}, "
        "each pair's r^2 below it",
    )
    plots.save(fig, folder / "samples.png")
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
