"""Atomic, checksummed file writes: every output goes to a temporary file in the same folder and
is renamed into place, so a killed process never leaves a half-written file behind. The
temporary file a killed write leaves is removed by the next successful write of the same file
(its name holds the writer's host and pid, so a write still going on in another process is
left alone).

Tensors are stored with safetensors (no pickle); arrays as `.npz` read with `allow_pickle=False`.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import socket
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mosaicdiff.errors import UserError

_WRITE_DELAY = float(os.environ.get("MOSAICDIFF_TEST_WRITE_DELAY", "0") or 0)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}~{os.getpid()}"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        if _WRITE_DELAY:  # fault-injection tests widen the window a kill can land in
            time.sleep(_WRITE_DELAY)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == tmp:  # name the file the user knows
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # from a killed write
        if _abandoned(stale, len(path.name) + 2):
            stale.unlink(missing_ok=True)


def _abandoned(tmp: Path, skip: int) -> bool:
    """Whether the temporary file `tmp` (".NAME.HOST~PID.RANDOM.tmp"; NAME and its dots are
    `skip` characters) was left by a write that will not finish: its process has ended, on this
    host; elsewhere, an hour has passed (no write takes that long); or its name is older."""
    owner = tmp.name[skip:].rsplit(".", 2)[0]
    host, _, pid = owner.rpartition("~")
    if not pid.isdigit():  # named before the owner was
        return True
    if host != socket.gethostname():
        try:
            return time.time() - tmp.stat().st_mtime > 3600
        except FileNotFoundError:
            return False
    if int(pid) == os.getpid():  # another thread's write, going on now
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's, alive
        return False
    return False


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` atomically; a file that already holds exactly `text` is left untouched (a
    resumed command rewrites its plan and metadata; their mtimes then still mean something)."""
    data, path = text.encode(), Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)


def atomic_write_csv(path: str | Path, rows: list[dict], columns) -> None:
    """Write `rows` (dicts keyed by `columns`) as CSV with a header line, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict:
    """The JSON object in `path`; a one-line UserError for anything else in it."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write `path` (.safetensors) and its sidecar `path.json` holding `meta` plus the sha256 of
    the tensor file. The JSON is written last: a checkpoint exists only once both are complete."""
    path = Path(path)
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(path, blob)
    atomic_write_json(sidecar(path), {**meta, "sha256": sha256(blob), "bytes": len(blob)})


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what `save_tensors` wrote; refuse a file whose checksum or format does not match."""
    path = Path(path)
    side = sidecar(path)
    if not path.is_file() or not side.is_file():
        raise UserError(f"checkpoint {path} (with {side.name}) not found")
    meta = read_json(side)
    blob = path.read_bytes()
    if meta.get("sha256") != sha256(blob):
        raise UserError(f"checkpoint {path} is corrupted or truncated (checksum mismatch)")
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"checkpoint {path} is not a safetensors file ({e})") from None
    return tensors, meta


def save_npz(path: str | Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        # numpy's error for bytes that are no archive is advice to unpickle them: not given here
        why = "not a zip archive" if "pickle" in str(e) else str(e)
        raise UserError(f"{path} is not a readable .npz file ({why})") from None


def sidecar(path: Path) -> Path:
    """The JSON metadata file written beside a tensor file."""
    return path.with_name(path.name + ".json")
