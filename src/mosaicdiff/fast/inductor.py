"""Torch Inductor settings that every compiled path of `fast/` needs.

`configure_inductor` is called before the first compilation of the training step
(`train_step.CompiledStep`) and of the sampling step (`sampling.FastDDPM`); `can_compile` says
whether Inductor can compile here at all (on the CPU it needs a working C++ compiler).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import tempfile
import threading
import warnings
from pathlib import Path

from mosaicdiff.allocator import hold_freed_memory


def configure_inductor() -> None:
    """Settings every compiled path here needs: ATen's random numbers
    (Inductor's own are slow on CPU and differ from eager's stream), an inductor cache of this
    process's own (`use_own_inductor_cache`), an allocator that keeps freed memory
    (`allocator.hold_freed_memory`), and quiet for the two notes of Inductor's that say nothing
    wrong (`INDUCTOR_ADVICE`)."""
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    hold_freed_memory()
    inductor_config.fallback_random = True
    # Each run compiles its step anew (new weights, new guards). A process that runs many (a
    # sweep worker, a study) would hit dynamo's default limit of 8 and, with fullgraph=True,
    # fail: measured on the 9th point of a one-worker sweep.
    for name in ("recompile_limit", "cache_size_limit"):  # the name before torch 2.7
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 1024))
    use_own_inductor_cache()
    # On a GPU Inductor advises TensorFloat32 matmuls, once a process, and says when it splits a
    # softmax: float32 is kept by choice (the CPU's maths to float tolerance), and the split
    # changes no number. Seen four and two times over in one `reproduce --device cuda`.
    for quiet in INDUCTOR_ADVICE:
        warnings.filterwarnings("ignore", message=quiet, category=UserWarning)


# The start of each of Inductor's warnings that `configure_inductor` silences (regexes).
INDUCTOR_ADVICE = (r"TensorFloat32 tensor cores", r"\s*Online softmax is disabled")


def can_compile(device) -> bool:
    """Whether Inductor (and the native loop's build) can compile for `device`: on the CPU it
    builds C++, so without a working compiler (none installed, a broken $CXX) the eager path
    runs instead, with one warning a process, rather than failing at the first compiled call.
    On a GPU it writes Triton kernels."""
    return getattr(device, "type", device) != "cpu" or _cpu_compiler_problem() is None


@functools.cache
def _cpu_compiler_problem() -> str | None:
    """Why Inductor finds no working C++ compiler here (its message's first line), said once as
    a warning, or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch that checks elsewhere: let compilation say
        return None
    try:
        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 (InvalidCxxCompiler, and whatever the check raises)
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        warnings.warn(f"{problem}; running uncompiled (slower, the same numbers)", stacklevel=3)
        return problem
    return None


OWN_CACHE_PREFIX = "mosaicdiff-inductor-"
_own_cache: str | None = None  # the folder `use_own_inductor_cache` made in this process


def use_own_inductor_cache() -> None:
    """Point TORCHINDUCTOR_CACHE_DIR at a new temporary folder, removed when this process exits,
    unless the user chose a folder: two processes compiling one graph can corrupt a shared cache.

    A spawned worker inherits its parent's variable, so a folder made here counts as chosen only
    in the process that made it. Without the removal each command left ~8 MB in the temp dir.
    """
    global _own_cache
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # importing dynamo sets the default
    if chosen is not None:
        if chosen == _own_cache:
            return
        inherited = os.path.basename(chosen).startswith(OWN_CACHE_PREFIX)  # from a parent
        default = os.path.abspath(chosen) == os.path.abspath(default_cache_dir())
        if not inherited and not default:
            return  # the user's choice
    _remove_left_by_dead()
    _own_cache = tempfile.mkdtemp(prefix=OWN_CACHE_PREFIX)
    _hold_owner_lock(Path(_own_cache))
    atexit.register(shutil.rmtree, _own_cache, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _own_cache
    # atexit does not run on SIGTERM: the signal a process pool stops its workers with (on
    # Ctrl-C too) and a cancelled SLURM job gets. A handler someone else set (submitit's) stays.
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _remove_own_cache_and_die)


_OWNER = ".owner"  # in each cache, locked (flock) by the process that made it while it lives
_owner_lock = None  # this process's open, locked owner file: the lock lasts as long as it


def _hold_owner_lock(cache: Path) -> None:
    """Lock CACHE/.owner for this process's life. Locked under a temporary name and then renamed
    (the lock stays with the open file), so no other process sees it unlocked."""
    global _owner_lock
    try:
        import fcntl
    except ImportError:  # not POSIX: nothing is locked, nothing removed by others
        return
    pending = cache / f"{_OWNER}.{os.getpid()}"
    _owner_lock = open(pending, "w")  # noqa: SIM115 (held open until the process ends)
    fcntl.flock(_owner_lock, fcntl.LOCK_EX)
    pending.rename(cache / _OWNER)


def _remove_left_by_dead() -> None:
    """Remove the caches in the temp dir whose owner lock nobody holds: their process ended
    without its handlers (SIGKILL, the OOM killer) and its ~8 MB stayed for ever (probe 62).
    The operating system drops a lock when its process ends, however it ends, in any PID
    namespace; a cache without an owner file (a version before them) is left alone."""
    try:
        import fcntl
    except ImportError:
        return
    for owner in Path(tempfile.gettempdir()).glob(f"{OWN_CACHE_PREFIX}*/{_OWNER}"):
        try:
            with open(owner, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: its owner is gone
                shutil.rmtree(owner.parent, ignore_errors=True)
        except OSError:  # held (BlockingIOError), or removed meanwhile: not ours to remove
            continue


def _remove_own_cache_and_die(signum: int, frame) -> None:
    """Remove this process's inductor cache, then die of `signum` as if no handler were set."""
    shutil.rmtree(_own_cache, ignore_errors=True)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
