"""`mosaicdiff theory knob`: AttentionELS sampled at several lam, a `theory sample` folder each."""

import csv
import json

import numpy as np
import pytest

from mosaicdiff.cli import main

TINY = ["--n", "24", "--sampler", "ddim", "--steps", "4"]


def test_knob_writes_one_row_per_lam_from_its_sample_folders(tmp_path, capsys):
    out = tmp_path / "knob"
    assert main(["theory", "knob", *TINY, "--lams", "0,1", "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader((out / "knob.csv").open()))
    assert [float(r["lam"]) for r in rows] == [0.0, 1.0]
    for row, folder in zip(rows, ["lam=0", "lam=1"], strict=True):
        report = json.loads((out / folder / "consistency.json").read_text())
        assert float(row["consistency"]) == report["rate"] and int(row["n"]) == 24
        assert float(row["identical_quadrants"]) == report["identical_quadrants"]
        assert [float(row["ci95_low"]), float(row["ci95_high"])] == report["ci95"]
    assert (out / "knob.png").stat().st_size > 0
    # lam=0 is ELS: its samples are ELS's from the same seed and sampler.
    els = tmp_path / "els"
    assert main(["theory", "sample", *TINY, "--out", str(els), "--no-progress"]) == 0
    x_attn = np.load(out / "lam=0" / "samples.npz")["samples"]
    np.testing.assert_allclose(x_attn, np.load(els / "samples.npz")["samples"], atol=1e-5)
    # Each folder is the `theory sample` of its lam: that command resumes it, drawing nothing.
    chunk = out / "lam=1" / "chunk-00000.npz"
    before = chunk.stat().st_mtime_ns
    again = ["theory", "sample", "--machine", "attn", "--lam", "1", *TINY, "--no-progress"]
    assert main([*again, "--out", str(out / "lam=1")]) == 0
    assert chunk.stat().st_mtime_ns == before
    # A longer list reuses the finished weights.
    capsys.readouterr()
    assert main(["theory", "knob", *TINY, "--lams", "0,1,0.5", "--out", str(out)]) == 0
    assert len(list(csv.DictReader((out / "knob.csv").open()))) == 3
    assert chunk.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["--lams", "0,2"], "2.0 must be in [0, 1]"),
        (["--lams", "0,x"], "--lams '0,x' must be numbers"),
        (["--lams", "0.5,0.5"], "repeats a weight"),
        (["--lams", "0.123456789,0.1234567891"], "would share a folder"),
        (["--machine", "els"], "lam weighs only the attn machine"),
        (["--data", "digits"], "consistency needs --data pairings"),
        # probe 63: one cell, nothing to attend to: lam 0 and 1 drew the same samples
        (["--patch", "4", "--stride", "4"], "one cell covers the whole 4x4 image"),
        (["--lam", "0.3"], "takes its weights from --lams"),
    ],
)
def test_bad_knob_values_exit_with_code_2_and_write_nothing(bad, needle, tmp_path, capsys):
    out = tmp_path / "knob"
    assert main(["theory", "knob", *TINY, *bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_knob_help_lists_only_the_options_it_takes(capsys):
    assert main(["theory", "knob", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lams" in text and "--machine" not in text and "--lam " not in text
