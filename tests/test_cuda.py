"""The GPU paths against their CPU references; skipped where no CUDA GPU is visible.

Run on a GPU machine with `pytest tests/test_cuda.py`.
"""

from dataclasses import replace

import pytest
import torch

from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast.folding import FoldedNet
from mosaicdiff.fast.sampling import fast_ddpm_sample
from mosaicdiff.io import load_tensors
from mosaicdiff.noise import counter_normal
from mosaicdiff.runs import RunDir
from mosaicdiff.sampling import ddpm_sample
from mosaicdiff.training import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _final(path):
    return load_tensors(RunDir(path).checkpoints()[-1])[0]


def test_threefry_noise_is_the_same_on_cpu_and_gpu():
    key = torch.tensor([123, -456], dtype=torch.int32)
    index = torch.arange(1000, dtype=torch.int32)
    cpu = counter_normal(key, 7, index, 48)
    gpu = counter_normal(key.cuda(), 7, index.cuda(), 48).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["cnn", "attn"])
def test_graphed_compiled_training_equals_eager_on_the_gpu(tmp_path, tiny, arch):
    cfg = replace(tiny(arch, epochs=3, seeds=(0, 4)), device="cuda")
    train(cfg, tmp_path / "eager", progress=False, compile=False)
    train(cfg, tmp_path / "graphed", progress=False, compile=True)
    eager, graphed = _final(tmp_path / "eager"), _final(tmp_path / "graphed")
    for key in eager:
        if not key.startswith("rng."):
            torch.testing.assert_close(graphed[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    eager_loss = [r["loss"] for r in RunDir(tmp_path / "eager").read_metrics()]
    graphed_loss = [r["loss"] for r in RunDir(tmp_path / "graphed").read_metrics()]
    assert sum(graphed_loss, []) == pytest.approx(sum(eager_loss, []), rel=1e-4)


def test_graphed_top1_training_is_reproducible(tmp_path, tiny):
    cfg = replace(tiny("top1", epochs=2), device="cuda")
    train(cfg, tmp_path / "a", progress=False, compile=True)
    train(cfg, tmp_path / "b", progress=False, compile=True)
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for k, v in a.items() if v.is_floating_point())


@pytest.mark.parametrize("arch", ["cnn", "attn", "identity", "top1"])
def test_fast_sampler_on_the_gpu_equals_the_reference(arch):
    from mosaicdiff.config import ModelConfig
    from mosaicdiff.models import build_model

    schedule = Schedule.linear(T=40)
    model = build_model(ModelConfig(arch=arch), (3, 4, 4), 40, (0, 1)).eval().cuda()
    model.requires_grad_(False)
    x_T = torch.randn(2 * 512, 3, 4, 4, device="cuda")
    ref = ddpm_sample(model.as_denoiser(), x_T, torch.Generator("cuda").manual_seed(2), schedule)
    fast = fast_ddpm_sample(
        FoldedNet(model), x_T, torch.Generator("cuda").manual_seed(2), schedule, compile=True
    )
    close = torch.isclose(fast, ref, rtol=1e-3, atol=1e-3).flatten(1).all(1)
    assert close.float().mean() > (0.95 if arch == "top1" else 0.999)
