from dataclasses import replace

import numpy as np
import pytest
import torch

from mosaicdiff.config import SampleConfig
from mosaicdiff.errors import UserError
from mosaicdiff.generate import draw_samples, load_samples
from mosaicdiff.locks import held
from mosaicdiff.runs import load_run
from mosaicdiff.training import train


def test_chunked_sampling_is_reproducible_and_resumes(tmp_path, tiny):
    cfg = tiny("cnn", epochs=1, seeds=(0, 1))
    train(cfg, tmp_path / "run", progress=False)
    loaded = load_run(tmp_path / "run")
    scfg = SampleConfig(sampler="ddim", steps=20, n_runs=3, n_per_run=10, chunk_size=16)
    out = draw_samples(loaded, scfg, "a", progress=False)
    chunks = sorted(out.glob("chunk-*.npz"))
    assert len(chunks) == 4  # 30 samples per seed, 8 per seed per chunk
    first = load_samples(out)
    assert first.shape == (2, 30, 3, 4, 4)
    # Kill-and-resume: remove one chunk, sample again: the same numbers come back.
    chunks[2].unlink()
    draw_samples(loaded, scfg, "a", progress=False)
    assert np.array_equal(load_samples(out), first)
    # A fresh folder with the same settings gives the same samples.
    assert np.array_equal(load_samples(draw_samples(loaded, scfg, "b", progress=False)), first)
    # Seed 1 of the group equals seed 1's own model sampled with the same noise.
    assert not np.array_equal(first[0], first[1])
    assert torch.isfinite(torch.as_tensor(first)).all()
    # Another process drawing into the folder: refused, not drawn twice (it drew the same
    # chunks beside the first, each process writing every chunk).
    chunks[3].unlink()
    with held(out / ".sample.lock", "sampled"):  # as that process would hold it
        with pytest.raises(UserError, match=r"being sampled by another process \(pid \d+\)"):
            draw_samples(loaded, scfg, "a", progress=False)
        with pytest.raises(UserError, match=r"3 of 4 chunks: another process \(pid \d+\) is dr"):
            load_samples(out)  # not "run sample again", which that would refuse
    assert len(list(out.glob("chunk-*.npz"))) == 3
    draw_samples(loaded, scfg, "a", progress=False)  # let go: it draws
    # A chunk copied over another is refused, not counted: it would hold run 0 twice.
    chunks[2].write_bytes(chunks[0].read_bytes())
    with pytest.raises(UserError, match=r"chunk-00002.npz holds indices 0-7, not those of chunk 2"):
        load_samples(out)


def test_ddpm_chunks_use_the_fast_path_and_equal_the_reference_sampler(tmp_path, tiny):
    from mosaicdiff.config_io import override
    from mosaicdiff.generate import chunk_seed
    from mosaicdiff.noise import Counters, seed_key
    from mosaicdiff.sampling import ddpm_sample

    cfg = override(tiny("attn", epochs=1, seeds=(0, 1)), ["diffusion.T=50", "sample.steps=50"])
    train(cfg, tmp_path / "run", progress=False)
    loaded = load_run(tmp_path / "run")
    denoiser = loaded.model.as_denoiser()
    # Indexed noise (the default): each seed's key, samples counted across the chunks.
    scfg = SampleConfig(n_runs=2, n_per_run=6, steps=50, chunk_size=10)
    got = load_samples(draw_samples(loaded, scfg, progress=False))  # chunks of 5 per seed
    counters = Counters.of_seeds(torch.stack([seed_key(0, 0), seed_key(0, 1)]), 0, 12)
    x_T = counters.initial((3, 4, 4), 50)
    ref = ddpm_sample(denoiser, x_T, counters, loaded.schedule).reshape(2, 12, 3, 4, 4)
    torch.testing.assert_close(torch.as_tensor(got), ref, atol=1e-4, rtol=1e-4)
    # Earlier versions' noise: each chunk's generator draws x_T, then its Threefry key.
    scfg = SampleConfig(n_runs=1, n_per_run=12, steps=50, chunk_size=100, noise="threefry")
    got = load_samples(draw_samples(loaded, scfg, "chunked", progress=False))
    g = torch.Generator().manual_seed(chunk_seed(scfg.seed, 0))
    x_T = torch.randn((24, 3, 4, 4), generator=g)
    ref = ddpm_sample(denoiser, x_T, g, loaded.schedule).reshape(2, 12, 3, 4, 4)
    torch.testing.assert_close(torch.as_tensor(got), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_a_sample_depends_on_its_seeds_and_index_not_on_its_chunk_or_group(tmp_path, tiny, sampler):
    """Probe 62's finding: seed 1 trained beside seed 0, sampled 3 x 10 in chunks of 8 per
    seed, drew other samples than seed 1 trained alone and sampled 1 x 13 at once, though
    their weights are the same. With indexed noise they are the same samples."""
    from mosaicdiff.config_io import override

    steps = 50 if sampler == "ddpm" else 10
    sets = ["diffusion.T=50", f"sample.sampler={sampler}", f"sample.steps={steps}"]
    group = override(tiny("cnn", epochs=1, seeds=(0, 1)), sets)
    alone = override(tiny("cnn", epochs=1, seeds=(1,)), sets)
    train(group, tmp_path / "group", progress=False)
    train(alone, tmp_path / "alone", progress=False)
    g, a = load_run(tmp_path / "group"), load_run(tmp_path / "alone")
    assert torch.equal(g.model.member(1).state_dict()["w_in"], a.model.state_dict()["w_in"])
    scfg = group.sample
    in_group = load_samples(draw_samples(g, replace(scfg, n_runs=3, n_per_run=10, chunk_size=16)))
    by_itself = load_samples(draw_samples(a, replace(scfg, n_runs=1, n_per_run=13)))
    np.testing.assert_allclose(in_group[1, :13], by_itself[0], atol=1e-5, rtol=1e-5)
    assert not np.allclose(in_group[0, :13], by_itself[0], atol=1e-2)  # seed 0's own
    other = load_samples(draw_samples(a, replace(scfg, n_runs=1, n_per_run=13, seed=1), "other"))
    assert not np.allclose(other[0], by_itself[0], atol=1e-2)  # another sample seed


def test_the_native_loops_shape_is_known_before_training():
    """`native_shape`: what `reproduce` builds in the background while the networks train; the
    loop's shape where sampling a run of the config uses it, None where it samples another way."""
    from mosaicdiff.config import RunConfig
    from mosaicdiff.config_io import override
    from mosaicdiff.fast import native
    from mosaicdiff.generate import native_shape

    paper = RunConfig()
    assert native_shape(paper) == native.PAPER_SHAPE
    assert native_shape(override(paper, ["model.arch=top1", "model.hidden=16"])) == (4, 12, 16)
    for change in [
        "device=cuda",
        "sample.n_per_run=10",  # too few samples to compile for
        "model.nonlinearity=relu",
        "sample.noise=torch",
        "sample.sampler=ddim",
        "sample.clip_x0=true",
        "model.arch=resnet",
    ]:
        assert native_shape(override(paper, [change])) is None, change


def test_images_of_an_odd_number_of_values_sample_with_indexed_noise(tmp_path, tiny):
    """1x5x5 images hold 25 values: the counters' last pair keeps its cosine normal only."""
    from mosaicdiff.config_io import override

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "odd.npz", images=rng.integers(0, 256, (32, 5, 5), dtype=np.uint8))
    sets = ["data.kind=npz", f"data.path={tmp_path / 'odd.npz'}", "model.arch=resnet"]
    sets += ["model.hidden=8", "train.batch_size=16", "diffusion.T=20"]
    sets += ["sample.sampler=ddpm", "sample.steps=20", "sample.n_runs=1", "sample.n_per_run=6"]
    cfg = override(tiny(epochs=1), sets)
    train(cfg, tmp_path / "run", progress=False)
    x = load_samples(draw_samples(load_run(tmp_path / "run"), cfg.sample, progress=False))
    assert x.shape == (1, 6, 1, 5, 5) and np.isfinite(x).all()
