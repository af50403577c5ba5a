"""The hand-vectorised DDPM loop (`fast.native`) against the reference and the eager step."""

import pytest
import torch

from mosaicdiff.config import ModelConfig
from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast import native
from mosaicdiff.fast.sampling import FastDDPM, fast_denoiser
from mosaicdiff.models import build_model
from mosaicdiff.sampling import ddpm_sample

SHAPE = (3, 4, 4)
needs_native = pytest.mark.skipif(
    not native.cpu_has_avx2(), reason="the native sampler needs an x86 CPU with AVX2"
)


def _model(arch, T, seeds=(0, 1), scale=1.0, **kw):
    model = build_model(ModelConfig(arch=arch, **kw), SHAPE, T, seeds)
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
    fast = FastDDPM(fast_denoiser(model), schedule, compile=True)
    assert fast.native
    out = fast(x_T, g_fast)
    assert torch.equal(g_ref.get_state(), g_fast.get_state())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_native
@pytest.mark.parametrize("arch", native.ARCHS)
def test_native_steps_equal_the_eager_steps(arch):
    """`n_steps` runs the first steps only, with the same noise as the eager token-space step;
    with sharp attention, so the softmax weights and top1's winners are far from uniform."""
    schedule = Schedule.linear(T=30)
    net = fast_denoiser(_model(arch, 30, seeds=(0, 1, 2), scale=3.0))
    x_T = torch.randn(3 * 20, *SHAPE, generator=torch.Generator().manual_seed(1))
    eager = FastDDPM(net, schedule, compile=False)(x_T, torch.Generator().manual_seed(3), 7)
    fast = FastDDPM(net, schedule, compile=True)(x_T, torch.Generator().manual_seed(3), 7)
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(eager, x_T, atol=1e-2)  # 7 steps moved the samples


def test_native_sampler_is_used_for_the_networks_it_was_built_for_only():
    schedule = Schedule.linear(T=10)
    cnn = fast_denoiser(_model("cnn", 10))
    assert native.supports(cnn, "threefry") == ((4, 12, 32) in native.SHAPES)
    assert not native.supports(cnn, "torch")
    for kw in ({"nonlinearity": "relu"}, {"hidden": 16}, {"arch": "attn", "hidden": 16}):
        cfg = ModelConfig(**{"arch": "cnn", **kw})
        net = fast_denoiser(build_model(cfg, SHAPE, 10, (0,)).eval().requires_grad_(False))
        assert not native.supports(net, "threefry"), kw
    assert not FastDDPM(cnn, schedule, compile=False).native  # it builds only where compiling
    assert not FastDDPM(cnn, schedule, native_loop=False).native
