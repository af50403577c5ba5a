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
Running the same command again skips the checkpoints already compared, and agreement.csv holds
every checkpoint compared into OUT. Other options, images, machine or patch file into the same
OUT are refused (OUT/compare.json holds them), and so is a checkpoint that changed since it was
compared, so the rows never mix settings.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from mosaicdiff.errors import UserError, check

# Options that do not change a comparison's numbers: a rerun that differs only in these resumes.
NOT_SETTINGS = ("handler", "command", "theory_command", "out", "no_progress", "epoch")
COLUMNS = ("epoch", "member", "r2_median", "r2_q25", "r2_q75", "r2_mean", "eps_cosine")


def parse_epochs(text: str | None) -> int | list[int] | None:
    """--epoch as given: None (the newest), one epoch, or a list of them ("all": [] for every
    checkpoint kept; "250,1000" for those)."""
    import re

    if text is None:
        return None
    if text.strip() == "all":
        return []
    parts = [p.strip() for p in text.split(",")]
    fine = all(re.fullmatch("[0-9]+", p) for p in parts if p) and any(parts)
    check(fine, f"--epoch {text!r} must be an epoch (250), several (250,1000) or all")
    epochs = sorted({int(p) for p in parts if p})
    return epochs if "," in text else epochs[0]


def compare_over_training(args, folder: Path) -> int:
    """Handler of `theory compare` with several epochs (args.epoch a list, [] for all kept)."""
    from mosaicdiff import plots
    from mosaicdiff.io import atomic_write_csv
    from mosaicdiff.own_code import short
    from mosaicdiff.runs import load_run
    from mosaicdiff.theory.cli_agreement import agree, check_options, members_and_noise
    from mosaicdiff.theory.cli_checks import machine_from_args

    check_options(args)
    check(
        not (folder / "agreement.json").is_file(),
        f"{folder} holds the comparison of one checkpoint (theory compare without several "
        "--epoch); choose another --out",
    )
    epochs = _epochs(args.run, args.epoch)
    newest = load_run(args.run, device="cpu")  # its seeds, images and schedule are every epoch's
    members, x_T = members_and_noise(args, newest)
    kind = newest.cfg.data.kind
    machine = machine_from_args(args, newest.dataset.images, newest.schedule, kind)
    settings = _settings(args, newest.dataset, kind)
    machine_samples = _machine_samples(args, folder, settings, machine, newest.schedule, x_T)
    # (args, run) -> `agree` with the members, noise, machine and its samples of every epoch
    against = partial(
        agree, members=members, x_T=x_T, machine=machine, machine_samples=machine_samples
    )
    for epoch in epochs:
        _compare_epoch(args, folder, epoch, newest, against)
    rows = _rows(folder)
    check(bool(rows), f"none of the checkpoints of {args.run} could be read; nothing to compare")
    atomic_write_csv(folder / "agreement.csv", rows, COLUMNS)
    plots.save(plots.agreement_curves(rows, short(args.machine)), folder / "agreement.png")
    print(f"agreement over training -> {folder / 'agreement.csv'}, {folder / 'agreement.png'}")
    return 0


def _epochs(run: str, wanted: list[int]) -> list[int]:
    """The epochs to compare: `wanted`, each one kept by the run, or all it kept when empty."""
    from mosaicdiff.runs import RunDir, load_run, only_last_two

    folder = RunDir(run)
    kept = folder.checkpoint_epochs()
    if not kept:
        load_run(run)  # says why there is none: not trained yet, or damaged
    note = only_last_two(run, kept, folder.read_config().train.keep_every)
    if not wanted and note:
        print(note)
    missing = [e for e in wanted if e not in kept]
    check(
        not missing,
        f"{run} has no checkpoint of epoch {missing[0] if missing else ''}; it keeps epochs "
        f"{', '.join(map(str, kept))} (train with --set train.keep_every=N to keep more)",
    )
    return wanted or kept


def _settings(args, dataset, kind: str) -> dict:
    """What the comparisons in OUT depend on beyond each checkpoint: the options (--patch and
    --stride spelled out as on data of `kind`), the run's images, and the contents of a
    machine file of your own and of a --patch file."""
    from mosaicdiff.io import sha256
    from mosaicdiff.own_code import file_sha256
    from mosaicdiff.runs import fingerprints
    from mosaicdiff.theory.cli_checks import patch_file, same_machine

    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    settings = same_machine(settings, kind) | {"kind": kind}
    settings["run"] = str(Path(args.run).resolve())
    settings["data_sha256"] = fingerprints(dataset)["data_sha256"]
    settings["machine_sha256"] = file_sha256(args.machine)  # None for a built-in machine
    if patch_file(args.patch) is not None:
        settings["patch"] = str(Path(args.patch).resolve())
        settings["patch_sha256"] = sha256(Path(args.patch).read_bytes())
    return settings


def _machine_samples(args, folder: Path, settings: dict, machine, schedule, x_T):
    """The machine's DDPM samples from `x_T` and --seed's noise, drawn once: OUT/machine.npz,
    then OUT/compare.json with the `settings` they and every comparison in OUT were made with.
    A rerun with the same settings reads them; one with other settings is refused."""
    import torch

    from mosaicdiff.config_io import differences
    from mosaicdiff.io import atomic_write_json, load_npz, read_json, save_npz
    from mosaicdiff.own_code import short
    from mosaicdiff.sampling import ddpm_sample
    from mosaicdiff.theory.cli_checks import same_machine

    claim, path = folder / "compare.json", folder / "machine.npz"
    if claim.is_file():
        # A folder from before the defaults were spelled out holds them as None, and no kind.
        stored = {"kind": settings["kind"], **read_json(claim)}
        changed = differences(same_machine(stored, stored["kind"]), settings)
        check(
            not changed,
            f"{folder} holds comparisons made with other options or files "
            f"({'; '.join(changed)}); choose another --out or delete that folder",
        )
        x = load_npz(path).get("samples") if path.is_file() else None
        fine = isinstance(x, np.ndarray) and x.shape == tuple(x_T.shape) and x.dtype.kind == "f"
        check(fine, f"{path} is missing or damaged; delete {folder} and compare again")
        return torch.from_numpy(x)
    print(f"machine {short(args.machine)}: {args.n} samples, drawn once for every checkpoint")
    g = torch.Generator().manual_seed(args.seed)
    x = ddpm_sample(machine, x_T, g, schedule, progress=not args.no_progress)
    bad = int((~torch.isfinite(x).flatten(1).all(1)).sum())
    check(
        bad == 0,
        f"{bad} of the machine's {len(x)} samples are NaN or infinite: it diverged, and r^2 "
        "would be nan; nothing was written",
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_npz(path, samples=x.numpy())
    atomic_write_json(claim, settings)  # last: OUT is claimed once its machine is drawn
    return x


def _compare_epoch(args, folder: Path, epoch: int, newest, against) -> None:
    """Compare the checkpoint of `epoch` into OUT/epoch-E by `against(args, run)` (`agree` with
    the machine and noise of every epoch), unless a run before did (and it is still the
    checkpoint it compared). `newest`, the run at its newest checkpoint, is not loaded again."""
    from argparse import Namespace

    from mosaicdiff.io import read_json
    from mosaicdiff.runs import CheckpointGone, RunDir, load_run
    from mosaicdiff.theory.cli_agreement import write_agreement

    sub = folder / f"epoch-{epoch:06d}"
    done = sub / "agreement.json"
    if done.is_file():
        compared = read_json(done).get("checkpoint_sha256")
        now = RunDir(args.run).checkpoint_sha256(epoch)
        check(
            now in (None, compared),  # None: rotated out since; its comparison still stands
            f"the checkpoint of epoch {epoch} is not the one {sub} compared (was the run "
            f"trained again?); delete {folder} or choose another --out",
        )
        print(f"epoch {epoch}: compared before")
        return
    try:
        run = newest if epoch == newest.epoch else load_run(args.run, device="cpu", epoch=epoch)
    except CheckpointGone as e:  # damaged, or rotated out by a run still training
        print(f"epoch {epoch}: left out ({e})")
        return
    print(f"epoch {epoch}:")
    at = Namespace(**{**vars(args), "epoch": epoch, "out": str(sub)})  # as --epoch E would
    try:
        per_member, pairs = against(at, run)
    except UserError as e:
        raise UserError(f"epoch {epoch}: {e}") from None
    write_agreement(sub, at, per_member, pairs, run.checkpoint_sha256)


def _rows(folder: Path) -> list[dict]:
    """agreement.csv: a row per member of every checkpoint compared into OUT, by epoch."""
    from mosaicdiff.io import read_json

    rows = []
    for sub in sorted(folder.glob("epoch-*")):
        done, epoch = sub / "agreement.json", sub.name.removeprefix("epoch-")
        if not (epoch.isascii() and epoch.isdigit() and done.is_file()):
            continue
        members = read_json(done).get("members")
        check(isinstance(members, list), f"{done} is damaged; delete {sub} to compare it again")
        rows += [_row(int(epoch), m) for m in members]
    return rows


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
