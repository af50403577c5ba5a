import pytest
import torch

from mosaicdiff.config import ModelConfig
from mosaicdiff.diffusion import Schedule
from mosaicdiff.fast.folding import FoldedNet, mix, thin_bmm
from mosaicdiff.fast.sampling import FastDDPM, box_muller, fast_ddpm_sample, patchify_pairs
from mosaicdiff.models import build_model
from mosaicdiff.models.patchnet import patchify
from mosaicdiff.sampling import ddpm_sample

ARCHS = ["cnn", "attn", "identity", "top1"]
SHAPE = (3, 4, 4)


def _model(arch, T=1000, seeds=(0, 1), time_embedding="sinusoidal", scale=3.0):
    cfg = ModelConfig(arch=arch, time_embedding=time_embedding)
    model = build_model(cfg, SHAPE, T, seeds)
    with torch.no_grad():  # sharper attention than at initialisation, as after training
        for p in model.parameters():
            p.mul_(scale)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("time_embedding", ["sinusoidal", "none"])
def test_folded_network_equals_the_model(arch, time_embedding):
    model = _model(arch, time_embedding=time_embedding)
    folded = FoldedNet(model)
    x = torch.randn(2 * 50, *SHAPE, generator=torch.Generator().manual_seed(0))
    for t in (0, 17, 999):
        tt = torch.tensor([t])
        torch.testing.assert_close(folded(x, tt), model.as_denoiser()(x, tt), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,p", [((2, 5, 3, 4, 4), 2), ((7, 1, 8, 8), 4), ((3, 6, 6), 3)])
def test_patchify_pairs_is_patchify_bit_for_bit(shape, p):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(patchify_pairs(x, p), patchify(x, p))
    compiled = torch.compile(patchify_pairs, fullgraph=True, dynamic=False)
    assert torch.equal(compiled(x * 1.5, p), patchify(x * 1.5, p))  # inside a fused kernel


@pytest.mark.parametrize("fuse", [True, False])
def test_thin_bmm_is_bmm_and_compiles_without_a_gemm_call_where_it_fuses(fuse, monkeypatch):
    from torch._inductor.utils import run_and_get_code

    import mosaicdiff.fast.folding as folding

    monkeypatch.setattr(folding, "FUSE_THIN_MATMULS", fuse)
    torch._dynamo.reset()  # the flag is read at trace time
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 300, 12, generator=g), torch.randn(2, 12, 32, generator=g)
    assert torch.equal(thin_bmm(x, w), torch.bmm(x, w))  # eager: bmm itself

    def net(x, w):  # cnn's shape: matmul, activation, matmul back
        return thin_bmm(torch.nn.functional.silu(thin_bmm(x, w)), w.mT.contiguous())

    compiled = torch.compile(net, fullgraph=True, dynamic=False)
    y, code = run_and_get_code(compiled, x, w)
    expected = torch.bmm(torch.nn.functional.silu(torch.bmm(x, w)), w.mT)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    # fused: one loop, no GEMM between kernels; else MKL's GEMMs
    assert ("bmm" in "".join(code)) is not fuse
    torch._dynamo.reset()


@pytest.mark.parametrize("n", [4, 16, 20])  # unrolled up to 16 tokens, a GEMM beyond
def test_mix_is_bmm_and_compiles_without_a_reduction_over_tokens(n):
    from torch._inductor.utils import run_and_get_code

    g = torch.Generator().manual_seed(0)
    w, v = torch.randn(300, n, n, generator=g).softmax(-1), torch.randn(300, n, 12, generator=g)
    torch.testing.assert_close(mix(w, v), torch.bmm(w, v), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
    out, code = run_and_get_code(torch.compile(mix, fullgraph=True, dynamic=False), w, v)
    torch.testing.assert_close(out, torch.bmm(w, v), rtol=1e-5, atol=1e-6)
    if n <= 16 and not out.is_cuda:  # pointwise: nothing for inductor to parallelise badly
        assert "tmp_acc" not in "".join(code)
    torch._dynamo.reset()


def test_box_muller_of_rand_is_randn():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = torch.randn(10, 48, generator=g1)
    u = torch.rand(10, 48, generator=g2)
    torch.testing.assert_close(box_muller(u), z, rtol=0, atol=2e-6)
    assert torch.equal(g1.get_state(), g2.get_state())  # the stream goes on identically


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("noise", ["threefry", "torch"])
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fast_ddpm_equals_reference_sampler(arch, noise, compile):
    schedule = Schedule.linear(T=40)
    model = _model(arch, T=40, seeds=(0, 1), scale=1.0)  # a stable sampler
    x_T = torch.randn(2 * 64, *SHAPE, generator=torch.Generator().manual_seed(1))
    g_ref, g_fast = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    ref = ddpm_sample(model.as_denoiser(), x_T, g_ref, schedule, noise=noise)
    fast = fast_ddpm_sample(FoldedNet(model), x_T, g_fast, schedule, compile, noise)
    assert torch.equal(g_ref.get_state(), g_fast.get_state())
    if arch == "top1":  # a near-tie in the argmax may flip under float rounding: allow a few
        close = torch.isclose(fast, ref, rtol=1e-3, atol=1e-3).flatten(1).all(1)
        assert close.float().mean() > 0.95
    else:
        torch.testing.assert_close(fast, ref, rtol=1e-3, atol=1e-3)


def test_noise_overlap_changes_nothing():
    schedule = Schedule.linear(T=30)
    model = _model("attn", T=30, seeds=(0,), scale=1.0)
    sampler = FastDDPM(FoldedNet(model), schedule, compile=False, noise="torch")
    x_T = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(1))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sampler(x_T, g1, overlap_noise=True)
    b = sampler(x_T, g2, overlap_noise=False)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())


def test_threefry_noise_does_not_depend_on_the_chunk_size(monkeypatch):
    """The counter names each value, so splitting the batch into chunks changes nothing."""
    import mosaicdiff.fast.sampling as fs

    schedule = Schedule.linear(T=20)
    model = _model("attn", T=20, seeds=(0, 1), scale=1.0)
    x_T = torch.randn(2 * 50, *SHAPE, generator=torch.Generator().manual_seed(1))
    one = FastDDPM(FoldedNet(model), schedule, compile=False)(x_T, torch.Generator())
    monkeypatch.setattr(fs, "CHUNK", 7)
    many = FastDDPM(FoldedNet(model), schedule, compile=False)(x_T, torch.Generator())
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["cnn", "attn"])
def test_fast_ddpm_with_each_samples_counters_equals_the_reference_sampler(arch):
    from mosaicdiff.noise import Counters, seed_key

    schedule = Schedule.linear(T=30)
    model = _model(arch, T=30, seeds=(0, 1), scale=1.0)
    counters = Counters.of_seeds(torch.stack([seed_key(0, 0), seed_key(0, 1)]), 37, 20)
    x_T = counters.initial(SHAPE, schedule.T)
    ref = ddpm_sample(model.as_denoiser(), x_T, counters, schedule)
    fast = FastDDPM(FoldedNet(model), schedule, compile=False)(x_T, counters)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="noise='torch'"):
        FastDDPM(FoldedNet(model), schedule, compile=False, noise="torch")(x_T, counters)


def test_chunks_are_one_size_where_they_can_be():
    from mosaicdiff.fast.sampling import chunk_count

    assert chunk_count(16_384) == 1
    assert chunk_count(100_000) == 8  # 8 x 12,500 rather than 7 of 14,285 or 14,286
    assert chunk_count(100_003) == 7  # a prime: the fewest, of two sizes
    assert chunk_count(1) == 1
    assert chunk_count(12_500, seeds=8) == 10  # at most 2,048 per seed: 10 x 1,250, not 7
    assert chunk_count(5, seeds=10**5) == 5  # more seeds than CHUNK: one sample per seed


def test_a_call_holds_at_most_chunk_samples_over_all_seeds(monkeypatch):
    """Seeds share each compiled call's budget: 3 seeds x 50 with CHUNK 40 run in 5 calls of
    3 x 10, not in 2 of 3 x 25."""
    import mosaicdiff.fast.sampling as fs

    monkeypatch.setattr(fs, "CHUNK", 40)
    schedule = Schedule.linear(T=3)
    fast = FastDDPM(FoldedNet(_model("cnn", T=3, seeds=(0, 1, 2))), schedule, compile=False)
    shapes, step = [], fast.step
    fast.step = lambda x, *rest: shapes.append(tuple(x.shape[:2])) or step(x, *rest)
    fast(torch.randn(3 * 50, *SHAPE), torch.Generator().manual_seed(0))
    assert shapes == [(3, 10)] * 5 * schedule.T


@pytest.mark.parametrize("n_steps", [-1, 4])
def test_a_step_count_outside_the_schedule_is_refused(n_steps):
    # Past t = 0 the compiled loop would wrap to the tables' last rows, the native loop read
    # before their start.
    schedule = Schedule.linear(T=3)
    fast = FastDDPM(FoldedNet(_model("cnn", T=3)), schedule, compile=False)
    x_T = torch.randn(2 * 8, *SHAPE)
    with pytest.raises(ValueError, match=f"n_steps={n_steps} must be in \\[0, 3\\]"):
        fast(x_T, torch.Generator(), n_steps)
    assert torch.equal(fast(x_T, torch.Generator(), 0), x_T)  # no step: x_T itself


def test_without_a_cpu_compiler_training_and_sampling_run_uncompiled(monkeypatch):
    # Probe 50: with CXX=/bin/false the native build fell back to the compiled step, which
    # died at its first call with Inductor's 100-line InvalidCxxCompiler traceback. Probe 52:
    # the native build was still tried first, and said so twice.
    import warnings

    from torch._inductor import cpp_builder

    from mosaicdiff.fast import inductor
    from mosaicdiff.training import use_compiled

    def broken():
        raise RuntimeError("No working C++ compiler found in torch: (None, '/bin/false')")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", broken)
    inductor._cpu_compiler_problem.cache_clear()
    try:
        cpu = torch.device("cpu")
        with pytest.warns(UserWarning, match="No working C.. compiler .*; running uncompiled"):
            assert not use_compiled(True, 10**9, cpu)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once a process; no native build tried
            fast = FastDDPM(FoldedNet(_model("cnn")), Schedule.linear(), compile=True)
        assert not fast.native and not hasattr(fast.step, "_torchdynamo_orig_callable")
        x_T = torch.randn(2 * 3, *SHAPE)
        assert torch.isfinite(fast(x_T, torch.Generator().manual_seed(0), n_steps=3)).all()
    finally:
        inductor._cpu_compiler_problem.cache_clear()  # the real compiler again for what follows


def test_torch_noise_on_images_of_other_than_16k_values_samples_by_the_reference():
    # Probe 50: 3x6x6 pairings (108 values) with --set sample.noise=torch gave a ValueError
    # traceback from the fast sampler, which splits torch's stream into blocks of 16.
    from mosaicdiff.config import SampleConfig
    from mosaicdiff.generate import samples_folded

    scfg = SampleConfig(noise="torch")
    assert samples_folded(build_model(ModelConfig(), SHAPE, 1000, [0]), scfg)
    assert not samples_folded(build_model(ModelConfig(), (3, 6, 6), 1000, [0]), scfg)
    assert samples_folded(build_model(ModelConfig(), (3, 6, 6), 1000, [0]), SampleConfig())
