"""The benchmark commands' own checks (their timings are never asserted)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.mark.parametrize("rate", [1e7, 1e8])  # 31 % and 307 % of the ceiling
def test_the_ceiling_is_the_larger_of_its_first_and_last_measurement(
    rate, monkeypatch, tmp_path, capsys
):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import throughput

    measured = iter([1e11, 2e11])  # a CPU still clocking up at the start, warm at the end
    monkeypatch.setattr(throughput, "matmul_ceiling", lambda *a: next(measured))
    fake = {
        "plain_sample_steps_per_s": 1e6,
        "fast_sample_steps_per_s": rate,
        "max_rel_diff_samples_plain_vs_fast": 0.0,
        "max_rel_diff_samples_reference_vs_fast": 0.0,
    }
    monkeypatch.setattr(throughput, "bench_sampling", lambda *a: fake)
    # main's process-wide settings stay out of this pytest process
    monkeypatch.setattr(throughput, "hold_freed_memory", lambda: False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    out = tmp_path / "bench.json"
    try:
        assert throughput.main(["--archs", "cnn", "--skip", "train", "--json", str(out)]) == 0
    finally:
        torch.set_flush_denormal(False)
    printed = capsys.readouterr().out
    assert "matmul ceiling 200 GFLOP/s (best of 100 at the start, 200 at the end)" in printed
    pct = 100 * rate * throughput.flops("cnn")["sample_folded"] / 2e11
    row = next(line for line in printed.splitlines() if line.startswith("cnn "))
    assert f"{pct:8.1f}" in row
    assert json.loads(out.read_text())["matmul_ceiling_flops"] == 2e11
    assert ("% ceil over 100" in printed) is (pct > 100)
    # a busy machine is named under the table: its ratios can be off several times
    busy = {**json.loads(out.read_text()), "load_average_1min": 3.5}
    assert "busy as this began (load 3.5)" in throughput.report(busy)
    idle = {**busy, "load_average_1min": 0.2}
    assert "busy" not in throughput.report(idle)
