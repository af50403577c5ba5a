"""One writer at a time: a folder that a process trains or samples into is locked with
`fcntl.flock` on a hidden file in it, so a second process doing the same work is refused at
once rather than interleaving its log lines or drawing the same chunks twice. The operating
system lets go of the lock when the process ends, however it ends (SIGKILL included). Where
there is no `fcntl` (not POSIX) nothing is locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from mosaicdiff.errors import UserError


class Busy(UserError):
    """The folder is locked by another process doing the same work: not a fault of the work
    itself, and gone once that process ends (a sweep reports such a point as busy, to run again
    later, not as failed)."""


@contextmanager
def held(lock: Path, doing: str):
    """Hold `lock` (created with its folder) while the block runs; `Busy` saying the folder
    "is being `doing` by another process (pid N)" if another process holds it."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise Busy(
                f"{lock.parent} is being {doing} by another process (pid "
                f"{f.read().strip() or '?'}); let it finish (or stop it), then run this again"
            ) from None
        f.truncate(0)  # the holder's pid, for that message
        f.write(str(os.getpid()))
        f.flush()
        yield


def holder(lock: Path) -> str | None:
    """The pid of the process holding `lock` now (None when none does)."""
    try:
        import fcntl

        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "?"
            return None
    except (ImportError, FileNotFoundError):
        return None
