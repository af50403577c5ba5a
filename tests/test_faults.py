"""Fault injection: SIGKILL training, sampling and reproduce at random points (one kill inside
a write each) and re-run them to bit-identical outputs; malicious checkpoints are refused
without unpickling anything. `scripts/fault_injection.py` is the long version."""

import json
import os
import pickle
import time

import pytest
import torch

from mosaicdiff.errors import UserError
from mosaicdiff.faults import run_scenario
from mosaicdiff.io import load_tensors, save_tensors, sha256
from mosaicdiff.runs import RunDir, load_run

RUNS = ("ref", "killed")


def _survived(result):
    assert result["kills"] >= 5 and result["in_write"] >= 1, result
    assert result["files_compared"] > 0, result
    assert result["bytes_lost"] == 0 and not result["differing"], result
    assert not result["leftover_tmp"], result


def test_sigkill_during_training_then_resume_is_bit_identical(tmp_path):
    # The final checkpoint (weights, EMA, optimiser, RNG) and the loss log must be identical.
    _survived(run_scenario("train", tmp_path, delay=(0.2, 0.8)))
    run = RunDir(tmp_path / "killed")
    assert run.latest_epoch() == 20 and len(run.read_metrics()) == 20


def test_sigkill_during_sampling_then_resume_gives_the_same_samples(tmp_path):
    # Every chunk's samples and the consistency evaluated from them must be identical.
    _survived(run_scenario("sample", tmp_path, delay=(0.0, 0.4)))
    assert (tmp_path / "killed/samples/default/results.json").is_file()


def test_sigkill_during_reproduce_then_rerun_gives_the_same_table(tmp_path):
    # Checkpoints, samples, results and the report's table must be identical.
    _survived(run_scenario("reproduce", tmp_path, delay=(0.0, 1.0)))
    ref, got = (json.loads((tmp_path / p / "report/table.json").read_text()) for p in RUNS)
    assert ref["rows"] == got["rows"]


def test_a_pickle_posing_as_a_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "epoch-000001.safetensors"
    blob = pickle.dumps({"model.w_in": Evil()})
    path.write_bytes(blob)
    (tmp_path / "epoch-000001.safetensors.json").write_text(
        f'{{"epoch": 1, "sha256": "{sha256(blob)}"}}'
    )
    with pytest.raises(UserError, match="not a safetensors file"):
        load_tensors(path)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_checkpoint_is_detected(tmp_path):
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"a": torch.arange(1000.0)}, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load_tensors(path)


def test_a_run_with_only_a_corrupt_checkpoint_says_so(tmp_path, tiny):
    from mosaicdiff.training import train

    train(tiny(epochs=1), tmp_path, progress=False)
    for f in RunDir(tmp_path).checkpoints():
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="no checkpoint"):
        load_run(tmp_path)


def test_the_next_write_removes_a_killed_writes_temporary(tmp_path):
    from mosaicdiff.io import atomic_write_json

    left = tmp_path / ".results.json.k1lled.tmp"
    other = tmp_path / ".other.json.k1lled.tmp"
    left.write_text("{")
    other.write_text("{")
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert not left.exists() and other.exists()


def test_a_write_going_on_in_another_process_keeps_its_temporary(tmp_path):
    # Two reproduce into one folder: each write removed the other's temporary file before it
    # was renamed into place, and that write failed with "No such file or directory".
    import socket
    import subprocess
    import sys

    from mosaicdiff.io import atomic_write_json

    host = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        writing = tmp_path / f".r.json.{host}~{alive.pid}.a1b2.tmp"
        killed = tmp_path / f".r.json.{host}~{dead}.c3d4.tmp"
        elsewhere = tmp_path / ".r.json.other-host.cluster~1.e5f6.tmp"
        for tmp in (writing, killed, elsewhere):
            tmp.write_text("{")
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        assert writing.exists() and not killed.exists() and elsewhere.exists()
        os.utime(elsewhere, (time.time() - 7200,) * 2)  # another host's, two hours old
        atomic_write_json(tmp_path / "r.json", {"a": 2})
        assert not elsewhere.exists() and writing.exists()
    finally:
        alive.kill()
        alive.wait()


def test_rewriting_the_same_json_leaves_the_file_alone(tmp_path):
    from mosaicdiff.io import atomic_write_json

    path = tmp_path / "plan.json"
    atomic_write_json(path, {"a": 1})
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    atomic_write_json(path, {"a": 1})
    assert path.stat().st_mtime_ns == before
    atomic_write_json(path, {"a": 2})
    assert path.stat().st_mtime_ns != before and json.loads(path.read_text()) == {"a": 2}
