"""process_pool: an interrupted caller stops its workers instead of waiting for their tasks."""

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
