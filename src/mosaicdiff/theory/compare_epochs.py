"""`theory compare RUN --epoch all`: a run's agreement with a machine over its training.

Does a network grow into its machine as it trains, and when? A run trained with
`train.keep_every=N` keeps a checkpoint every N epochs; this compares each of them (or those
`--epoch E,E,...` names) with one machine, from the same noise, as `theory compare --epoch E`
would, and sets the results side by side:

    OUT/epoch-000250/      agreement.json, samples.png and eps_cosine.png of that checkpoint
    OUT/agreement.csv      a row per (epoch, member): the r^2 of their samples (median,
                           quartiles, mean) and the eps cosine (median per step, averaged)
    OUT/agreement.png      both against the epoch, a line per member

The machine's samples do not depend on the network, so they are drawn once (OUT/machine.npz).
Running the same command again skips the checkpoints already compared; other options into the
same OUT are refused, so the rows never mix settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mosaicdiff.errors import UserError, check

# Options that do not change a comparison's numbers: a rerun that differs only in these resumes.
NOT_SETTINGS = ("handler", "command", "theory_command", "out", "no_progress", "epoch")
COLUMNS = ("epoch", "member", "r2_median", "r2_q25", "r2_q75", "r2_mean", "eps_cosine")


def parse_epochs(text: str | None) -> int | list[int] | None:
    """--epoch as given: None (the newest), one epoch, or a list of them ("all": [] for every
    checkpoint kept; "250,1000" for those)."""
    if text is None:
        return None
    if text.strip() == "all":
        return []
    parts = [p.strip() for p in text.split(",")]
    fine = all(p.isdigit() for p in parts if p) and any(parts)
    check(fine, f"--epoch {text!r} must be an epoch (250), several (250,1000) or all")
    epochs = sorted({int(p) for p in parts if p})
    return epochs if "," in text else epochs[0]


def compare_over_training(args, folder: Path) -> int:
    """Handler of `theory compare` with several epochs (args.epoch a list, [] for all kept)."""
    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv
    from mosaicdiff.own_code import short
    from mosaicdiff.runs import load_run
    from mosaicdiff.theory.cli_agreement import check_options, members_and_noise
    from mosaicdiff.theory.cli_checks import machine_from_args

    check_options(args)
    epochs = _epochs(args.run, args.epoch)
    newest = load_run(args.run, device="cpu")  # its seeds, images and schedule are every epoch's
    members, x_T = members_and_noise(args, newest)
    kind = newest.cfg.data.kind
    machine = machine_from_args(args, newest.dataset.images, newest.schedule, kind)
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    _claim(folder, settings | {"run": str(Path(args.run).resolve())})
    machine_samples = _machine_samples(args, folder, machine, newest.schedule, x_T)
    rows = []
    for epoch in epochs:
        per_member = _compared(args, folder, epoch, machine, members, x_T, machine_samples)
        rows += [_row(epoch, p) for p in per_member or []]
    check(bool(rows), f"none of the checkpoints of {args.run} could be read; nothing to compare")
    atomic_write_csv(folder / "agreement.csv", rows, COLUMNS)
    plots.save(plots.agreement_curves(rows, short(args.machine)), folder / "agreement.png")
    print(f"agreement over training -> {folder / 'agreement.csv'}, {folder / 'agreement.png'}")
    return 0


def _epochs(run: str, wanted: list[int]) -> list[int]:
    """The epochs to compare: `wanted`, each one kept by the run, or all it kept when empty."""
    from mosaicdiff.runs import RunDir, load_run, only_last_two

    kept = RunDir(run).checkpoint_epochs()
    if not kept:
        load_run(run)  # says why there is none: not trained yet, or damaged
    if not wanted and RunDir(run).read_config().train.keep_every == 0:
        print(only_last_two(run, kept))
    missing = [e for e in wanted if e not in kept]
    check(
        not missing,
        f"{run} has no checkpoint of epoch {missing[0] if missing else ''}; it keeps epochs "
        f"{', '.join(map(str, kept))} (train with --set train.keep_every=N to keep more)",
    )
    return wanted or kept


def _claim(folder: Path, settings: dict) -> None:
    """OUT/compare.json holds the options its comparisons were made with: a rerun with the
    same resumes, one with others is refused (their rows would mix in agreement.csv)."""
    from mosaicdiff.config import differences
    from mosaicdiff.io import atomic_write_json, read_json

    path = folder / "compare.json"
    if path.is_file():
        changed = differences(read_json(path), settings)
        check(
            not changed,
            f"{folder} holds comparisons made with other options ({'; '.join(changed)}); "
            "choose another --out or delete that folder",
        )
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _machine_samples(args, folder: Path, machine, schedule, x_T):
    """The machine's DDPM samples from `x_T` and --seed's noise: drawn once, kept in
    OUT/machine.npz for a rerun."""
    import torch

    from mosaicdiff.io import load_npz, save_npz
    from mosaicdiff.own_code import short
    from mosaicdiff.sampling import ddpm_sample

    path = folder / "machine.npz"
    if path.is_file():
        x = load_npz(path).get("samples")
        fine = isinstance(x, np.ndarray) and x.shape == tuple(x_T.shape) and x.dtype.kind == "f"
        check(
            fine, f"{path} is damaged (not {args.n} samples of {tuple(x_T.shape[1:])}); delete it"
        )
        return torch.from_numpy(x)
    print(f"machine {short(args.machine)}: {args.n} samples, drawn once for every checkpoint")
    g = torch.Generator().manual_seed(args.seed)
    x = ddpm_sample(machine, x_T, g, schedule, progress=not args.no_progress)
    save_npz(path, samples=x.numpy())
    return x


def _compared(args, folder, epoch, machine, members, x_T, machine_samples) -> list[dict] | None:
    """The rows of agreement.json for the checkpoint of `epoch`, compared now or read from its
    folder when a run before did; None when it can no longer be read."""
    from argparse import Namespace

    from mosaicdiff.io import read_json
    from mosaicdiff.runs import CheckpointGone, load_run
    from mosaicdiff.theory.cli_agreement import agree, write_agreement

    sub = folder / f"epoch-{epoch:06d}"
    done = sub / "agreement.json"
    if done.is_file():
        before = read_json(done).get("members")
        check(isinstance(before, list), f"{done} is damaged; delete {sub} to compare it again")
        print(f"epoch {epoch}: compared before")
        return before
    try:
        run = load_run(args.run, device="cpu", epoch=epoch)
    except CheckpointGone as e:  # damaged, or rotated out by a run still training
        print(f"epoch {epoch}: left out ({e})")
        return None
    print(f"epoch {epoch}:")
    at = Namespace(**{**vars(args), "epoch": epoch})  # its agreement.json reads as --epoch E's
    try:
        per_member, pairs = agree(at, run, members, x_T, machine, machine_samples)
    except UserError as e:
        raise UserError(f"epoch {epoch}: {e}") from None
    write_agreement(sub, at, per_member, pairs)
    return per_member


def _row(epoch: int, compared: dict) -> dict:
    """A member's row of agreement.csv from its entry in agreement.json."""
    r2 = compared["r2"]
    return {"epoch": epoch, "member": compared["member"]} | {
        "r2_median": r2["median"],
        "r2_q25": r2["q25"],
        "r2_q75": r2["q75"],
        "r2_mean": r2["mean"],
        "eps_cosine": float(np.mean(compared["eps_cosine"]["median"])),
    }
