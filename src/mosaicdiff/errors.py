"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""

from pathlib import Path


class UserError(ValueError):
    """A bad value from the user (config, CLI option, data file). The message names the value
    and what would be valid."""


def check(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def check_like(out, x, what: str, noun: str) -> None:
    """Refuse what the user's code `what` returned (`out`, its `noun`) unless it is a tensor of
    the shape of the `x` it was given."""
    import torch

    got = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else None
    check(
        got is None, f"{what} returned {got}, not a tensor {noun} of x_t's shape {tuple(x.shape)}"
    )
    check(
        out.shape == x.shape,
        f"{what} returned {noun} of shape {tuple(out.shape)} for x_t of shape {tuple(x.shape)}; "
        "they must match",
    )


def check_out(out: str | Path, what: str = "folder", option: str = "--out") -> Path:
    """`out` (given as `option`) as a Path, refused before any work if the results could not be
    written there: empty, under a file, or a file where a folder goes (a folder where a file
    goes)."""
    check(str(out) != "", f"{option} '' is empty; name an output {what}")
    path = Path(out)
    for parent in path.parents:
        check(not parent.is_file(), f"{option} {str(out)!r} lies under {str(parent)!r}, a file")
    if what == "folder":
        check(not path.is_file(), f"{option} {str(out)!r} is a file; name a folder")
        check(
            path.is_dir() or not path.exists(),
            f"{option} {str(out)!r} is not a folder (a device or other special file); name one",
        )
    else:
        check(not path.is_dir(), f"{option} {str(out)!r} is a folder; name a {what}")
    _check_writable(path, option)
    return path


def _check_writable(path: Path, option: str) -> None:
    """Refuse `path` when nothing can be created where it goes (a read-only file system, /proc,
    a folder without write permission): found now by creating and removing a scratch folder in
    the nearest folder that exists, rather than after the work, when the results are written.
    That folder's times are put back, so a refused command leaves no trace."""
    import os
    import tempfile

    where = next(p for p in (path, *path.parents) if p.is_dir())
    was = where.stat()
    try:
        tempfile.TemporaryDirectory(dir=where, prefix=".mosaicdiff-").cleanup()
    except OSError as e:
        raise UserError(
            f"{option} {str(path)!r} can't be written: {str(where)!r} takes no new files "
            f"({e.strerror})"
        ) from None
    try:
        os.utime(where, ns=(was.st_atime_ns, was.st_mtime_ns))
    except OSError:  # a folder we may write in but do not own
        pass
