import json
from contextlib import contextmanager

import pytest

from mosaicdiff import generate
from mosaicdiff.config_io import override
from mosaicdiff.experiments import reproduce as rp
from mosaicdiff.experiments import theory_section as ts
from mosaicdiff.experiments.theory_section import machines_stage
from mosaicdiff.fast import native
from mosaicdiff.runs import load_run
from mosaicdiff.theory.agreement import sample_agreement


def test_reproduce_end_to_end_then_reuses_everything(tmp_path, monkeypatch, capsys):
    base = override(
        rp.preset_config("quick"),
        [
            "data.n_images=128",
            "train.epochs=2",
            "train.seeds=[0,1]",
            "sample.sampler=ddim",
            "sample.steps=10",
            "sample.eta=1.0",  # stochastic, so the sampler seeds matter
            "sample.n_runs=2",
            "sample.n_per_run=16",
        ],
    )
    monkeypatch.setitem(rp.THEORY_SIZES, "quick", (32, 8))
    # The native loop is built meanwhile for every model still to sample (none use it here).
    built = []

    @contextmanager
    def record(shapes):
        built.append(list(shapes))
        yield

    monkeypatch.setattr(generate, "native_shape", lambda cfg: (cfg.model.arch,))
    monkeypatch.setattr(native, "built_in_background", record)
    report = rp.reproduce(base, tmp_path, progress=False)
    assert built == [[(m,) for m in rp.PAPER_MODELS]]
    # Without progress bars (a batch log) each model still says when it is done.
    printed = capsys.readouterr().out
    assert all(f"{m}: done in " in printed for m in rp.PAPER_MODELS), printed
    rows = json.loads((report / "table.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["random", "random_mc", "cnn", "top1", "identity", "attn"]
    assert abs(rows[0]["ours"] - 100 * 3 / 81) < 1e-9
    assert all(len(r["per_seed"]) == 2 for r in rows[2:])
    top1 = json.loads((tmp_path / "plan.json").read_text())["configs"]["top1"]
    assert top1["train"]["epochs"] == 4  # App. B: twice the epochs
    md = (report / "report.md").read_text()
    for needle in ("Table 1", "Settings", "Theory", "ELS", "differs", "random baseline"):
        assert needle.lower() in md.lower(), needle
    # Where the time went: each model's three phases, the theory stage, and the total.
    timings = json.loads((report / "timings.json").read_text())["timings"]
    assert list(timings["cnn"]) == ["train", "sample", "evaluate"]
    assert list(timings)[-2:] == ["theory", "total"]
    assert timings["total"] >= sum(sum(t.values()) for t in timings.values() if isinstance(t, dict))
    assert f"| attn | sample | {timings['attn']['sample']:.0f} |" in md
    assert f"| total | all, before the report was written | {timings['total']:.0f} | 100 |" in md
    html = (report / "report.html").read_text()
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert html.count("data:image/png;base64,") == len(figures) >= 8
    assert {
        "attention-attn.png",
        "consistency.png",
        "loss.png",
        "failures.png",
        "samples.png",
        "dataset.png",
        "machines.png",
    } <= set(figures)
    table_csv = (report / "table.csv").read_bytes().decode()  # as written: "\n" line ends
    assert table_csv.count("\n") == len(rows) + 1 and "\r" not in table_csv
    assert table_csv.startswith("model,paper,ours,ci_seeds_lo,ci_seeds_hi,seeds\n")
    # The theory stage samples each network once for all its machines; its r^2 is still the
    # one sample_agreement gives for the pair.
    theory = json.loads((tmp_path / "theory/theory.json").read_text())["agreement"]["attn"]
    dataset, schedule, sampler, x_T = ts._setup(base, 32)
    machine = ts.build("AttentionELS (soft)", dataset, schedule)
    net = load_run(tmp_path / "runs/attn", device="cpu").model.member(0).as_denoiser()
    direct = sample_agreement(net, machine, schedule, x_T[:8], ts.AGREE_SEED, sampler)
    assert theory["AttentionELS (soft)"] == {k: direct[k] for k in ("median", "q25", "q75")}
    # A second call reuses every stage: no checkpoint or sample file is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/**/*") if p.is_file()}
    rp.reproduce(base, tmp_path, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert built[1] == []  # nothing left to sample, nothing to build
    timings = json.loads((report / "timings.json").read_text())["timings"]
    assert list(timings["cnn"]) == ["train"]  # reused samples are neither drawn nor evaluated
    # The agreement is of the very networks: one trained anew (another checkpoint) redoes it.
    cache = tmp_path / "theory/theory.json"
    stored = json.loads(cache.read_text())
    networks = dict(stored["key"]["networks"])
    assert set(networks) == set(rp.PAPER_MODELS) and all(networks.values())
    stored["key"]["networks"]["attn"] = "0" * 64
    cache.write_text(json.dumps(stored))
    rp.reproduce(base, tmp_path, progress=False)
    assert json.loads(cache.read_text())["key"]["networks"] == networks


def test_models_side_by_side_equal_one_after_another(tmp_path):
    # What a GPU does by default (one process per model) gives the same numbers as one process.
    base = override(
        rp.preset_config("quick"),
        ["data.n_images=64", "train.epochs=1", "train.seeds=[0]", "sample.sampler=ddim"]
        + ["sample.steps=5", "sample.n_runs=1", "sample.n_per_run=16"],
    )
    configs = rp.model_configs(base, ("cnn", "attn"))
    one, _ = rp.model_stages(configs, tmp_path / "one", progress=False, jobs=1)
    side = {"machines": (machines_stage, (base, tmp_path / "two", 8, 4))}
    two, times = rp.model_stages(configs, tmp_path / "two", False, jobs=3, side=side)
    assert set(two) == {"cnn", "attn"} and set(times) == {"cnn", "attn", "machines"}
    assert list(times["attn"]) == ["train", "sample", "evaluate"]
    assert isinstance(times["machines"], float)
    # The machines sampled beside the models are what the theory stage finds and reuses.
    machines = json.loads((tmp_path / "two/theory/machines.json").read_text())["machines"]
    assert machines == machines_stage(base, tmp_path / "one", 8, 4)
    assert set(machines) == {"ELS", "AttentionELS (soft)", "AttentionELS (top-1)"}
    for arch in configs:
        assert two[arch]["per_seed"] == one[arch]["per_seed"]
        a = (tmp_path / "one/runs" / arch / "samples/default/chunk-00000.npz").read_bytes()
        b = (tmp_path / "two/runs" / arch / "samples/default/chunk-00000.npz").read_bytes()
        assert a == b


def test_rerun_with_other_settings_is_refused_before_writing(tmp_path):
    from mosaicdiff.errors import UserError
    from mosaicdiff.runs import RunDir

    base = rp.preset_config("quick")
    earlier = override(rp.model_configs(base, ("cnn",))["cnn"], ["train.epochs=7"])
    RunDir(tmp_path / "runs/cnn").write_config(earlier)
    with pytest.raises(UserError, match=r"other settings \(train.epochs: 7 -> "):
        rp.reproduce(base, tmp_path, ("cnn",), "quick", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no plan.json, no baseline


def test_the_random_baseline_of_one_run_has_its_samples_interval_and_older_ones_are_redone(
    tmp_path,
):
    # Probe 52: --runs 1 died writing report.md (the baseline's interval was None for one run),
    # and a baseline.json stored with the older normal interval was reused beside t intervals.
    from mosaicdiff.experiments.report_text import baseline_note
    from mosaicdiff.metrics.stats import wilson_interval

    one = override(rp.preset_config("quick"), ["sample.n_runs=1", "sample.n_per_run=100"])
    baseline = rp.baseline_stage(one, tmp_path)
    mc = baseline["monte_carlo"]
    assert mc["ci95"] == pytest.approx(list(wilson_interval(round(100 * mc["mean"]), 100)))
    assert "(1 run of 100 images) gives" in baseline_note(baseline)
    two = override(one, ["sample.n_runs=2"])
    stored = rp.baseline_stage(two, tmp_path)
    assert "95% CI" in baseline_note(stored)
    older = json.loads((tmp_path / "baseline.json").read_text())
    del older["monte_carlo"]["ci_method"]
    older["monte_carlo"]["ci95"] = [0.0, 0.0777]  # a marker
    (tmp_path / "baseline.json").write_text(json.dumps(older))
    assert rp.baseline_stage(two, tmp_path)["monte_carlo"] == stored["monte_carlo"]
