"""A process pool that stops at once when its caller is interrupted.

`with ProcessPoolExecutor(...)` waits, on the way out, for every task already submitted, and
Python's exit hook waits for them again: a Ctrl-C in `sweep` or `reproduce --jobs N` printed
"interrupted" and then ran on for minutes, with the workers finishing points nobody was
waiting for (and racing a rerun on the same folder). `process_pool` drops the queued tasks
and stops the workers instead. Every write in mosaicdiff is atomic, so a stopped worker leaves
no half-written file; the next run picks up from the last finished checkpoint or chunk.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


@contextmanager
def process_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """`jobs` spawned worker processes (CUDA cannot be forked). Leaving the block by an
    exception, KeyboardInterrupt included, cancels what has not started and terminates the
    workers before the exception goes on."""
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs, mp_context=spawn, initializer=_start_worker, initargs=(os.getpid(),)
    )
    try:
        yield pool
    except BaseException:
        # No public way to stop a worker before Python 3.14's terminate_workers().
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(10)
        raise
    pool.shutdown(wait=True)


def _start_worker(parent: int) -> None:
    """Set up a worker of the process `parent`.

    - On Linux the worker gets SIGTERM when its parent dies, however it dies: `reproduce
      --jobs 2` killed by SIGKILL left its workers training, and their runs locked, with no
      command left to stop them.
    - tqdm's first bar makes a multiprocessing lock, which a spawned worker cannot share
      anyway; a worker stopped by SIGTERM left it to the resource tracker, which warned of a
      leak. A thread lock instead.
    """
    import threading

    from tqdm import tqdm

    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the line above: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)
    tqdm.set_lock(threading.RLock())
