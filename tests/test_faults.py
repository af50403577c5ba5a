"""Fault injection: SIGKILL during training (one kill inside a checkpoint write) and resume to
bit-identical weights; malicious checkpoints are refused without unpickling anything."""

import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from mosaicdiff.errors import UserError
from mosaicdiff.io import load_tensors, save_tensors, sha256
from mosaicdiff.runs import RunDir, load_run

EPOCHS = 20
TRAIN = [
    "train",
    "--epochs",
    str(EPOCHS),
    "--seeds",
    "2",
    "--set",
    "data.n_images=128",
    "--set",
    "train.checkpoint_every=1",
    "--no-progress",
]


def _start(out, resume, env):
    args = [sys.executable, "-m", "mosaicdiff", *TRAIN, "--out", str(out)]
    return subprocess.Popen(
        args + (["--resume"] if resume else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _final_ema(out):
    tensors, meta = load_tensors(RunDir(out).checkpoints()[-1])
    assert meta["epoch"] == EPOCHS
    return {k: v for k, v in tensors.items() if k.startswith(("ema.", "model.", "opt."))}


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "MOSAICDIFF_TEST_WRITE_DELAY": "0.3", "MOSAICDIFF_COMPILE": "0"}
    ref = _start(tmp_path / "ref", False, env)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    rng = random.Random(0)
    out = tmp_path / "killed"
    run = RunDir(out)
    kills, in_write, resumed = 0, 0, False
    ckpt_dir = out / "checkpoints"
    for _attempt in range(40):  # bounded: a run that finishes too early fails, never hangs
        proc = _start(out, resumed, env)
        resumed = True
        if kills >= 5 and in_write >= 1:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()
            break
        deadline = time.time() + 120
        if in_write == 0 and kills >= 2:
            # Wait until a checkpoint's temporary file exists: the kill lands inside the write.
            while time.time() < deadline and proc.poll() is None:
                if ckpt_dir.is_dir() and any(p.name.endswith(".tmp") for p in ckpt_dir.iterdir()):
                    break
                time.sleep(0.01)
            in_write += proc.poll() is None
        else:
            # Wait for this attempt to log an epoch, then kill at a random later moment.
            logged = len(run.read_metrics())
            while time.time() < deadline and proc.poll() is None:
                if len(run.read_metrics()) > logged:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.4, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 5 and in_write >= 1, (kills, in_write)
    ref_t, got = _final_ema(tmp_path / "ref"), _final_ema(out)
    assert ref_t.keys() == got.keys()
    for k in ref_t:
        assert torch.equal(ref_t[k], got[k]), k
    assert len(run.read_metrics()) == EPOCHS


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
