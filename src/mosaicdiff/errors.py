"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""

from pathlib import Path


class UserError(ValueError):
    """A bad value from the user (config, CLI option, data file). The message names the value
    and what would be valid."""


def check(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


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
    return path
