"""The benchmark commands' own checks (their timings are never asserted)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_without_diffusers_says_what_to_install(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.throughput import main

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "diffusers" else find(n, *a)
    )
    with pytest.raises(SystemExit) as stop:
        main(["--quick"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "pip install -e '.[test]'" in err[-1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--shapes", "4:2:x"], "'4:2:x' must be side:patch:hidden"),
        (["--shapes", "4:3:8"], "patch dividing side"),
    ],
)
def test_native_shapes_refuses_a_bad_shape_in_one_line(args, needle):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.native_shapes", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and needle in done.stderr.strip().splitlines()[-1]
