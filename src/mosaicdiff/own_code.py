"""Code of the user's own, named "FILE.py:Name" or "module:Name": a network (`model.arch`,
`models/custom.py`) or a score machine (`theory --machine`, `theory/custom.py`).

A file is imported under a name of its own (one per resolved path and content), once per
process and version of it. While it is imported its folder goes first on the import path (as
`python FILE.py` would put it), so that it can import modules beside it; then it goes to the end,
where a later import inside one of its functions still finds them (unless a folder before it
holds a module of that name) but no module of the same name as one beside it (an html.py)
hides Python's or a package's from the rest of the process.
What the user's code raises while it is imported, built or run becomes one `UserError` line
that names the line of the user's file it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from mosaicdiff.errors import UserError, check


def names_code(text) -> bool:
    """Whether `text` has the form "FILE.py:Name" or "module:Name"."""
    if not isinstance(text, str):
        return False
    where, colon, name = text.rpartition(":")
    return bool(colon and where and name.isidentifier())


def anchored(text: str) -> str:
    """Text "FILE.py:Name" with FILE made absolute (and `~` expanded); other text as it is."""
    where, _, name = text.rpartition(":") if names_code(text) else ("", "", "")
    if not where.endswith(".py") or os.path.isabs(where):
        return text
    return f"{os.path.abspath(os.path.expanduser(where))}:{name}"


def short(text: str) -> str:
    """A label for figures and progress bars: "file.py:Class" for "/a/b/file.py:Class"; other
    text ("module:Class", "els") as it is."""
    if not names_code(text):
        return text
    where, _, name = text.rpartition(":")
    return f"{Path(where).name}:{name}"


def load(spec: str, option: str):
    """The object `spec` names. `option` (e.g. "model.arch='x.py:Net'") starts every error."""
    where, _, name = spec.rpartition(":")
    module = _import_file(option, Path(where)) if where.endswith(".py") else _import(option, where)
    check(hasattr(module, name), f"{option}: {where} defines no {name}")
    return getattr(module, name)


def file_sha256(spec: str) -> str | None:
    """The sha256 of the file that "FILE.py:Name" or "module:Name" names (None for other text):
    stored with results that its code made, so a rerun after the file changed is not taken for
    the same code. Only that file counts, not the modules it imports."""
    from mosaicdiff.io import sha256

    where = spec.rpartition(":")[0] if names_code(spec) else ""
    if where and not where.endswith(".py"):  # a module: the file it was imported from
        module = sys.modules.get(where)
        where = getattr(module, "__file__", None) or ""
    return sha256(Path(where).read_bytes()) if where.endswith(".py") else None


def failed(
    option: str, what: str, e: BaseException, doing: str = "importing", called=None
) -> UserError:
    """One line for an exception the user's code raised, with the place it was raised: the
    last line of the traceback in the user's own files (not torch's, mosaicdiff's, Python's
    or an installed package's; where it was all in those, the last outside torch and
    mosaicdiff). An exception raised at the call itself (`called(...)` with arguments it does
    not take) names where `called` is defined."""
    import sysconfig

    import torch

    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
    ours = (os.path.join(Path(torch.__file__).parent, ""), os.path.join(Path(__file__).parent, ""))
    ours += ("<frozen ",)
    outside = [f for f in frames if not f[0].startswith(ours)]
    paths = sysconfig.get_paths()
    installed = tuple(os.path.join(paths[k], "") for k in ("stdlib", "platstdlib", "purelib"))
    yours = [f for f in outside if not f[0].startswith(installed)] or outside
    message = str(e)
    if isinstance(e, SyntaxError) and e.filename:  # its str names the file's base name only
        yours.append((e.filename, e.lineno))
        message = e.msg
    if not yours and called is not None:
        yours = [f for f in [_defined(called)] if f and not f[0].startswith((*ours, *installed))]
    at = f" ({yours[-1][0]}, line {yours[-1][1]})" if yours else ""  # else: at the call itself
    return UserError(f"{option}: {doing} {what} failed: {type(e).__name__}: {message}{at}")


def _defined(obj) -> tuple[str, int] | None:
    """The file and line where `obj` (a class: its __init__) is defined, if Python knows."""
    import inspect

    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        return inspect.getsourcefile(target), inspect.getsourcelines(target)[1]
    except (TypeError, OSError):  # built in (object.__init__), or its source is gone
        return None


def _exited(option: str, where: str, e: SystemExit) -> UserError:
    return UserError(
        f"{option}: importing {where} called sys.exit({e.code!r}); a file that is run as a "
        'script wants its command-line code under `if __name__ == "__main__":`'
    )


def _import(option: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the module itself, not one it imports
            raise UserError(
                f"{option}: no module {module} on the Python path; name a file instead "
                "(path/to/file.py:Name)"
            ) from None
        raise failed(option, module, e) from e
    except SystemExit as e:
        raise _exited(option, module, e) from None
    except Exception as e:  # noqa: BLE001 (the user's module raised on import)
        raise failed(option, module, e) from e


def _import_file(option: str, path: Path):
    check(
        path.is_file(),
        f"{option}: {path} is not a file; name an existing FILE.py:Class (a run or folder made "
        "with it wants it back at that path)",
    )
    text = path.read_bytes()  # keyed by content too: an edited file is imported afresh
    key = "mosaicdiff_user_" + hashlib.sha256(str(path.resolve()).encode() + text).hexdigest()[:16]
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        except SystemExit as e:
            del sys.modules[key]
            raise _exited(option, str(path), e) from None
        except Exception as e:  # noqa: BLE001 (the user's file raised on import)
            del sys.modules[key]
            raise failed(option, str(path), e) from e
        finally:
            sys.path.remove(folder)  # its first place (the same folder may stand later too)
            if folder not in sys.path:
                sys.path.append(folder)
    return sys.modules[key]
