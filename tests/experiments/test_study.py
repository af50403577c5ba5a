"""End-to-end `study digits` with tiny settings: report files, table columns, reuse."""

import csv
import json
from dataclasses import replace

import pytest
import torch

from mosaicdiff.config_io import override
from mosaicdiff.errors import UserError
from mosaicdiff.experiments import study as st
from mosaicdiff.experiments.study_report import COLUMNS


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs and a busy machine: a second thread only contends
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_study():
    base, sc = st.preset_configs("quick")
    base = override(
        base,
        [
            "model.hidden=8",
            "train.epochs=1",
            "train.checkpoint_every=1",
            "train.seeds=[0,1]",
            "sample.steps=5",
        ],
    )
    sc = override(
        sc,
        [
            "n_samples=8",
            "agree_samples=4",
            "agree_steps=5",
            "calib_samples=2",
            "calib_every=500",
            "candidates=[3,5]",
            "sweep=[[1,1]]",
        ],
    )
    return base, sc


def test_study_end_to_end_then_reuses_everything(tmp_path, tiny_study):
    base, sc = tiny_study
    report = st.study(base, sc, tmp_path, progress=False)
    for name in ("report.md", "report.html", "table.csv", "table.json", "table.md"):
        assert (report / name).is_file(), name
    rows = json.loads((report / "table.json").read_text())["rows"]
    assert [r["arch"] for r in rows] == [*st.ARCHS, "rf-d1-k1"]
    assert [r["seeds"] for r in rows] == [2, 2, 2, 2, 1]
    assert rows[0]["novelty_sd"] is not None and rows[-1]["novelty_sd"] is None  # not 0.000
    assert "± 0.000" not in (report / "table.md").read_text().splitlines()[-1]
    assert [r["receptive_field"] for r in rows] == [9, None, None, None, 1]
    for r in rows:
        assert 0 <= r["memorization"] <= 1 and r["novelty"] > 0 and r["diversity"] > 0
        for label in ("IdealScore", "ELS", "AttentionELS"):
            r2 = r[f"r2_{label}"]
            assert r2 is None if r["arch"].startswith("rf-") else 0 <= r2 <= 1
    assert b"\r" not in (report / "table.csv").read_bytes()
    with open(report / "table.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        assert len(list(reader)) == len(rows)
    figures = {p.name for p in (report / "figures").glob("*.png")}
    assert {"r2.png", "calibration.png", "machines.png", "sweep.png"} <= figures
    assert {f"nearest-{a}.png" for a in st.ARCHS} <= figures
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    md = (report / "report.md").read_text()
    # the mosaic rule as measured, its cover bound too (probe 58)
    needles = ("AttentionELS", "memoriz", "novelty", "calibrated", "DDIM", "at most 0.1 (the")
    for needle in needles:
        assert needle.lower() in md.lower(), needle
    timings = json.loads((report / "timings.json").read_text())["timings"]
    assert list(timings) == [*st.ARCHS, "rf-d1-k1", "theory", "total"]
    assert list(timings[st.ARCHS[0]]) == ["train", "sample + creativity"]
    theory_row = (
        f"| theory | patch calibration, machine samples and agreement | {timings['theory']:.0f} |"
    )
    assert theory_row in md
    calibration = json.loads((tmp_path / "theory" / "calibration.json").read_text())
    assert len(calibration["patch_size"]) == base.diffusion.T
    assert set(calibration["patch_size"]) <= {3, 5}
    # A second call reuses every stage: no checkpoint, sample or theory file is rewritten.
    stamps = {
        p: p.stat().st_mtime_ns
        for pattern in ("runs/**/*", "theory/*")
        for p in tmp_path.glob(pattern)
        if p.is_file()
    }
    st.study(base, sc, tmp_path, progress=False)
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # Measured by the mosaic rule before its cover bound: measured again, the samples kept.
    cache = tmp_path / "runs" / st.ARCHS[0] / "samples" / "study" / "creativity.json"
    older = json.loads(cache.read_text())
    del older["key"]["mosaic_atol"]
    cache.write_text(json.dumps(older))
    st.study(base, sc, tmp_path, progress=False)
    assert json.loads(cache.read_text())["key"]["mosaic_atol"] == 0.1
    chunks = [p for p in stamps if p.name.startswith("chunk-")]
    assert chunks and all(p.stat().st_mtime_ns == stamps[p] for p in chunks)
    # Another n_samples or mosaic patch keeps the machines' costly stage (probe 55)
    theory = (tmp_path / "theory" / "theory.json").stat().st_mtime_ns
    st.study(base, replace(sc, n_samples=4, mosaic_patch=5), tmp_path, progress=False)
    assert (tmp_path / "theory" / "theory.json").stat().st_mtime_ns == theory
    # Other settings over finished runs: refused before plan.json is rewritten (probe 55)
    plan = (tmp_path / "plan.json").read_text()
    with pytest.raises(UserError, match=r"runs/resnet holds a run with other settings \(train"):
        st.study(override(base, ["train.epochs=2"]), sc, tmp_path, progress=False)
    assert (tmp_path / "plan.json").read_text() == plan


def test_the_table_names_the_seeds_a_mosaic_ratio_averages():
    from mosaicdiff.config import RunConfig
    from mosaicdiff.experiments.study_report import markdown_table, table_rows

    seed = dict.fromkeys(("memorization_rate", "copy_rate", "novelty", "diversity"), 0.5)
    per_seed = [seed | {"mosaic_ratio": 0.2, "mosaic_rate": 0.1}]
    all_copies = seed | {"mosaic_ratio": None, "mosaic_rate": 0.0}  # no sample to measure
    (row,) = table_rows({"cnn": RunConfig()}, {"cnn": [*per_seed, all_copies]}, {"agreement": {}})
    assert (row["seeds"], row["mosaic_ratio"], row["mosaic_ratio_seeds"]) == (2, 0.2, 1)
    assert "| 0.200 (1 of 2 seeds) |" in markdown_table([row])
    (row,) = table_rows({"cnn": RunConfig()}, {"cnn": per_seed * 2}, {"agreement": {}})
    assert "| 0.200 |" in markdown_table([row])


def test_cli_dry_run_and_study_overrides(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    st.register(parser.add_subparsers())
    args = parser.parse_args(
        ["study", "digits", "--seeds", "3", "--set", "study.n_samples=5", "--dry-run"]
    )
    assert args.handler(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["study"]["n_samples"] == 5
    assert plan["resnet"]["train"]["seeds"] == [0, 1, 2]
    assert plan["rf-d1-k1"]["train"]["seeds"] == [0]
    assert plan["dit"]["data"]["kind"] == "digits"


def test_bad_study_settings_name_their_value(capsys):
    from mosaicdiff.cli import main

    for assignment, needle in [
        ("study.archs=unet,resnet", "study.archs=['unet', 'resnet'] must start with resnet"),
        ("data.kind=pairings", "data.kind=digits, not pairings"),
        ("study.calib_every=0", "study.calib_every=0 must be >= 1"),
    ]:
        assert main(["study", "digits", "--set", assignment, "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def rejected(capsys, tmp_path, *argv: str) -> str:
    """Run `study digits ARGV` into tmp_path/out; assert exit 2 with a one-line error and no
    output folder; return the error."""
    from mosaicdiff.cli import main

    out = tmp_path / "out"
    assert main(["study", "digits", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists(), err
    return err


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("study.candidates=[]", "study.candidates=[] must name at least one patch size"),
        ("study.candidates=[3,9]", "study.candidates=[3, 9]: patch size 9 must be between 1 and 8"),
        ("study.candidates=[3,2]", "study.candidates=[3, 2]: patch size 2 must be odd"),
        ("study.mosaic_patch=0", "study.mosaic_patch=0 must be between 1 and 8"),
        ("study.mosaic_patch=99", "study.mosaic_patch=99 must be between 1 and 8"),
        ("study.sweep=[[1,2]]", "study.sweep: (1, 2) needs depth >= 1 and an odd kernel"),
        ("study.sweep=[[1,3],[5]]", "study.sweep[1]=[5] must have 2 items"),
        ("study.sweep=[[1,x]]", "study.sweep='[[1,x]]' is not a JSON list (Expecting value"),
        ('study.archs=["resnet","resnet"]', "['resnet', 'resnet'] names an architecture twice"),
    ],
)
def test_bad_patch_sizes_and_lists_are_rejected_by_dry_run(capsys, tmp_path, assignment, needle):
    assert needle in rejected(capsys, tmp_path, "--set", assignment, "--dry-run")


def test_a_subset_past_the_digits_is_refused_before_anything_is_written(capsys, tmp_path):
    # Probe 55: --dry-run passed it, and the real run wrote plan.json and a run's config first.
    argv = ["--set", "data.subset=5000", "--set", "study.archs=[resnet]", "--set", "study.sweep=[]"]
    for dry in (["--dry-run"], []):
        assert "data.subset=5000 asks for more than" in rejected(capsys, tmp_path, *argv, *dry)


def test_bad_candidate_stops_a_real_run_before_training(capsys, tmp_path):
    tiny = ["model.hidden=8", "train.epochs=1", "study.archs=[resnet]", "study.sweep=[]"]
    tiny += ["study.n_samples=4", "study.calib_samples=1", "study.candidates=[0]"]
    argv = ["--seeds", "1", "--no-progress", *(a for s in tiny for a in ("--set", s))]
    assert "study.candidates=[0]: patch size 0" in rejected(capsys, tmp_path, *argv)


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["study.agree_steps=5000"], "study.agree_steps=5000 must be at most diffusion.T=1000"),
        (["study.calib_every=1001"], "study.calib_every=1001 must be at most diffusion.T=1000"),
        (
            ["diffusion.T=10", "sample.steps=5", "study.agree_steps=11"],
            "study.agree_steps=11 must be at most diffusion.T=10",
        ),
    ],
)
def test_study_steps_beyond_T_are_rejected(capsys, tmp_path, sets, needle):
    argv = [a for s in sets for a in ("--set", s)]
    assert needle in rejected(capsys, tmp_path, *argv, "--dry-run")


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("study.n_samples", "override 'study.n_samples' must look like section.field=value"),
        ("study.n_samples=x", "study.n_samples='x' must be a whole number"),
        ("study.nsamples=5", "unknown config key 'study.nsamples'"),
    ],
)
def test_bad_study_overrides_keep_their_study_prefix(capsys, tmp_path, assignment, needle):
    assert needle in rejected(capsys, tmp_path, "--set", assignment, "--dry-run")


@pytest.mark.parametrize("assignment", ["model.arch=dit", "model.depth=3", "model.arch=cnn"])
def test_model_fields_the_study_sets_itself_are_rejected(capsys, tmp_path, assignment):
    err = rejected(capsys, tmp_path, "--set", assignment, "--dry-run")
    assert f"{assignment}: study digits sets each run's" in err and "study.archs" in err


@pytest.mark.parametrize("assignment", ["sample.n_per_run=5", "sample.n_runs=3"])
def test_sample_sizes_the_study_sets_itself_are_rejected(capsys, tmp_path, assignment):
    # --dry-run showed them in every run's config, and the study drew n_samples regardless.
    err = rejected(capsys, tmp_path, "--set", assignment, "--dry-run")
    assert f"{assignment}: study digits draws study.n_samples" in err


@pytest.mark.parametrize("assignment", ["model.nonlinearity=relu", "model.gumbel_tau=2"])
def test_model_fields_no_study_architecture_reads_are_rejected(capsys, tmp_path, assignment):
    err = rejected(capsys, tmp_path, "--set", assignment, "--dry-run")
    assert f"{assignment} is read by none of the study's architectures" in err
