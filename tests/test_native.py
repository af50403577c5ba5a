"""The hand-vectorised DDPM loop (`fast.native`) against the reference and the eager step, and
its build cache."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from mosaicdiff.config import ModelConfig
from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast import native
from mosaicdiff.fast.folding import FoldedNet
from mosaicdiff.fast.sampling import FastDDPM
from mosaicdiff.models import build_model
from mosaicdiff.sampling import ddpm_sample

SHAPE = (3, 4, 4)
needs_native = pytest.mark.skipif(
    native.isa() is None, reason="the native sampler needs an x86 CPU with AVX2 or AVX-512"
)


def _model(arch, T, seeds=(0, 1), scale=1.0, image=SHAPE, **kw):
    model = build_model(ModelConfig(arch=arch, **kw), image, T, seeds)
    with torch.no_grad():  # scale 3: sharper attention than at initialisation
        for p in model.parameters():
            p.mul_(scale)
    return model.eval().requires_grad_(False)


@needs_native
@pytest.mark.parametrize("arch", native.ARCHS)
@pytest.mark.parametrize("time_embedding", ["sinusoidal", "none"])
def test_native_sampler_equals_the_reference_sampler(arch, time_embedding):
    assert native.available()
    schedule = Schedule.linear(T=40)
    model = _model(arch, 40, time_embedding=time_embedding)
    x_T = torch.randn(2 * 61, *SHAPE, generator=torch.Generator().manual_seed(1))  # 61: not 8k
    g_ref, g_fast = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    ref = ddpm_sample(model.as_denoiser(), x_T, g_ref, schedule, noise="threefry")
    fast = FastDDPM(FoldedNet(model), schedule, compile=True)
    assert fast.native
    out = fast(x_T, g_fast)
    assert torch.equal(g_ref.get_state(), g_fast.get_state())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_native
@pytest.mark.parametrize("arch", ["cnn", "attn"])
def test_native_sampler_with_a_key_and_first_index_per_seed_equals_the_reference(arch):
    """Indexed noise (`noise.Counters.of_seeds`): each seed's own key, samples counted from an
    offset, as a chunk of a samples folder draws them."""
    from mosaicdiff.noise import Counters, seed_key

    schedule = Schedule.linear(T=40)
    model = _model(arch, 40)
    counters = Counters.of_seeds(torch.stack([seed_key(4, 0), seed_key(4, 1)]), 1000, 21)
    x_T = counters.initial(SHAPE, schedule.T)
    ref = ddpm_sample(model.as_denoiser(), x_T, counters, schedule)
    fast = FastDDPM(FoldedNet(model), schedule, compile=True)
    assert fast.native
    torch.testing.assert_close(fast(x_T, counters), ref, rtol=1e-4, atol=1e-4)


@needs_native
@pytest.mark.parametrize("arch", native.ARCHS)
def test_native_sampler_at_another_shape_equals_the_reference_sampler(arch):
    """16 tokens (8x8 images) of width 16, as a sweep over the pairings' grid and width has:
    a build of its own."""
    schedule, image = Schedule.linear(T=20), (3, 8, 8)
    model = _model(arch, 20, image=image, hidden=16)
    x_T = torch.randn(2 * 13, *image, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    ref = ddpm_sample(model.as_denoiser(), x_T, g, schedule, noise="threefry")
    fast = FastDDPM(FoldedNet(model), schedule, compile=True)
    assert fast.native and native.shape_of(fast.net) == (16, 12, 16)
    out = fast(x_T, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_native
@pytest.mark.parametrize("arch", native.ARCHS)
def test_native_steps_equal_the_eager_steps(arch):
    """`n_steps` runs the first steps only, with the same noise as the eager token-space step;
    with sharp attention, so the softmax weights and top1's winners are far from uniform."""
    schedule = Schedule.linear(T=30)
    net = FoldedNet(_model(arch, 30, seeds=(0, 1, 2), scale=3.0))
    x_T = torch.randn(3 * 20, *SHAPE, generator=torch.Generator().manual_seed(1))
    eager = FastDDPM(net, schedule, compile=False)(x_T, torch.Generator().manual_seed(3), 7)
    fast = FastDDPM(net, schedule, compile=True)(x_T, torch.Generator().manual_seed(3), 7)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(eager, x_T, atol=1e-2)  # 7 steps moved the samples


SAMPLE_EVERY_ARCH = """
import sys, torch
from mosaicdiff.config import ModelConfig
from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast import native
from mosaicdiff.fast.folding import FoldedNet
from mosaicdiff.fast.sampling import FastDDPM
from mosaicdiff.models import build_model
out = {}
for arch in native.ARCHS:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 30, (0, 1))
    fast = FastDDPM(FoldedNet(model.eval().requires_grad_(False)), Schedule.linear(T=30))
    assert fast.native and native.lanes() == int(sys.argv[2]), native.isa()
    x_T = torch.randn(2 * 37, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out[arch] = fast(x_T, torch.Generator().manual_seed(2))
    out[arch + " weights"] = torch.cat([p.flatten() for p in model.parameters()])
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(native.isa() != "AVX512", reason="compares AVX-512 with AVX2: no AVX-512")
def test_the_avx512_loop_draws_the_avx2_loops_samples(tmp_path):
    """16 samples per vector against 8 (ATEN_CPU_CAPABILITY=avx2 chooses the AVX2 build), each
    in a process of its own: bit for bit the same samples, for every arch, 37 per seed (not
    whole vectors). Each lane does the same float operations at either width."""
    outs = []
    for capability, lanes in (("avx512", 16), ("avx2", 8)):
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        file = tmp_path / f"{capability}.pt"
        run = [sys.executable, "-c", SAMPLE_EVERY_ARCH, str(file), str(lanes)]
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        outs.append(torch.load(file, weights_only=True))
    wide, narrow = outs
    for arch in native.ARCHS:
        assert torch.equal(wide[arch + " weights"], narrow[arch + " weights"])
        assert torch.equal(wide[arch], narrow[arch]), arch


def test_native_sampler_is_used_for_the_networks_it_computes_only(monkeypatch):
    monkeypatch.setattr(native, "isa", lambda: "AVX2")  # the 8-lane build's limits
    schedule = Schedule.linear(T=10)
    cnn = FoldedNet(_model("cnn", 10))
    assert native.shape_of(cnn) == native.PAPER_SHAPE and native.supports(cnn, "threefry")
    assert not native.supports(cnn, "torch")
    for kw in [
        {"nonlinearity": "relu"},
        {"hidden": 18},  # not whole vectors of four columns
        {"patch": 1},  # 3 values per token
        {"hidden": 256},  # beyond what was measured
        {"arch": "attn", "hidden": 128},  # attention's activations spill: slower
    ]:
        cfg = ModelConfig(**{"arch": "cnn", **kw})
        net = FoldedNet(build_model(cfg, SHAPE, 10, (0,)).eval().requires_grad_(False))
        assert not native.supports(net, "threefry"), kw
    wide = build_model(ModelConfig(hidden=128), SHAPE, 10, (0,)).eval().requires_grad_(False)
    assert native.supports(FoldedNet(wide), "threefry")  # the cnn's are not
    assert not FastDDPM(cnn, schedule, compile=False).native  # it builds only where compiling
    assert not FastDDPM(cnn, schedule, native_loop=False).native


def test_attention_at_hidden_128_takes_the_loop_only_with_16_lanes(monkeypatch):
    cfg = ModelConfig(arch="attn", hidden=128)
    net = FoldedNet(build_model(cfg, SHAPE, 10, (0,)).eval().requires_grad_(False))
    for capability, used in [("AVX2", False), ("AVX512", True)]:
        monkeypatch.setattr(native, "isa", lambda c=capability: c)
        assert native.supports(net, "threefry") == used, capability


@needs_native
def test_a_build_killed_halfway_leaves_nothing_to_wait_on(tmp_path):
    """SIGKILL the first build in the middle; the next process builds in a folder of its own
    (removing the killed one: its process is gone) and a third loads that build without
    building."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    code = "from mosaicdiff.fast import native; assert native.available()"
    run = [sys.executable, "-c", code]
    first = subprocess.Popen(run, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*-build-*/build.ninja")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # python, ninja and the compiler
    first.wait()
    (killed,) = tmp_path.glob(".*-build-*")
    assert (killed / "lock").exists()  # torch's lock, which its own shared folder would keep
    stem = native.cached_path().stem
    assert killed.name.startswith(f".{stem}-build-{socket.gethostname()}-{first.pid}-")
    for builds in (True, False):
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert ("building the native DDPM loop" in done.stderr) == builds
    assert [p.name for p in tmp_path.iterdir()] == [native.cached_path().name]


def test_build_folders_of_live_processes_and_of_other_hosts_stay_until_old(tmp_path):
    """A build folder is removed when its process on this host is gone, or (another host's,
    on a shared filesystem) when it is older than STALE_S; a live build's folder stays."""
    prefix = f".{native.NAME}-build-"  # as earlier versions named them
    stem = native.cached_path().stem
    live = tmp_path / f"{prefix}{socket.gethostname()}-{os.getpid()}-abc_1"
    other = tmp_path / f"{prefix}node-07.cluster-{os.getpid()}-abc_2"
    old = tmp_path / f"{prefix}node-08-12-abc_3"
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f"{prefix}{socket.gethostname()}-{gone.pid}-abc_4"
    killed_named_by_what_it_built = tmp_path / f".{stem}-build-{socket.gethostname()}-{gone.pid}-x"
    for folder in (live, other, old, killed, killed_named_by_what_it_built):
        folder.mkdir()
    os.utime(old, (time.time() - 2 * native.STALE_S,) * 2)
    native._remove_killed_builds(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_a_failed_build_warns_and_the_compiled_step_stands_in(monkeypatch):
    def no_compiler(shape=native.PAPER_SHAPE):
        raise RuntimeError("Error building extension 'mosaicdiff_ddpm_loop'\nc++: not found")

    monkeypatch.setattr(native, "_module", no_compiler)
    monkeypatch.setattr(native, "isa", lambda: "AVX2")
    monkeypatch.setattr(native, "available", native.available.__wrapped__)  # not the cached one
    net = FoldedNet(_model("cnn", 10))
    with pytest.warns(UserWarning, match="not built \\(Error building extension"):
        fast = FastDDPM(net, Schedule.linear(T=10), compile=True)
    assert native.supports(net, "threefry") and not fast.native


def _fake_builder(folder, so):
    """A live process on this host, and a build folder in `folder` named as its build of `so`."""
    process = subprocess.Popen(["sleep", "60"])
    build = folder / f".{so.stem}-build-{socket.gethostname()}-{process.pid}-abc"
    build.mkdir(parents=True)
    return process, build


@needs_native
def test_a_live_build_in_another_process_is_waited_for_not_repeated(tmp_path, monkeypatch, capsys):
    """While another process on this host builds the same file, `_module` waits and loads its
    build; when that process dies with nothing built, `_module` builds it itself."""
    import shutil
    import threading

    built = native.cached_path()
    assert native.available() and built.is_file()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    so = native.cached_path()
    calls = []

    def build(name, source, folder, shape):
        calls.append(shape)
        shutil.copy(built, f"{folder}/{name}.so")
        return "built here"

    monkeypatch.setattr(native, "build", build)

    def finish(process, build_folder):  # the other process's last steps: its .so, then gone
        shutil.copy(built, build_folder / "done.so")
        os.replace(build_folder / "done.so", so)  # in one step, as `_module` does
        shutil.rmtree(build_folder)
        process.kill()
        process.wait()

    process, build_folder = _fake_builder(tmp_path, so)
    threading.Timer(1.0, finish, (process, build_folder)).start()
    module = native._module.__wrapped__(native.PAPER_SHAPE)
    assert hasattr(module, "ddpm_loop") and calls == []
    assert f"waiting for process {process.pid}'s build" in capsys.readouterr().err

    so.unlink()
    process, build_folder = _fake_builder(tmp_path, so)
    threading.Timer(1.0, lambda: (process.kill(), process.wait())).start()  # its build unfinished
    assert native._module.__wrapped__(native.PAPER_SHAPE) == "built here"
    assert calls == [native.PAPER_SHAPE] and so.is_file()
    assert not build_folder.exists()  # a killed build's folder is removed


@needs_native
def test_a_background_build_stopped_early_leaves_nothing(tmp_path, monkeypatch):
    """`built_in_background` builds in a process of its own; the block ending mid-build stops
    it, and its build folder goes. Shapes already built start nothing."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    deadline = time.monotonic() + 120
    with native.built_in_background([native.PAPER_SHAPE, native.PAPER_SHAPE]):
        while not list(tmp_path.glob(".*-build-*/build.ninja")):
            assert time.monotonic() < deadline, "no build started"
            time.sleep(0.1)
        (build,) = tmp_path.glob(".*-build-*")
        assert build.name.startswith(f".{native.cached_path().stem}-build-")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()  # the usual build folder
    assert native.available() and native.cached_path().is_file()

    def no_process(*args, **kwargs):
        raise AssertionError("a build started for a shape already built")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with native.built_in_background([native.PAPER_SHAPE]):
        pass
