import os
import platform
import subprocess
import sys

import pytest

from mosaicdiff import allocator

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt",
)
NAMES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@pytest.fixture(autouse=True)
def unset(monkeypatch):
    """Neither threshold in the environment; both restored after the test."""
    for name in NAMES:
        monkeypatch.setenv(name, "0")  # so that monkeypatch restores what was there before
        monkeypatch.delenv(name)


@glibc
def test_thresholds_are_fixed_here_and_passed_to_children(monkeypatch):
    assert allocator.hold_freed_memory()
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(child.stdout) == allocator.MMAP_THRESHOLD
    assert int(os.environ["MALLOC_TRIM_THRESHOLD_"]) == allocator.TRIM_THRESHOLD


@glibc
def test_a_threshold_the_user_set_stays(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    allocator.hold_freed_memory()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "65536"
    assert int(os.environ["MALLOC_TRIM_THRESHOLD_"]) == allocator.TRIM_THRESHOLD


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not allocator.hold_freed_memory()
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
