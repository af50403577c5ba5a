"""process_pool: an interrupted caller stops its workers instead of waiting for their tasks."""

import subprocess
import sys
import time

import pytest

from mosaicdiff.pool import process_pool


def test_interrupt_terminates_running_and_queued_work():
    with pytest.raises(KeyboardInterrupt):
        with process_pool(2) as pool:
            futures = [pool.submit(time.sleep, 600) for _ in range(4)]
            time.sleep(0.5)  # let the workers start the first tasks
            workers = list(pool._processes.values())
            raise KeyboardInterrupt
    assert len(workers) == 2
    # The executor's own thread reaps the workers and fails their running tasks, so their
    # status can lag a moment behind the interrupt.
    deadline = time.monotonic() + 30

    def settled() -> bool:
        return not any(w.is_alive() for w in workers) and all(f.done() for f in futures)

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(w.is_alive() for w in workers)
    assert all(w.exitcode is not None and w.exitcode < 0 for w in workers)  # killed by signal
    assert all(f.done() for f in futures)
    assert not any(not f.cancelled() and f.exception() is None for f in futures)  # none ran out
    assert futures[-1].cancelled()  # never handed to a worker


def test_normal_exit_waits_for_results():
    with process_pool(2) as pool:
        futures = [pool.submit(pow, 2, k) for k in range(5)]
    assert [f.result() for f in futures] == [1, 2, 4, 8, 16]


_STOPPED_SCRIPT = """
import time
from tqdm import tqdm
from mosaicdiff.pool import process_pool

def bar_then_wait():
    for _ in tqdm(range(1), disable=True):  # any bar makes tqdm's lock
        time.sleep(120)

if __name__ == "__main__":
    try:
        with process_pool(2) as pool:
            futures = [pool.submit(bar_then_wait) for _ in range(2)]
            time.sleep(5)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        print("stopped")
"""


def test_stopped_workers_leave_nothing_for_the_resource_tracker(tmp_path):
    # A spawned worker's first tqdm bar made a multiprocessing lock; stopped by SIGTERM, it
    # left that to the resource tracker, which printed a 'leaked semaphore' warning after
    # mosaicdiff's own 'interrupted' line.
    script = tmp_path / "script.py"
    script.write_text(_STOPPED_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0 and run.stdout.strip() == "stopped", run.stderr
    assert "leaked" not in run.stderr and "Warning" not in run.stderr, run.stderr


_ORPHAN_SCRIPT = """
import os, sys, time
from mosaicdiff.pool import process_pool

if __name__ == "__main__":
    with process_pool(2) as pool:
        futures = [pool.submit(os.getpid) for _ in range(2)]
        print(*{f.result() for f in futures}, flush=True)
        time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    # reproduce --jobs 2 killed by SIGKILL left its workers training, and their runs locked.
    import os
    import signal

    script = tmp_path / "script.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen(  # its resource tracker outlives it, warning of leaks: not here
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)
    deadline = time.monotonic() + 30

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # an exited child not yet reaped is a zombie
            return f.read().split(")")[-1].split()[0] != "Z"

    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
