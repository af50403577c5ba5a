import csv
import json
import shutil

import numpy as np
import pytest
import torch

from mosaicdiff.cli import main
from mosaicdiff.errors import UserError
from mosaicdiff.evaluate import evaluate_consistency
from mosaicdiff.io import load_npz
from mosaicdiff.runs import RunDir, load_run
from mosaicdiff.training import train

SAMPLING = ["--runs", "2", "--per-run", "8", "--no-progress"]


def test_keep_every_spares_its_multiples_beside_the_last_two(tmp_path, tiny):
    train(tiny(epochs=5, checkpoint_every=1, keep_every=2), tmp_path / "kept", progress=False)
    assert RunDir(tmp_path / "kept").checkpoint_epochs() == [2, 4, 5]
    train(tiny(epochs=5, checkpoint_every=1), tmp_path / "plain", progress=False)
    assert RunDir(tmp_path / "plain").checkpoint_epochs() == [4, 5]
    # A multiple of keep_every is saved even off the checkpoint_every grid.
    train(tiny(epochs=5, checkpoint_every=100, keep_every=3), tmp_path / "off", progress=False)
    assert RunDir(tmp_path / "off").checkpoint_epochs() == [3, 5]


def test_a_keep_every_beyond_the_epochs_is_said_by_train_and_history(tmp_path, capsys):
    # Probe 63: keep_every=50 on a 20-epoch run kept the last two without a word
    from mosaicdiff.runs import only_last_two

    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "2", "--set", "data.n_images=64"]
    assert main([*args, "--set", "train.keep_every=5", "--no-progress"]) == 0
    assert "train.keep_every=5 is beyond the run's 2 epochs" in capsys.readouterr().out
    note = only_last_two(run, RunDir(run).checkpoint_epochs(), 5)
    assert "has kept no checkpoint by train.keep_every=5" in note and "checkpoints (2)" in note
    assert only_last_two(run, [4, 5, 6], 5) is None and only_last_two(run, [5, 6], 0)


def test_load_run_takes_a_kept_epoch_and_refuses_one_not_kept(tmp_path, tiny):
    train(tiny(epochs=4, keep_every=2), tmp_path, progress=False)
    early, late = load_run(tmp_path, epoch=2), load_run(tmp_path)
    assert (early.epoch, late.epoch) == (2, 4)
    differ = [
        not torch.equal(a, b)
        for a, b in zip(early.model.parameters(), late.model.parameters(), strict=True)
    ]
    assert any(differ)
    with pytest.raises(UserError, match="no checkpoint of epoch 3; it keeps epochs 2, 4"):
        load_run(tmp_path, epoch=3)
    with pytest.raises(UserError, match="weights='best' must be 'ema' or 'raw'"):
        load_run(tmp_path, weights="best")
    for epoch in ("2", 2.0, True):
        with pytest.raises(UserError, match=f"epoch={epoch!r} must be a whole number"):
            load_run(tmp_path, epoch=epoch)


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """attn, two seeds, 4 epochs keeping epochs 2 and 4; its own sampling draws 2 x 16."""
    path = tmp_path_factory.mktemp("history") / "run"
    args = ["train", "--out", str(path), "--model", "attn", "--epochs", "4", "--seeds", "2"]
    args += ["--set", "train.keep_every=2", "--set", "data.n_images=256", "--runs", "2"]
    args += ["--per-run", "16", "--set", "train.ema_decay=0.9", "--no-progress"]
    assert main(args) == 0
    return path


def test_history_samples_each_kept_checkpoint_as_sample_would(kept_run, tmp_path, capsys):
    out = tmp_path / "hist"
    assert main(["history", str(kept_run), "--out", str(out), *SAMPLING]) == 0
    assert "epoch 2:" in capsys.readouterr().out
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["seed"])) for r in rows] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    losses = {r["epoch"]: r["loss"] for r in RunDir(kept_run).read_metrics()}
    assert [float(r["loss"]) for r in rows] == [*losses[2], *losses[4]]
    for name in ("history.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    # The newest checkpoint's samples are those `sample` draws with the same settings.
    assert main(["sample", str(kept_run), "--name", "now", *SAMPLING]) == 0
    samples = kept_run / "samples"
    now = load_npz(samples / "now" / "chunk-00000.npz")["samples"]
    np.testing.assert_array_equal(
        load_npz(samples / "epoch-000004" / "chunk-00000.npz")["samples"], now
    )
    early = load_npz(samples / "epoch-000002" / "chunk-00000.npz")["samples"]
    assert not np.array_equal(early, now)  # the earlier checkpoint's weights, same noise
    # Each row holds what evaluate measures of that epoch's folder.
    spec = load_run(kept_run).dataset.info["spec"]
    res = evaluate_consistency(samples / "epoch-000002", spec, [0, 1])
    assert [float(r["consistency"]) for r in rows[:2]] == [p["mean"] for p in res["per_seed"]]
    # Run again: every folder is resumed, not redrawn.
    stamps = {p: p.stat().st_mtime_ns for p in samples.glob("epoch-*/chunk-*.npz")}
    assert main(["history", str(kept_run), "--out", str(out), *SAMPLING]) == 0
    assert {p: p.stat().st_mtime_ns for p in samples.glob("epoch-*/chunk-*.npz")} == stamps


def test_history_keeps_raw_weights_apart_from_the_ema(kept_run, tmp_path, capsys):
    assert main(["history", str(kept_run), *SAMPLING, "--out", str(tmp_path / "ema")]) == 0
    raw = [*SAMPLING, "--out", str(tmp_path / "raw"), "--name", "raw", "--weights", "raw"]
    assert main(["history", str(kept_run), *raw]) == 0
    ema = load_npz(kept_run / "samples" / "epoch-000004" / "chunk-00000.npz")["samples"]
    got = load_npz(kept_run / "samples" / "raw-000004" / "chunk-00000.npz")["samples"]
    assert not np.array_equal(got, ema)
    capsys.readouterr()
    mixed = [*SAMPLING, "--out", str(tmp_path / "x"), "--weights", "raw", "--name", "epoch"]
    assert main(["history", str(kept_run), *mixed]) == 2
    err = capsys.readouterr().err
    assert 'holds samples drawn with other settings (weights: "ema" -> "raw")' in err
    assert not (tmp_path / "x").exists()


def test_history_refuses_bad_requests_in_one_line(kept_run, tmp_path, capsys):
    out = tmp_path / "never"
    for args, needle in [
        (["--set", "train.epochs=9"], "history changes only sample.* and device"),
        (["--metric", "creativity", "--patch", "5"], "--patch=5 must be between 1 and 4"),
        (["--patch", "2"], "--patch 2 applies to --metric creativity"),
        (["--name", "a/b"], "--name 'a/b' must be a plain folder name"),
        (["--name", ".."], "--name '..' must be a plain folder name"),
        (["--out", "/dev/null"], "'/dev/null' is not a folder"),
        (["--runs", "0"], "sample.n_runs=0 must be at least 1"),
    ]:
        assert main(["history", str(kept_run), "--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()
    (tmp_path / "bare").mkdir()
    bare = RunDir(tmp_path / "bare")
    bare.write_config(load_run(kept_run).cfg)
    assert main(["history", str(bare.path)]) == 2
    assert "has no checkpoint yet; train it first" in capsys.readouterr().err
    bare.checkpoint_dir.mkdir()
    (bare.checkpoint_dir / "epoch-000002.safetensors").write_bytes(b"")  # its .json lost
    assert main(["history", str(bare.path)]) == 2
    assert "has 1 checkpoint(s) without the .json beside each" in capsys.readouterr().err


def test_history_dry_run_caps_the_papers_million_and_writes_nothing(kept_run, tmp_path, capsys):
    stored = load_run(kept_run).cfg
    assert stored.sample.n_runs * stored.sample.n_per_run == 32  # the tiny run's own: kept
    out = tmp_path / "dry"
    assert main(["history", str(kept_run), "--out", str(out), "--name", "dry", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["epochs"] == [2, 4] and plan["metric"] == "consistency"
    assert (plan["sample"]["n_runs"], plan["sample"]["n_per_run"]) == (2, 16)
    from mosaicdiff.config import RunConfig
    from mosaicdiff.experiments.history import history_sample

    capped = history_sample(RunConfig().sample)
    assert (capped.n_runs, capped.n_per_run) == (10, 100)
    assert not out.exists()


def test_history_of_natural_data_measures_creativity(tmp_path, capsys):
    run = tmp_path / "digits"
    args = ["--set", "data.kind=digits", "--set", "model.hidden=4", "--no-progress"]
    keep = ["--set", "train.keep_every=1", "--epochs", "2"]
    assert main(["train", "--out", str(run), "--model", "resnet", *keep, *args]) == 0
    small = ["--runs", "1", "--per-run", "6", "--steps", "2", "--no-progress"]
    assert main(["history", str(run), *small]) == 0
    assert "novelty" in capsys.readouterr().out
    with (run / "history" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    res = json.loads((run / "samples" / "epoch-000001" / "results-creativity.json").read_text())
    for key in ("novelty", "mosaic_ratio"):  # mosaic_ratio: the mean, beside the rate
        assert float(rows[0][key]) == pytest.approx(res["per_seed"][0][key])
    assert int(rows[0]["n_samples"]) == 6
    assert main(["history", str(run), "--metric", "consistency"]) == 2
    assert "needs data.kind=pairings, not digits" in capsys.readouterr().err


def test_history_leaves_out_a_checkpoint_a_training_run_rotated_out(
    kept_run, tmp_path, monkeypatch, capsys
):
    import shutil

    from mosaicdiff.experiments import history

    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    shutil.rmtree(run / "samples", ignore_errors=True)  # not drawn yet: nothing to measure
    measure = history.measure_epoch

    def training_meanwhile(args, cfg, epoch, *rest):
        for path in RunDir(run).checkpoint_dir.glob("epoch-000004.*"):
            path.unlink()  # as a run still training deletes an old checkpoint
        return measure(args, cfg, epoch, *rest)

    monkeypatch.setattr(history, "measure_epoch", training_meanwhile)
    assert main(["history", str(run), *SAMPLING]) == 0
    assert "epoch 4: left out (" in capsys.readouterr().out
    with (run / "history" / "history.csv").open() as f:
        assert {int(r["epoch"]) for r in csv.DictReader(f)} == {2}


def test_an_epoch_measured_before_its_checkpoint_rotated_out_stays_in_history(
    kept_run, tmp_path, capsys
):
    # Probe 63: its samples and results were there, but history.csv lost the epoch
    import shutil

    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    assert main(["history", str(run), *SAMPLING]) == 0
    before = (run / "history" / "history.csv").read_text()
    for path in RunDir(run).checkpoint_dir.glob("epoch-000002.*"):
        path.unlink()  # as a run still training deletes an old checkpoint
    capsys.readouterr()
    assert main(["history", str(run), *SAMPLING]) == 0
    assert "epoch 2: its checkpoint is gone; measured from its samples" in capsys.readouterr().out
    assert (run / "history" / "history.csv").read_text() == before
    # drawn with other settings, it is not this history's: left out, not refused
    assert main(["history", str(run), "--runs", "1", "--per-run", "4", "--no-progress"]) == 2
    capsys.readouterr()  # epoch 4's folder holds the other settings: refused, as before
    shutil.rmtree(run / "samples" / "epoch-000004")
    assert main(["history", str(run), "--runs", "1", "--per-run", "4", "--no-progress"]) == 0
    with (run / "history" / "history.csv").open() as f:
        assert {int(r["epoch"]) for r in csv.DictReader(f)} == {4}


def test_theory_compare_takes_a_kept_checkpoint(kept_run, tmp_path, capsys):
    compare = ["theory", "compare", str(kept_run), "--machine", "els", "--n", "4"]
    compare += ["--every", "500", "--member", "0", "--no-progress"]
    r2 = {}
    for epoch in (2, 4):
        out = tmp_path / f"cmp-{epoch}"
        assert main([*compare, "--epoch", str(epoch), "--out", str(out)]) == 0
        agreement = json.loads((out / "agreement.json").read_text())
        assert agreement["args"]["epoch"] == epoch
        r2[epoch] = agreement["members"][0]["r2"]["r2"]
    assert r2[2] != r2[4]  # another checkpoint's network against the same machine
    capsys.readouterr()
    assert main([*compare, "--epoch", "3", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no checkpoint of epoch 3; it keeps epochs 2, 4" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "never").exists()


def test_parse_epochs_reads_one_several_or_all():
    from mosaicdiff.theory.compare_epochs import parse_epochs

    assert parse_epochs(None) is None and parse_epochs("250") == 250
    assert parse_epochs("1000,250,250") == [250, 1000] and parse_epochs("250,") == [250]
    assert parse_epochs("all") == []
    for bad in ("x", "2.5", "-3", ",", "", "2,all", "\u00b2"):  # a superscript 2 is no epoch
        with pytest.raises(UserError, match="must be an epoch"):
            parse_epochs(bad)


def test_theory_compare_follows_every_kept_checkpoint(kept_run, tmp_path, monkeypatch, capsys):
    import mosaicdiff.sampling
    import mosaicdiff.theory.agreement

    compare = ["theory", "compare", str(kept_run), "--machine", "els", "--n", "4"]
    compare += ["--every", "500", "--no-progress"]
    out = tmp_path / "course"
    assert main([*compare, "--epoch", "all", "--out", str(out)]) == 0
    with (out / "agreement.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["member"])) for r in rows] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert (out / "agreement.png").read_bytes()[:4] == b"\x89PNG"
    # Each checkpoint's folder is what `--epoch E` alone writes, to the last digit.
    single = tmp_path / "single"
    assert main([*compare, "--epoch", "4", "--member", "1", "--out", str(single)]) == 0
    alone = json.loads((single / "agreement.json").read_text())["members"][0]
    within = json.loads((out / "epoch-000004" / "agreement.json").read_text())
    assert within["args"]["epoch"] == 4 and within["members"][1] == alone
    assert float(rows[3]["r2_median"]) == alone["r2"]["median"]
    # A rerun skips what is compared; the machine, drawn once, is not drawn again.
    drawn, draw = [], mosaicdiff.sampling.ddpm_sample

    def counted(denoiser, *args, **kwargs):
        drawn.append(type(denoiser).__name__)
        return draw(denoiser, *args, **kwargs)

    for module in (mosaicdiff.sampling, mosaicdiff.theory.agreement):
        monkeypatch.setattr(module, "ddpm_sample", counted)
    shutil.rmtree(out / "epoch-000004")
    capsys.readouterr()
    assert main([*compare, "--epoch", "2,4", "--out", str(out)]) == 0
    assert "epoch 2: compared before" in capsys.readouterr().out
    assert drawn and "ELS" not in drawn  # epoch 4's networks were drawn again, the machine not
    with (out / "agreement.csv").open() as f:
        assert list(csv.DictReader(f)) == rows
    assert main([*compare, "--epoch", "2,", "--out", str(out)]) == 0  # one of them again
    with (out / "agreement.csv").open() as f:
        assert list(csv.DictReader(f)) == rows  # still every epoch compared into the folder
    # The defaults spelled out are the same machine, so they resume; and so does a folder from
    # before compare.json spelled them out (None) and held the data's kind.
    spelled = [*compare, "--patch", "02", "--stride", "2", "--epoch", "all", "--out", str(out)]
    assert main(spelled) == 0
    claim = out / "compare.json"
    stored = json.loads(claim.read_text())
    assert (stored["patch"], stored["stride"], stored["kind"]) == ("2", 2, "pairings")
    del stored["kind"]
    claim.write_text(json.dumps({**stored, "patch": None, "stride": None}))
    assert main([*compare, "--epoch", "all", "--out", str(out)]) == 0
    with (out / "agreement.csv").open() as f:
        assert list(csv.DictReader(f)) == rows
    # Other options into the same folder, a checkpoint trained anew since it was compared, one
    # checkpoint's comparison among several, or an epoch not kept: refused before work.
    assert main([*compare, "--epoch", "all", "--seed", "1", "--out", str(out)]) == 2
    assert "other options or files (seed: 0 -> 1)" in capsys.readouterr().err
    done = out / "epoch-000004" / "agreement.json"
    done.write_text(done.read_text().replace(within["checkpoint_sha256"], "0" * 64))
    assert main([*compare, "--epoch", "all", "--out", str(out)]) == 2
    assert "is not the one" in capsys.readouterr().err
    assert main([*compare, "--epoch", "2", "--out", str(out)]) == 2
    assert "holds comparisons over training" in capsys.readouterr().err
    assert main([*compare, "--epoch", "all", "--out", str(single)]) == 2
    assert "holds the comparison of one checkpoint" in capsys.readouterr().err
    assert main([*compare, "--epoch", "2,3", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint of epoch 3; it keeps epochs 2, 4" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_samples_drawn_before_weights_were_recorded_still_resume(kept_run, capsys):
    args = ["sample", str(kept_run), "--name", "old", *SAMPLING]
    assert main(args) == 0
    folder = kept_run / "samples" / "old"
    meta = json.loads((folder / "sample.json").read_text())
    assert meta.pop("weights") == "ema"
    (folder / "sample.json").write_text(json.dumps(meta))
    stamp = (folder / "chunk-00000.npz").stat().st_mtime_ns
    assert main(args) == 0  # read as the EMA's, which they were
    assert (folder / "chunk-00000.npz").stat().st_mtime_ns == stamp


def test_raw_weights_default_to_folders_and_a_history_of_their_own(kept_run, capsys):
    assert main(["history", str(kept_run), *SAMPLING, "--weights", "raw"]) == 0
    assert (kept_run / "samples" / "raw-000004" / "chunk-00000.npz").is_file()
    with (kept_run / "history-raw" / "history.csv").open() as f:
        assert {r["weights"] for r in csv.DictReader(f)} == {"raw"}


def test_another_metric_than_the_datas_own_has_a_history_of_its_own(kept_run, capsys):
    # --metric creativity on the pairings rewrote RUN/history's consistency table.
    assert main(["history", str(kept_run), "--metric", "creativity", *SAMPLING]) == 0
    with (kept_run / "history-creativity" / "history.csv").open() as f:
        assert "novelty" in next(csv.DictReader(f))
    assert main(["history", str(kept_run), *SAMPLING]) == 0
    with (kept_run / "history" / "history.csv").open() as f:
        assert "consistency" in next(csv.DictReader(f)) and "novelty" not in f.read()


def test_a_damaged_checkpoint_is_left_out_and_the_rest_still_written(kept_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(kept_run, run, ignore=shutil.ignore_patterns("samples", "history*"))
    path = RunDir(run).checkpoint_path(2)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert main(["history", str(run), *SAMPLING]) == 0
    assert "epoch 2: left out (checkpoint" in capsys.readouterr().out
    with (run / "history" / "history.csv").open() as f:
        assert {int(r["epoch"]) for r in csv.DictReader(f)} == {4}
    path = RunDir(run).checkpoint_path(4)
    path.write_bytes(path.read_bytes()[:-1])
    shutil.rmtree(run / "history")
    shutil.rmtree(run / "samples")  # else epoch 4 is measured from the samples drawn of it
    assert main(["history", str(run), *SAMPLING]) == 2
    assert "none of the checkpoints of" in capsys.readouterr().err
    assert not (run / "history").exists()


def test_the_samples_figure_names_the_seed_it_shows(tmp_path, monkeypatch, capsys):
    from mosaicdiff import plots

    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "2", "--seeds", "3,1", "--no-progress"]
    args += ["--set", "train.keep_every=1", "--set", "data.n_images=64"]
    assert main(args) == 0
    titles, draw = [], plots.history_samples
    monkeypatch.setattr(plots, "history_samples", lambda s, t: titles.append(t) or draw(s, t))
    assert main(["history", str(run), *SAMPLING]) == 0
    assert titles == ["seed 3, the same noise at every epoch"]  # seeds (3, 1): the first is 3


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "mosaicdiff", "train", "--out", str(tmp_path / "x")]
    proc = subprocess.Popen([*command, "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head` does, before the config is printed
    err = proc.stderr.read()
    assert proc.wait() == 141 and err == b""


def test_history_of_2x2_pairings_needs_no_mosaic_patch(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "1", "--no-progress"]
    args += ["--set", "data.quadrants_per_side=1", "--set", "data.n_images=64"]
    assert main(args) == 0
    assert main(["history", str(run), *SAMPLING]) == 0  # consistency: no 3x3 patches
    assert main(["history", str(run), "--metric", "creativity", *SAMPLING]) == 2
    assert "--patch=3 must be between 1 and 2" in capsys.readouterr().err


def test_several_runs_are_compared_in_one_table_and_figure(kept_run, tmp_path, capsys):
    other = tmp_path / "cnn"
    args = ["train", "--out", str(other), "--epochs", "2", "--no-progress"]
    assert main([*args, "--set", "train.keep_every=1", "--set", "data.n_images=64"]) == 0
    both = tmp_path / "both"
    assert main(["history", str(kept_run), str(other), "--out", str(both), *SAMPLING]) == 0
    with (both / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    for run in (kept_run, other):  # each run's own history, and the same rows in the comparison
        with (run / "history" / "history.csv").open() as f:
            own = list(csv.DictReader(f))
        assert [
            {k: v for k, v in r.items() if k != "run"} for r in rows if r["run"] == str(run)
        ] == own
    assert (both / "history.png").stat().st_size > 0
    capsys.readouterr()
    digits = tmp_path / "digits"
    args = ["train", "--out", str(digits), "--model", "resnet", "--epochs", "1", "--no-progress"]
    assert main([*args, "--set", "data.kind=digits", "--set", "model.hidden=4"]) == 0
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in kept_run.glob("samples/epoch-*/chunk-*")}
    for runs, needle in [
        ([kept_run, other], "several runs: name --out"),
        ([kept_run, kept_run, "--out", tmp_path / "x"], "name one run twice"),
        ([kept_run, kept_run / ".", "--out", tmp_path / "x"], "name one run twice"),
        ([kept_run, other, "--out", other / "history"], "is where a run's own history goes"),
        ([kept_run, other, "--out", other], "is a run directory"),
        ([kept_run, other, "--out", other / "samples" / "h"], "into the samples of the trained"),
        ([kept_run, "--out", kept_run / "checkpoints" / "h"], "into the checkpoints of the"),
        ([kept_run, tmp_path / "nowhere", "--out", tmp_path / "x"], "nowhere: "),
        ([kept_run, other, "--out", tmp_path / "x", "--sample-seed", "5"], "other settings"),
        ([kept_run, other, "--out", tmp_path / "x", "--name", ""], "--name '' must be"),
        ([kept_run, digits, "--out", tmp_path / "x"], "measured by different metrics"),
    ]:
        assert main(["history", *map(str, runs), *SAMPLING]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (digits / "history").exists()
    assert {p: p.stat().st_mtime_ns for p in kept_run.glob("samples/epoch-*/chunk-*")} == stamps
    dry = ["history", str(kept_run), str(other), "--out", str(both), *SAMPLING, "--dry-run"]
    assert main(dry) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["out"] == str(both)
    assert [p["run"] for p in plan["runs"]] == [str(kept_run), str(other)]
