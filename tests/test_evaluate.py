import json

import torch

from mosaicdiff.cli import main
from mosaicdiff.io import load_npz, save_npz
from mosaicdiff.metrics.creativity import evaluate_creativity
from mosaicdiff.runs import load_run


def _digits_run(path, capsys):
    args = ["--set", "data.kind=digits", "--set", "model.hidden=4", "--no-progress"]
    assert main(["train", "--out", str(path), "--model", "resnet", "--epochs", "1", *args]) == 0
    sample = ["--runs", "2", "--per-run", "6", "--sampler", "ddim", "--steps", "2"]
    assert main(["sample", str(path), *sample, "--no-progress"]) == 0
    capsys.readouterr()
    return path / "samples" / "default"


def test_evaluate_scores_creativity_on_natural_data(tmp_path, capsys):
    folder = _digits_run(tmp_path / "run", capsys)
    assert main(["evaluate", str(tmp_path / "run"), "--limit", "10"]) == 0  # auto: creativity
    res = json.loads((folder / "results-creativity.json").read_text())
    assert (folder / "nearest.png").stat().st_size > 0
    samples = torch.from_numpy(load_npz(folder / "chunk-00000.npz")["samples"][0, :10])
    want = evaluate_creativity(samples, load_run(tmp_path / "run").dataset.images)
    assert res["per_seed"][0] == {"seed": 0, **want}
    assert res["over_seeds"]["novelty"] == {"mean": want["novelty"], "std": None, "n": 1}
    assert "memorization_rate" in res["over_seeds"] and "copy_atol" not in res["over_seeds"]
    captured = capsys.readouterr()
    assert "seed 0: 10 samples; memorized" in captured.out and "creativity" in captured.err
    # The metric sees through to the samples: training images as samples are all memorized.
    chunk = load_npz(folder / "chunk-00000.npz")
    images = load_run(tmp_path / "run").dataset.images
    chunk["samples"] = images[None, 100:112].numpy()
    save_npz(folder / "chunk-00000.npz", **chunk)
    assert main(["evaluate", str(tmp_path / "run"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    res = json.loads((folder / "results-creativity.json").read_text())["per_seed"][0]
    assert res["n_samples"] == 12 and res["memorization_rate"] == res["copy_rate"] == 1.0
    assert res["novelty"] < 1e-6


def test_evaluate_refuses_what_the_data_cannot_answer(tmp_path, capsys):
    _digits_run(tmp_path / "run", capsys)
    for args, needle in [
        (["--metric", "consistency"], "needs data.kind=pairings, not digits"),
        (["--patch", "9"], "patch=9 must be between 1 and 8"),
        (["--limit", "0"], "--limit=0 must be at least 1"),
    ]:
        assert main(["evaluate", str(tmp_path / "run"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "samples" / "default" / "results-creativity.json").exists()


def test_nearest_figure_puts_each_sample_above_its_nearest_image_with_the_distance():
    from mosaicdiff.evaluate import nearest_figure

    train = torch.linspace(-1, 1, 10 * 3 * 4 * 4).reshape(10, 3, 4, 4)
    samples = torch.cat([train[[7, 2]], train[[4]] + 0.1])  # two copies, one 0.1 away
    fig = nearest_figure(samples, train, "t", label="sample")
    (ax,) = fig.axes  # three pairs: one line
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.00", "0.00", "0.10"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sample", "nearest"]
    tile = ax.get_images()[0].get_array()  # (2 (H + 1) + 1, 3 (W + 1) + 1, 3) in [0, 1]
    assert tile.shape == (11, 16, 3)
    nearest_of_third = (train[4].permute(1, 2, 0).numpy() + 1) / 2
    assert abs(tile[6:10, 11:15] - nearest_of_third).max() < 1e-6


def test_no_consistent_sample_in_any_seed_still_leaves_an_interval_over_seeds(tmp_path):
    # Probe 64: two seeds that both measured 0 % had the 95 % CI [0, 0] over seeds
    import torch

    from mosaicdiff.config import DataConfig
    from mosaicdiff.data.pairings import PairingsSpec
    from mosaicdiff.evaluate import evaluate_consistency
    from mosaicdiff.generate import draw_chunks
    from mosaicdiff.metrics.stats import wilson_interval

    spec = PairingsSpec.from_config(DataConfig())
    for seeds in ([0, 1], [0]):
        out = tmp_path / f"seeds{len(seeds)}"
        s = len(seeds)
        meta = {"seeds": seeds, "sample": {"n_runs": 2, "n_per_run": 20}}
        blank = lambda lo, hi, seed: torch.zeros(s, hi - lo, 3, 4, 4)  # noqa: B023, E731
        draw_chunks(out, meta, blank, 40, 10, 0, 20, s, progress=False)
        res = evaluate_consistency(out, spec, seeds)
        assert all(p["ci95"] == list(wilson_interval(0, 40)) for p in res["per_seed"])
        over = res["over_seeds"]["ci95"]
        assert over == (list(wilson_interval(0, 80)) if len(seeds) == 2 else None)
