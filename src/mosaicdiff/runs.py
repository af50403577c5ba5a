"""Run directories: one folder per run that rebuilds its model from its own files.

    RUN/config.json                    the resolved RunConfig, written before training starts
    RUN/metrics.jsonl                  one JSON line per epoch (loss per seed, lr, steps/s)
    RUN/checkpoints/epoch-000100.safetensors (+ .safetensors.json: step, epoch, config, sha256);
                                       the last two, and every train.keep_every epochs
    RUN/samples/NAME/                  sample chunks (.npz with their seeds), samples.png;
                                       evaluate's results.json (consistency) or
                                       results-creativity.json and nearest.png

Checkpoints are plain tensors (safetensors) plus JSON metadata: nothing is unpickled, and the
files alone rebuild the model. The newest checkpoint whose checksum verifies is used; a
corrupted newer one is reported and skipped.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, is_dataclass
from pathlib import Path

import torch

from mosaicdiff import locks
from mosaicdiff.config import RunConfig, older_defaults, stored_run
from mosaicdiff.config_io import differences, from_dict, to_dict
from mosaicdiff.data import ImageDataset, load_dataset
from mosaicdiff.diffusion import Schedule
from mosaicdiff.errors import UserError, check
from mosaicdiff.io import (
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
    sha256,
    sidecar,
)
from mosaicdiff.models import GroupedModel, build_model
from mosaicdiff.own_code import file_sha256

KEEP_CHECKPOINTS = 2
TRAIN_LOCK = ".train.lock"


class CheckpointGone(UserError):
    """The checkpoint of a named epoch can't be read: not kept, deleted, or damaged."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def samples_dir(self, name: str = "default") -> Path:
        """RUN/samples/NAME; NAME is one folder name, so samples stay inside samples/."""
        check(
            bool(name) and name not in (".", "..") and not set("/\\") & set(name),
            f"--name {name!r} must be a plain folder name (no '/' or '\\', not '.' or '..')",
        )
        return self.path / "samples" / name

    # --- config ---------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.config_path.is_file()

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_json(self.config_path, to_dict(cfg))

    def read_config(self) -> RunConfig:
        check(self.exists(), f"{self.path} is not a run directory (no config.json)")
        stored = read_json(self.config_path)
        # A field added since the run was written reads as its default; a whole section missing
        # is a damaged file (`{}` would otherwise sample the paper's million images).
        sections = [k for k, v in vars(RunConfig()).items() if is_dataclass(v)]
        missing = [k for k in sections if k not in stored]
        check(not missing, f"{self.config_path} is damaged (no section {', '.join(missing)})")
        return from_dict(RunConfig, stored_run(stored))

    def check_continues(self, cfg: RunConfig) -> None:
        """A UserError naming every differing field unless this run, if any, was started with
        `cfg`: a run is only ever continued with the settings it began with."""
        if self.exists():
            diffs = differences(to_dict(self.read_config()), to_dict(cfg))
            check(
                not diffs,
                f"{self.path} holds a run with other settings ({'; '.join(diffs)})"
                f"{older_defaults(diffs)}; use a new --out",
            )

    # --- metrics --------------------------------------------------------------------------

    def training(self):
        """Hold RUN/.train.lock while this process trains the run: a second process training
        it at once (two `reproduce` into one --out) is refused, rather than interleaving its
        lines into metrics.jsonl."""
        return locks.held(self.path / TRAIN_LOCK, "trained")

    def written_by_training(self) -> list[Path]:
        """What training writes into a run before its first checkpoint, folders last."""
        files = [self.config_path, self.metrics_path, self.path / TRAIN_LOCK]
        return [*files, self.checkpoint_dir, self.path]

    def remove_unstarted(self, existed: dict[Path, int]) -> None:
        """Remove what training wrote into a new run that stopped before its first checkpoint,
        of `written_by_training` all but what `existed` before it began (path -> size; a file
        that existed is cut back to that size, a folder removed only when that leaves it
        empty): nothing to resume, and nothing left half-written."""
        for path in self.written_by_training():
            if path in existed:
                if path.is_file() and path.stat().st_size > existed[path]:
                    os.truncate(path, existed[path])  # lines appended to a file of yours
                continue
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)

    def trainer(self) -> str | None:
        """The pid of the process training the run now (None when none is)."""
        return locks.holder(self.path / TRAIN_LOCK)

    def log(self, record: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
        return rows

    def truncate_metrics(self, epoch: int) -> None:
        """Drop log lines past `epoch` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.read_metrics() if r.get("epoch", 0) <= epoch]
        from mosaicdiff.io import atomic_write_text

        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (tensor file and sidecar), oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        files = sorted(self.checkpoint_dir.glob("epoch-*.safetensors"))
        return [f for f in files if sidecar(f).is_file()]

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch-{epoch:06d}.safetensors"

    def save_checkpoint(self, epoch: int, tensors: dict, meta: dict, keep_every: int = 0) -> Path:
        """Write the checkpoint of `epoch`, then delete all but the newest `KEEP_CHECKPOINTS`,
        sparing those of epochs that are multiples of `keep_every` (when it is not 0)."""
        path = self.checkpoint_path(epoch)
        save_tensors(path, tensors, meta)
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            if keep_every and checkpoint_epoch(old) % keep_every == 0:
                continue
            sidecar(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return path

    def checkpoint_sha256(self, epoch: int) -> str | None:
        """The sha256 its sidecar gives the checkpoint of `epoch` (None when it is not kept)."""
        side = sidecar(self.checkpoint_path(epoch))
        return read_json(side).get("sha256") if side.is_file() else None

    def checkpoint_epochs(self) -> list[int]:
        """The epochs of the complete checkpoints, oldest first."""
        return [checkpoint_epoch(p) for p in self.checkpoints()]

    def latest_epoch(self) -> int:
        """The epoch of the newest complete checkpoint (0 when there is none)."""
        found = self.checkpoints()
        return int(read_json(sidecar(found[-1]))["epoch"]) if found else 0

    def load_epoch(self, epoch: int) -> tuple[dict, dict]:
        """The checkpoint of `epoch`; `CheckpointGone` when it was not kept, was deleted while
        it was read (a run still training rotates its checkpoints), or is damaged."""
        kept = self.checkpoint_epochs()
        if epoch not in kept:
            raise CheckpointGone(
                f"{self.path} has no checkpoint of epoch {epoch}; it keeps epochs "
                f"{', '.join(map(str, kept)) or 'none'}"
            )
        try:
            return load_tensors(self.checkpoint_path(epoch))
        except FileNotFoundError:
            gone = f"{self.path}: the checkpoint of epoch {epoch} was deleted"
            raise CheckpointGone(gone) from None
        except UserError as e:  # damaged: a checksum that does not match
            raise CheckpointGone(str(e)) from None

    def load_latest(self) -> tuple[dict, dict] | None:
        """The newest checkpoint that verifies, or None when there is none."""
        found = self.checkpoints()
        for i in reversed(range(len(found))):
            try:
                return load_tensors(found[i])
            except UserError as e:
                then = "falling back to the previous checkpoint" if i else "it was the oldest"
                warnings.warn(f"{e}; {then}", stacklevel=2)
        return None


def run_holding(path: str | Path) -> tuple[Path, Path] | None:
    """The trained run whose folder is `path` or holds it, and the entry of that folder that
    `path` lies in (the run itself when `path` is the run); None outside every run."""
    here = Path(path).absolute()
    if RunDir(here).exists():
        return here, here
    for inner in (here, *here.parents):
        if inner != inner.parent and RunDir(inner.parent).exists():
            return inner.parent, inner
    return None


def refuse_inside_run(out: Path, option: str = "--out", run_itself: bool = False) -> None:
    """Refuse an `out` that lies inside a trained run's folder (and the run folder itself unless
    `run_itself`: `train --resume` continues it): a run's checkpoints, samples and history are
    its own, and a run or report made there would mix with them."""
    held = run_holding(out)
    if held is not None and (held[0] != held[1] or not run_itself):
        where = "is" if held[0] == held[1] else "lies inside"
        raise UserError(
            f"{option} {str(out)!r} {where} the trained run {str(held[0])!r}; name a folder "
            "beside it"
        )


def only_last_two(path, kept: list[int], keep_every: int) -> str | None:
    """The note for a run that kept no checkpoint by train.keep_every (trained without it, or
    for fewer epochs than it), whose history is its last (at most two) checkpoints; None for
    one that did."""
    if any(keep_every and e % keep_every == 0 for e in kept):
        return None
    how = (
        f"has kept no checkpoint by train.keep_every={keep_every} (none of its epochs is a "
        "multiple of it)"
        if keep_every
        else "was trained without train.keep_every"
    )
    return (
        f"note: {path} {how}, so it keeps only its latest checkpoints "
        f"({', '.join(map(str, kept))}); train with --set train.keep_every=N to keep one every "
        "N epochs"
    )


def checkpoint_epoch(path: Path) -> int:
    """The epoch in a checkpoint's file name (epoch-000100.safetensors -> 100)."""
    return int(path.name.split(".")[0].removeprefix("epoch-"))


def fingerprints(dataset: ImageDataset, cfg: RunConfig | None = None) -> dict[str, str]:
    """What a checkpoint's weights depend on beyond its config, stored with each checkpoint:
    the sha256 of the training images (`data_sha256`: a data.path file rewritten since, or
    generated data that its code or scikit-learn now makes otherwise, is noticed rather than
    measured against), and of the file of a network of your own (`arch_sha256`)."""
    out = {"data_sha256": sha256(dataset.images.detach().cpu().contiguous().numpy().tobytes())}
    if cfg is not None and (code := file_sha256(cfg.model.arch)) is not None:
        out["arch_sha256"] = code
    return out


def check_fingerprints(meta: dict, now: dict[str, str], cfg: RunConfig, code: bool = True) -> None:
    """Refuse to go on with a run whose checkpoint (`meta`) saw other images, or (with `code`)
    other network code, than its config gives now (checkpoints written before fingerprints
    existed pass)."""
    data = cfg.data
    if data.kind in ("npz", "folder"):
        what = f"data.path={data.path!r} no longer holds the images this run trained on"
        fix = "put them back, or train a new run on them"
    else:
        what = f"data.kind={data.kind} now gives other images than this run trained on"
        fix = "sample it with the version of mosaicdiff (or scikit-learn) it trained with"
    stored = meta.get("data_sha256")
    check(stored in (None, now["data_sha256"]), f"{what} (their sha256 differs); {fix}")
    stored = meta.get("arch_sha256")
    check(
        not code or stored in (None, now.get("arch_sha256")),
        f"model.arch={cfg.model.arch}: the file changed since this run's checkpoint (its sha256 "
        "differs); put the old code back, or train a new run with the file as it is now",
    )


@dataclass
class LoadedRun:
    """A trained run, ready to sample: the model holds the EMA weights and is in eval mode."""

    run: RunDir
    cfg: RunConfig
    model: GroupedModel
    dataset: ImageDataset
    schedule: Schedule
    epoch: int
    weights: str = "ema"
    checkpoint_sha256: str = ""  # of the checkpoint file it was loaded from


def load_run(
    path: str | Path, device: str | None = None, weights: str = "ema", epoch: int | None = None
) -> LoadedRun:
    """Rebuild a run's model from its directory alone.

    Args:
        path: the run directory.
        device: where to put the model (default: the run's configured device).
        weights: "ema" (what samples use) or "raw" (the optimiser's current weights).
        epoch: the checkpoint of this epoch (default: the newest that verifies); a run keeps
            the last two and, with `train.keep_every`, every multiple of it.
    """
    check(weights in ("ema", "raw"), f"weights={weights!r} must be 'ema' or 'raw'")
    run = RunDir(path)
    cfg = run.read_config()
    tensors, meta = _checkpoint(run, epoch)
    dataset = load_dataset(cfg.data)
    model = build_model(cfg.model, dataset.shape, cfg.diffusion.T, cfg.train.seeds)
    check_fingerprints(meta, fingerprints(dataset, cfg), cfg)
    prefix = {"ema": "ema.", "raw": "model."}[weights]
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. config.json edited after training: other shapes
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{run.config_path} does not match its checkpoint ({first})") from None
    model.eval().requires_grad_(False)
    device = device or cfg.device
    schedule = Schedule.from_config(cfg.diffusion)
    epoch = int(meta["epoch"])
    return LoadedRun(run, cfg, model.to(device), dataset, schedule, epoch, weights, meta["sha256"])


def load_run_data(path: str | Path) -> tuple[RunConfig, ImageDataset, int]:
    """A trained run's config, training images and newest epoch, without its network: what
    measuring the samples it drew needs. Its network file may have changed since (or be gone);
    its images may not."""
    run = RunDir(path)
    cfg = run.read_config()
    _, meta = _checkpoint(run, None)
    dataset = load_dataset(cfg.data)
    check_fingerprints(meta, fingerprints(dataset), cfg, code=False)
    return cfg, dataset, int(meta["epoch"])


def _checkpoint(run: RunDir, epoch: int | None) -> tuple[dict, dict]:
    """The tensors and metadata of `run`'s checkpoint of `epoch` (None: the newest that
    verifies), or one line saying why there is none."""
    check(
        epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool)),
        f"epoch={epoch!r} must be a whole number of epochs (or None for the newest)",
    )
    loaded = run.load_latest() if epoch is None else run.load_epoch(epoch)
    if loaded is None:
        damaged = len(run.checkpoints())
        unpaired = len(list(run.checkpoint_dir.glob("epoch-*.safetensors"))) - damaged
        why = f"has no checkpoint that verifies ({damaged} damaged); train it again"
        if not damaged:
            why = "has no checkpoint yet; train it first"
            if trainer := run.trainer():
                why = f"is being trained (pid {trainer}) and has no checkpoint yet; wait for one"
        if not damaged and unpaired:
            why = f"has {unpaired} checkpoint(s) without the .json beside each; train it again"
        raise UserError(f"{run.path} {why}")
    return loaded


def model_state(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in model.state_dict().items()}
