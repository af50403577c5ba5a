import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import OneCycleLR

from mosaicdiff.errors import UserError
from mosaicdiff.fast.train_step import one_cycle_tables
from mosaicdiff.io import load_tensors
from mosaicdiff.runs import RunDir
from mosaicdiff.training import train, use_compiled


def _final(path):
    return load_tensors(RunDir(path).checkpoints()[-1])


def _assert_same_run(a, b, exact=False):
    ta, ma = _final(a)
    tb, mb = _final(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        if key.startswith("rng.") or exact:
            assert torch.equal(ta[key], tb[key]), key
        else:
            torch.testing.assert_close(ta[key], tb[key], rtol=1e-5, atol=1e-6, msg=key)
    assert ma["lr_schedule"]["last_epoch"] == mb["lr_schedule"]["last_epoch"]
    for ga, gb in zip(ma["optimizer_param_groups"], mb["optimizer_param_groups"], strict=True):
        assert ga["lr"] == pytest.approx(gb["lr"], rel=1e-12)
        assert ga["betas"] == pytest.approx(gb["betas"], rel=1e-12)


def test_one_cycle_tables_match_the_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = AdamW([p], lr=1e-3)
    sched = OneCycleLR(opt, max_lr=1e-3, total_steps=37)
    lrs, moms = one_cycle_tables(sched, 37)
    for step in range(37):
        group = opt.param_groups[0]
        assert lrs[step] == group["lr"] and moms[step] == group["betas"][0], step
        opt.step()
        sched.step()
    assert lrs[37] == opt.param_groups[0]["lr"] and moms[37] == opt.param_groups[0]["betas"][0]


def test_choice_of_step(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("MOSAICDIFF_COMPILE", raising=False)
    assert not use_compiled(None, 1_000, cpu)  # short: compiling would not pay
    assert use_compiled(None, 10_000_000, cpu)
    assert use_compiled(True, 10, cpu) and not use_compiled(False, 10**9, cpu)
    monkeypatch.setenv("MOSAICDIFF_COMPILE", "0")
    assert not use_compiled(None, 10**9, cpu)
    monkeypatch.setenv("MOSAICDIFF_COMPILE", "1")
    assert use_compiled(None, 10, cpu)
    monkeypatch.setenv("MOSAICDIFF_COMPILE", "yes")
    with pytest.raises(UserError, match="MOSAICDIFF_COMPILE"):
        use_compiled(None, 10, cpu)


SLOW_ARCHS = [pytest.param(a, marks=pytest.mark.slow) for a in ("attn", "identity", "top1")]


@pytest.mark.parametrize("arch", ["cnn", *SLOW_ARCHS])
def test_compiled_training_equals_eager(tmp_path, tiny, arch):
    cfg = tiny(arch, epochs=3, seeds=(0, 4))
    train(cfg, tmp_path / "eager", progress=False, compile=False)
    train(cfg, tmp_path / "compiled", progress=False, compile=True)
    _assert_same_run(tmp_path / "eager", tmp_path / "compiled")
    eager = RunDir(tmp_path / "eager").read_metrics()
    compiled = RunDir(tmp_path / "compiled").read_metrics()
    for a, b in zip(eager, compiled, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)


@pytest.mark.slow
def test_compiled_resume_equals_uninterrupted(tmp_path, tiny):
    cfg = tiny("attn", epochs=4, seeds=(0, 1), checkpoint_every=2)
    train(cfg, tmp_path / "full", progress=False, compile=True)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for f in RunDir(tmp_path / "cut").checkpoint_dir.glob("epoch-000004*"):
        f.unlink()
    train(cfg, tmp_path / "cut", resume=True, progress=False, compile=True)
    _assert_same_run(tmp_path / "full", tmp_path / "cut", exact=True)


@pytest.mark.slow
def test_eager_checkpoint_resumes_compiled(tmp_path, tiny):
    cfg = tiny("cnn", epochs=4, seeds=(0, 1), checkpoint_every=2)
    train(cfg, tmp_path / "eager", progress=False, compile=False)
    shutil.copytree(tmp_path / "eager", tmp_path / "mixed")
    for f in RunDir(tmp_path / "mixed").checkpoint_dir.glob("epoch-000004*"):
        f.unlink()
    train(cfg, tmp_path / "mixed", resume=True, progress=False, compile=True)
    _assert_same_run(tmp_path / "eager", tmp_path / "mixed")


def test_a_process_may_compile_many_runs():
    # A sweep worker compiles one step per point; dynamo's default limit (8) failed the 9th.
    import torch._dynamo.config as dynamo_config

    from mosaicdiff.fast.inductor import configure_inductor

    configure_inductor()
    limit = getattr(dynamo_config, "recompile_limit", None) or dynamo_config.cache_size_limit
    assert limit >= 1024


def test_inductors_gpu_advice_is_silenced_and_nothing_else():
    # As Inductor words them (torch 2.11 on an H200); a warning of any other text still shows.
    import warnings

    from mosaicdiff.fast.inductor import configure_inductor

    advice = [
        "TensorFloat32 tensor cores for float32 matrix multiplication available but not "
        "enabled. Consider setting `torch.set_float32_matmul_precision('high')`",
        "\nOnline softmax is disabled on the fly since Inductor decides to\nsplit the reduction.",
    ]
    other = ["float32 matmul precision", "Online softmax is enabled"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        configure_inductor()
        for text in advice + other:
            warnings.warn(text, UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == other


_CACHE_SCRIPT = """
import multiprocessing, os, torch
from mosaicdiff.fast.inductor import configure_inductor

def child(queue):
    configure_inductor()
    queue.put(os.environ["TORCHINDUCTOR_CACHE_DIR"])

if __name__ == "__main__":
    configure_inductor()
    torch.compile(lambda x: x + 1)(torch.ones(3))  # something in the cache
    mine = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    print(mine, len(os.listdir(mine)) > 0)
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    worker = spawn.Process(target=child, args=(queue,))
    worker.start()
    print(queue.get())
    worker.join()
"""


def test_each_process_compiles_into_a_cache_of_its_own_and_removes_it(tmp_path):
    # A shared cache can be corrupted by two processes compiling one graph; the folders each
    # process made were left behind (~8 MB a command).
    script = tmp_path / "script.py"
    script.write_text(_CACHE_SCRIPT)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    child = subprocess.run(
        [sys.executable, str(script)],
        env=env | {"TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    (mine, filled), (theirs,) = (line.split() for line in child.stdout.splitlines())
    assert filled == "True"
    assert mine != theirs
    assert {os.path.dirname(mine), os.path.dirname(theirs)} == {str(temp)}
    # Both removed on exit (torch's own precompiled headers stay in its default folder).
    assert not os.path.exists(mine) and not os.path.exists(theirs)


def test_a_cache_the_user_chose_is_kept(tmp_path, monkeypatch):
    from mosaicdiff.fast.inductor import configure_inductor

    chosen = str(tmp_path / "chosen")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", chosen)
    configure_inductor()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == chosen


_SIGTERM_SCRIPT = """
import os, signal, sys, time
if sys.argv[1] == "theirs":  # a handler set before ours, as submitit sets one
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
from mosaicdiff.fast.inductor import configure_inductor
configure_inductor()
print(os.environ["TORCHINDUCTOR_CACHE_DIR"], flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("handler", ["none", "theirs"])
def test_sigterm_removes_the_cache_and_keeps_a_handler_set_before(tmp_path, handler):
    # A pool stops its workers with SIGTERM (on Ctrl-C too), and so does a cancelled SLURM job;
    # atexit does not run on it, and each stopped process left its cache in the temp dir.
    script = tmp_path / "script.py"
    script.write_text(_SIGTERM_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    child = subprocess.Popen(
        [sys.executable, str(script), handler],
        env=env | {"TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        cache = child.stdout.readline().strip()
        assert os.path.isdir(cache)
        child.terminate()
        code = child.wait(60)
    finally:
        child.kill()
        child.stdout.close()
    assert code == (-signal.SIGTERM if handler == "none" else 7)  # still dies of it, or theirs
    assert not os.path.exists(cache)


def test_a_cache_left_by_a_killed_process_goes_when_the_next_one_starts(tmp_path):
    # Probe 62: SIGKILL runs no handler, and nothing removed the cache later
    script = tmp_path / "script.py"
    script.write_text(_SIGTERM_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env |= {"TMPDIR": str(tmp_path)}
    older = tmp_path / "mosaicdiff-inductor-older"  # no owner file: a version before them
    older.mkdir()
    children, caches = [], []
    try:
        for _ in range(3):
            children.append(
                subprocess.Popen(
                    [sys.executable, str(script), "none"],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            caches.append(children[-1].stdout.readline().strip())
            assert os.path.isdir(caches[-1])
            if len(caches) == 1:
                children[0].kill()  # killed: leaves its cache
                children[0].wait(60)
                assert os.path.isdir(caches[0])
        # the second removed the first's; the third kept the second's, whose process lives
        assert not os.path.exists(caches[0])
        assert os.path.isdir(caches[1]) and os.path.isdir(caches[2]) and older.is_dir()
    finally:
        for child in children:
            child.kill()
            child.wait(60)
            child.stdout.close()
