"""`mosaicdiff theory sample | calibrate | compare` through the main CLI (exit codes included)."""

import json

import numpy as np
import pytest
import torch

from mosaicdiff.cli import main


def test_sample_writes_samples_and_consistency(tmp_path):
    out = tmp_path / "els"
    args = ["theory", "sample", "--n", "12", "--sampler", "ddim", "--steps", "5", "--out", str(out)]
    assert main(args) == 0
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.shape == (12, 3, 4, 4)
    report = json.loads((out / "consistency.json").read_text())
    assert report["n"] == 12 and 0 <= report["rate"] <= 1
    assert report["ci95"][0] <= report["rate"] <= report["ci95"][1]


def test_sample_that_would_not_fit_on_the_disk_is_refused_before_drawing(
    tmp_path, capsys, monkeypatch
):
    import shutil

    out = tmp_path / "els"
    args = ["theory", "sample", "--n", "10", "--sampler", "ddim", "--steps", "2", "--out", str(out)]
    usage = shutil.disk_usage(tmp_path)
    room = 2 * 10 * 48 * 4  # float32 chunks of 10 samples of 3x4x4, and samples.npz
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=room - 1))
    assert main([*args, "--no-progress"]) == 2
    assert "draw fewer (--n)" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=room))
    assert main([*args, "--no-progress"]) == 0


def test_sample_digits_with_an_attention_machine(tmp_path):
    args = [
        "theory",
        "sample",
        "--data",
        "digits",
        "--machine",
        "attn",
        "--lam",
        "0.3",
        "--patch",
        "1",
    ]
    args += ["--n", "2", "--sampler", "ddim", "--steps", "2", "--precision", "float32"]
    args += ["--out", str(tmp_path)]
    assert main(args) == 0
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (2, 1, 8, 8)
    assert not (tmp_path / "consistency.json").exists()


def test_a_machine_on_a_subset_knows_only_those_images(tmp_path, capsys):
    from mosaicdiff.config import DataConfig
    from mosaicdiff.data import load_dataset

    args = ["theory", "sample", "--data", "digits", "--subset", "4", "--machine", "ideal"]
    args += ["--n", "3", "--sampler", "ddim", "--steps", "20", "--out", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 0
    samples = torch.from_numpy(np.load(tmp_path / "samples.npz")["samples"]).flatten(1)
    digits = load_dataset(DataConfig(kind="digits")).images.flatten(1)
    nearest = torch.cdist(samples, digits).argmin(1)
    assert bool((nearest < 4).all())  # the ideal score copies one of the first four digits
    meta = json.loads((tmp_path / "sample.json").read_text())["theory"]
    assert meta["subset"] == 4
    i = args.index("--subset")
    assert main([*args[:i], *args[i + 2 :]]) == 2  # all the digits, into the same folder
    assert "subset: 4 -> 0)" in capsys.readouterr().err


def test_a_machine_on_other_data_samples_as_a_network_run_does(tmp_path, capsys):
    # Probe 58: DDPM unclipped by default, where a network's run draws by DDIM with x0 clipped;
    # an x0 outside the data's range (a Gaussian's) then changed the mosaic rate tenfold.
    from pathlib import Path

    gaussian = Path(__file__).resolve().parents[2] / "examples" / "own_machine.py:Gaussian"
    common = ["theory", "sample", "--data", "digits", "--subset", "20", "--n", "8"]
    args = [*common, "--machine", str(gaussian), "--steps", "10", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "clipped")]) == 0
    meta = json.loads((tmp_path / "clipped" / "sample.json").read_text())["theory"]
    assert (meta["sampler"], meta["steps"], meta["clip_x0"]) == ("ddim", 10, True)
    clipped = np.load(tmp_path / "clipped" / "samples.npz")["samples"]
    assert main([*args, "--no-clip-x0", "--out", str(tmp_path / "free")]) == 0
    free = np.load(tmp_path / "free" / "samples.npz")["samples"]
    assert np.abs(clipped).max() <= 1 < np.abs(free).max()
    # A folder drawn before --clip-x0 (unclipped, by the sampler it names) resumes as drawn.
    for sampler in ("ddpm", "ddim"):
        old = tmp_path / f"old-{sampler}"
        before = ["--sampler", sampler, "--no-clip-x0", "--out", str(old)]
        assert main([*common, "--machine", "ideal", "--no-progress", *before]) == 0
        record = json.loads((old / "sample.json").read_text())
        del record["theory"]["clip_x0"]
        (old / "sample.json").write_text(json.dumps(record))
        capsys.readouterr()
        assert main([*common, "--machine", "ideal", "--no-progress", "--out", str(old)]) == 0
        assert main([*common, "--machine", "ideal", "--clip-x0", "--out", str(old)]) == 2
        assert "clip_x0: false -> true" in capsys.readouterr().err


def test_sample_on_user_arrays_scores_creativity_like_evaluate(tmp_path, monkeypatch):
    import torch

    from mosaicdiff.config import DataConfig
    from mosaicdiff.data import load_dataset
    from mosaicdiff.metrics.creativity import evaluate_creativity

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images)
    out = tmp_path / "els"
    monkeypatch.chdir(tmp_path)  # a relative --data-path is stored absolute
    args = ["theory", "sample", "--data", "npz", "--data-path", "tiny.npz"]
    args += ["--n", "6", "--batch", "4", "--limit", "5", "--sampler", "ddim", "--steps", "4"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    settings = json.loads((out / "sample.json").read_text())["theory"]
    assert settings["data_path"] == str(tmp_path / "tiny.npz")
    samples = torch.from_numpy(np.load(out / "samples.npz")["samples"])
    assert samples.shape == (6, 1, 6, 6)
    for name in ("samples.png", "nearest.png"):
        assert (out / name).stat().st_size > 0
    stored = json.loads((out / "results-creativity.json").read_text())["per_seed"][0]
    train_images = load_dataset(DataConfig(kind="npz", path=str(tmp_path / "tiny.npz"))).images
    assert train_images.shape == (20, 1, 6, 6)
    expected = evaluate_creativity(samples[:5], train_images, patch=3)
    assert stored == {"seed": 0, **expected} and stored["n_samples"] == 5


@pytest.mark.parametrize("entry", ["a", None, [3], 3.9])
def test_a_bad_patch_schedule_file_is_one_line(entry, tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"patch_size": [entry] * 1000}))
    args = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2", "--patch"]
    assert main([*args, str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"p.json': patch-size table entry {entry!r} is not an int")
    assert "\n" not in err and not (tmp_path / "x").exists()


def test_sample_noise_is_each_samples_own_and_older_folders_keep_theirs(tmp_path, capsys):
    base = ["theory", "sample", "--n", "6", "--sampler", "ddpm", "--no-progress"]

    def drawn(name: str, *more: str) -> np.ndarray:
        assert main([*base, *more, "--out", str(tmp_path / name)]) == 0
        return np.load(tmp_path / name / "samples.npz")["samples"]

    whole = drawn("a", "--batch", "6")
    assert np.allclose(drawn("b", "--batch", "4"), whole, atol=1e-5)  # indexed: any batches
    assert not np.allclose(drawn("c", "--batch", "4", "--seed", "1"), whole, atol=1e-2)
    by_batch = drawn("d", "--batch", "6", "--noise", "threefry")
    assert not np.allclose(by_batch, whole, atol=1e-2)
    assert not np.allclose(drawn("e", "--batch", "4", "--noise", "threefry"), by_batch, atol=1e-2)
    # A folder drawn before --noise existed (no "noise" stored) resumes as it drew: by batch.
    meta = json.loads((tmp_path / "d" / "sample.json").read_text())
    del meta["theory"]["noise"]
    (tmp_path / "d" / "sample.json").write_text(json.dumps(meta))
    (tmp_path / "d" / "chunk-00000.npz").unlink()
    assert np.array_equal(drawn("d", "--batch", "6"), by_batch)
    capsys.readouterr()
    assert main([*base, "--batch", "6", "--noise", "indexed", "--out", str(tmp_path / "d")]) == 2
    assert 'noise: "threefry" -> "indexed"' in capsys.readouterr().err
    assert main([*base, "--noise", "torch", "--out", str(tmp_path / "f")]) == 2
    assert "--noise" in capsys.readouterr().err and not (tmp_path / "f").exists()


def test_sample_resumes_its_batches_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "els"
    args = ["theory", "sample", "--n", "6", "--batch", "2", "--sampler", "ddim", "--steps", "3"]
    args += ["--out", str(out), "--no-progress"]
    assert main(args) == 0
    whole = np.load(out / "samples.npz")["samples"]
    assert len(list(out.glob("chunk-*.npz"))) == 3
    # as if stopped in the second batch: only that batch is drawn again, to the same samples
    (out / "chunk-00001.npz").unlink()
    (out / "samples.npz").unlink()
    first = (out / "chunk-00000.npz").stat().st_mtime_ns
    assert main(args) == 0
    assert np.array_equal(np.load(out / "samples.npz")["samples"], whole)
    assert (out / "chunk-00000.npz").stat().st_mtime_ns == first
    capsys.readouterr()
    other = [a if a != "3" else "4" for a in args]
    assert main(other) == 2
    err = capsys.readouterr().err.strip()
    assert "steps: 3 -> 4" in err and "\n" not in err
    assert np.array_equal(np.load(out / "samples.npz")["samples"], whole)
    # The pairings' default machine spelled out (--patch 2 --stride 2) is the same: resumed.
    (out / "chunk-00002.npz").unlink()
    assert main([*args, "--patch", "2", "--stride", "2"]) == 0
    assert np.array_equal(np.load(out / "samples.npz")["samples"], whole)
    assert main([*args, "--patch", "3"]) == 2
    assert 'patch: "2" -> "3"' in capsys.readouterr().err
    # Folders sampled when argparse spelled out --boundary, --lam and --attention for every
    # machine stored them so; they resume without them, and with the one ELS reads.
    meta = json.loads((out / "sample.json").read_text())
    assert meta["theory"]["boundary"] == "circular" and meta["theory"]["lam"] is None
    meta["theory"] |= {"lam": 0.5, "attention": "soft"}
    (out / "sample.json").write_text(json.dumps(meta))
    (out / "chunk-00002.npz").unlink()
    assert main(args) == 0 and main([*args, "--boundary", "circular"]) == 0
    assert np.array_equal(np.load(out / "samples.npz")["samples"], whole)
    assert main([*args, "--boundary", "zeros"]) == 2
    assert 'boundary: "circular" -> "zeros"' in capsys.readouterr().err
    # bbels pads with zeros: its folders resume with --boundary zeros or without, also those
    # that stored the circular that argparse once spelled out for every machine
    bb = [*args[:-3], "--machine", "bbels", "--out", str(tmp_path / "bb"), "--no-progress"]
    assert main(bb) == 0
    meta = json.loads((tmp_path / "bb" / "sample.json").read_text())
    assert meta["theory"]["boundary"] == "zeros"
    meta["theory"]["boundary"] = "circular"
    (tmp_path / "bb" / "sample.json").write_text(json.dumps(meta))
    (tmp_path / "bb" / "chunk-00002.npz").unlink()
    assert main(bb) == 0 and main([*bb, "--boundary", "zeros"]) == 0
    table = tmp_path / "table.json"  # a patch schedule file: its contents count, not its name
    table.write_text(json.dumps({"patch_size": 1}))
    scheduled = [*args[:-3], "--patch", str(table), "--out", str(tmp_path / "s"), "--no-progress"]
    assert main(scheduled) == 0
    table.write_text(json.dumps({"patch_size": 3}))
    capsys.readouterr()
    assert main(scheduled) == 2
    assert "patch_sha256: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        ["--machine", "nope"],
        ["--data", "cifar"],
        ["--boundary", "reflect"],
        ["--attention", "top2"],
        ["--n", "0"],
        ["--sampler", "euler"],
        ["--patch", "2", "--stride", "1"],
        ["--patch", "missing.json"],
        ["--patch", "2.5"],
        ["--patch", "\u00b2"],  # a digit to str.isdigit, not to int()
        ["--machine", "attn", "--lam", "1.5"],
        ["--precision", "float16"],
        ["--data", "npz"],
        ["--limit", "0"],
    ],
)
def test_bad_values_exit_with_code_2_and_one_line(bad, tmp_path, capsys):
    args = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2"]
    assert main([*args, *bad, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mosaicdiff: error:") and "\n" not in err


@pytest.mark.parametrize(
    "patch_size, needle",
    [
        ("3", "patch size '3' must be an int, a list of T ints"),  # not a table of 1 entry
        ([9] * 1000, "patch size 9 (in {file}) must be between 1 and 4, the image side"),
    ],
)
def test_a_patch_schedule_file_that_does_not_fit_names_itself(patch_size, needle, tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"patch_size": patch_size}))
    args = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2"]
    assert main([*args, "--patch", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle.format(file=bad) in err and str(bad) in err
    assert "\n" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["--machine", "attn", "--lam", "1.5"], "--lam=1.5 must lie in [0, 1]"),
        (["--patch", "3", "--stride", "0"], "--stride=0 must be at least 1"),
    ],
)
def test_a_machine_option_out_of_range_is_named_by_its_flag(bad, needle, tmp_path, capsys):
    args = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2", *bad]
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith(needle)


@pytest.mark.parametrize(
    "unread, needle",
    [
        (["--lam", "0.3"], "--lam 0.3 is read by --machine attn only, not els"),
        (["--machine", "bbels", "--attention", "top1"], "--attention top1 is read by --machine"),
        (["--machine", "ideal", "--patch", "3"], "--patch 3: --machine ideal scores whole images"),
        (["--machine", "ideal", "--boundary", "zeros"], "--boundary zeros: --machine ideal"),
        # at their default values too: a machine that never reads them ignored them silently
        (["--lam", "0.5"], "--lam 0.5 is read by --machine attn only, not els"),
        (["--attention", "soft"], "--attention soft is read by --machine attn only, not els"),
        (["--machine", "ideal", "--boundary", "circular"], "--boundary circular: --machine ideal"),
        (["--machine", "ideal", "--stride", "1"], "--stride 1: --machine ideal"),
        (["--machine", "bbels", "--boundary", "circular"], "bbels is ELS with zero padding"),
    ],
)
def test_options_the_machine_never_reads_are_refused(unread, needle, tmp_path, capsys):
    # else they were stored with the samples, and a rerun without them was refused
    args = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2"]
    assert main([*args, *unread, "--out", str(tmp_path / "x")]) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_calibrate_and_compare_on_a_trained_run(tmp_path, tiny, monkeypatch, capsys):
    from dataclasses import replace

    from mosaicdiff import plots
    from mosaicdiff.config import DiffusionConfig
    from mosaicdiff.training import train

    figures, save = {}, plots.save
    monkeypatch.setattr(
        plots, "save", lambda fig, path: (figures.update({path.name: fig}), save(fig, path))
    )

    cfg = tiny(epochs=1)
    cfg = replace(cfg, diffusion=DiffusionConfig(T=100), sample=replace(cfg.sample, steps=100))
    run = tmp_path / "run"
    train(cfg, run, progress=False, compile=False)
    cal = tmp_path / "cal.json"
    common = ["--n", "2", "--every", "25", "--stride", "2"]
    assert (
        main(["theory", "calibrate", str(run), *common, "--candidates", "2,4", "--out", str(cal)])
        == 0
    )
    made = json.loads(cal.read_text())
    assert len(made["patch_size"]) == 100 and set(made["patch_size"]) <= {2, 4}
    # what it was made on (probe 63: a file applied elsewhere, or at stride 1, said nothing)
    assert made["stride"] == 2 and made["data"] == {"kind": "pairings", "shape": [3, 4, 4]}
    assert made["epoch"] == 1 and len(made["checkpoint_sha256"]) == 64
    at_2 = tmp_path / "at2.json"  # at --stride 2 the default candidates are 2, 4, not 1, 3
    assert main(["theory", "calibrate", str(run), *common, "--out", str(at_2)]) == 0
    assert json.loads(at_2.read_text())["candidates"] == [2, 4]
    at_T = tmp_path / "T1000.json"  # as made for theory sample's T=1000
    at_T.write_text(json.dumps({**made, "patch_size": [2] * 1000}))
    drawn = tmp_path / "drawn"  # at the file's own stride when --stride is left out (at the
    assert main([*SAMPLE, "--patch", str(at_T), "--out", str(drawn)]) == 0  # patch's 1: refused)
    capsys.readouterr()
    at_1 = [*SAMPLE, "--patch", str(at_T), "--stride", "1", "--out", str(tmp_path / "s1")]
    refused(at_1, capsys, "--stride 1", "calibrated at stride 2")
    digits = [*SAMPLE, "--data", "digits", "--subset", "20", "--patch", str(at_T)]
    assert main([*digits, "--out", str(tmp_path / "dig")]) == 0
    said = capsys.readouterr().out
    assert "calibrated on pairings images of 3x4x4, not these digits images of 1x8x8" in said
    default = tmp_path / "default.json"  # 1,3,5,7 up to the 4x4 image's side
    assert (
        main(["theory", "calibrate", str(run), "--n", "2", "--every", "50", "--out", str(default)])
        == 0
    )
    assert json.loads(default.read_text())["candidates"] == [1, 3]
    # bbels (probe 56: its second candidate was refused a --boundary circular nobody gave)
    bbels = ["theory", "calibrate", str(run), "--machine", "bbels", "--n", "2", "--every", "50"]
    assert main([*bbels, "--out", str(tmp_path / "bbels.json")]) == 0
    capsys.readouterr()
    ignored = ["theory", "calibrate", str(run), "--patch", "3", "--out", str(tmp_path / "p.json")]
    refused(ignored, capsys, "--patch 3", "--candidates")  # it was ignored without a word
    ideal = [*ignored[:3], "--machine", "ideal", "--out", str(tmp_path / "p.json")]
    refused(ideal, capsys, "no patch size to calibrate")  # it blamed a --patch 1 nobody gave
    out = tmp_path / "cmp"
    assert (
        main(["theory", "compare", str(run), *common, "--patch", str(cal), "--out", str(out)]) == 0
    )
    result = json.loads((out / "agreement.json").read_text())["members"][0]
    assert 0 <= result["r2"]["median"] <= 1 and len(result["eps_cosine"]["t"]) == 5
    for figure in ("samples.png", "eps_cosine.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    (ax,) = figures["samples.png"].axes  # each network sample above the machine's, r^2 below
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{r:.2f}" for r in result["r2"]["r2"]]
    assert main(["theory", "compare", str(tmp_path / "none"), "--out", str(out)]) == 2


SAMPLE = ["theory", "sample", "--n", "2", "--sampler", "ddim", "--steps", "2", "--no-progress"]


def refused(args: list[str], capsys, *names: str) -> str:
    """Run the CLI: exit 2, nothing on stdout, and one error line naming each of `names`."""
    assert main(args) == 2
    printed = capsys.readouterr()
    err = printed.err.strip()
    assert "\n" not in err and all(name in err for name in names), err
    assert printed.out == ""
    return err


@pytest.mark.parametrize("seed", ["-5", "99999999999999999999"])
@pytest.mark.parametrize("command", ["sample", "calibrate", "compare"])
def test_seeds_outside_0_to_2_31_are_refused_before_writing(command, seed, tmp_path, capsys):
    out = tmp_path / "out"
    args = SAMPLE if command == "sample" else ["theory", command, str(tmp_path / "run")]
    refused([*args, "--seed", seed, "--out", str(out)], capsys, seed, "2147483647")
    assert not out.exists()


@pytest.mark.parametrize("eta", ["5", "1.01", "-0.5", "nan"])
def test_ddim_eta_outside_0_to_1_is_refused_before_writing(eta, tmp_path, capsys):
    out = tmp_path / "out"
    refused([*SAMPLE, "--eta", eta, "--out", str(out)], capsys, f"--eta={float(eta)}", "[0, 1]")
    assert not out.exists()


@pytest.mark.parametrize(
    "command, out",
    [
        *[(c, o) for c in ("sample", "knob", "compare") for o in ("", "f", "f/sub")],
        *[("calibrate", o) for o in ("", "f/sub", "d")],  # its --out is a file: f is fine
    ],
)
def test_an_out_path_that_cannot_be_written_is_refused_before_work(
    command, out, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").touch()  # a file
    (tmp_path / "d").mkdir()  # a folder, where calibrate writes a JSON file
    args = {"sample": SAMPLE, "knob": ["theory", "knob", "--n", "2", "--lams", "0"]}
    args = args.get(command, ["theory", command, "run", "--n", "2", "--every", "500"])
    refused([*args, "--out", out], capsys, f"--out {out!r}")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "f"]
    assert (tmp_path / "f").stat().st_size == 0


@pytest.mark.parametrize("command", ["sample", "knob", "calibrate", "compare"])
def test_a_theory_command_never_writes_into_a_trained_run(command, trained_run, capsys):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in trained_run.rglob("*"))
    args = {"sample": SAMPLE, "knob": ["theory", "knob", "--n", "2", "--lams", "0"]}
    args = args.get(command, ["theory", command, str(trained_run), "--n", "2", "--every", "50"])
    out = trained_run / "config.json" if command == "calibrate" else trained_run
    refused([*args, "--out", str(out)], capsys, "would write into the trained run")
    for entry in ("checkpoints", "samples", "history", "mine"):  # and history's: it redraws it
        inner = trained_run / entry / ("cal.json" if command == "calibrate" else "mine")
        refused([*args, "--out", str(inner)], capsys, f"into the trained run {str(trained_run)!r}")
    if command == "calibrate":
        other = trained_run.parent / "notes.json"  # a file of the user's, not a calibration
        other.write_text("{}")
        refused([*args, "--out", str(other)], capsys, "is a file but not a calibration")
        assert other.read_text() == "{}"
    assert sorted((p.name, p.stat().st_mtime_ns) for p in trained_run.rglob("*")) == before


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run on the 4x4 pairings (T=100), trained once for this module's refusals."""
    run = tmp_path_factory.mktemp("trained") / "run"
    args = ["train", "--out", str(run), "--epochs", "1", "--runs", "1", "--per-run", "2"]
    args += ["--sampler", "ddim", "--steps", "2", "--no-progress"]
    assert main([*args, "--set", "diffusion.T=100", "--set", "data.n_images=64"]) == 0
    return run


@pytest.mark.parametrize(
    "bad, names",
    [
        (["--data", "folder", "--image-size", "1"], ["--image-size=1", "between 3"]),
        (["--data", "folder", "--image-size", "100000"], ["--image-size=100000", "256"]),
        (["--data", "npz"], ["2x2", "3x3"]),
        (["--data", "digits", "--patch", "99", "--stride", "1"], ["patch size 99", "8"]),
    ],
)
def test_sizes_that_do_not_fit_the_images_are_refused_before_writing(bad, names, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "png").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "png" / "a.png")
    np.savez(tmp_path / "tiny.npz", images=np.zeros((3, 2, 2), dtype=np.uint8))
    path = {"folder": tmp_path / "png", "npz": tmp_path / "tiny.npz"}.get(bad[1], "")
    out = tmp_path / "out"
    refused([*SAMPLE, *bad, "--data-path", str(path), "--out", str(out)], capsys, *names)
    assert not out.exists()


@pytest.mark.parametrize(
    "bad, names",
    [
        (["--sampler", "ddpm", "--steps", "50"], ["--steps=50: ddpm samples every one"]),
        (["--sampler", "ddpm", "--steps", "1000", "--eta", "0.5"], ["--eta=0.5 is DDIM's"]),
        (["--data", "pairings", "--data-path", "x.npz"], ["--data-path 'x.npz'", "npz or folder"]),
        (["--data", "digits", "--n-images", "64"], ["--n-images=64 sets the colour pairings"]),
        (["--data", "digits", "--data-seed", "3"], ["--data-seed=3 sets the colour pairings"]),
        (["--data", "npz", "--data-path", "x.npz", "--image-size", "8"], ["--image-size=8"]),
        (["--data", "pairings", "--subset", "8"], ["--subset=8", "pairings' number is --n-images"]),
        (["--data", "digits", "--subset", "1798"], ["subset=1798", "1,797 images of digits"]),
    ],
)
def test_options_the_data_or_sampler_do_not_read_are_refused(bad, names, tmp_path, capsys):
    out = tmp_path / "out"
    refused([*SAMPLE, *bad, "--out", str(out)], capsys, *names)
    assert not out.exists()


@pytest.mark.parametrize("command", ["calibrate", "compare"])
def test_patch_sizes_larger_than_a_runs_images_are_refused_before_work(
    command, trained_run, tmp_path, capsys
):
    out = tmp_path / "out"
    patch = ["--candidates", "1,3,5"] if command == "calibrate" else ["--patch", "5"]
    args = ["theory", command, str(trained_run), "--n", "2", "--every", "50", *patch]
    refused([*args, "--out", str(out)], capsys, "patch size 5", "4")
    assert not out.exists()


@pytest.mark.parametrize(
    "bad, names",
    [
        (["--n", "0"], ["--n=0"]),
        (["--patch", "6", "--stride", "2"], ["patch size 6"]),
        (["--lams", "0,0.5", "--eta", "2"], ["--eta=2.0"]),
        (["--limit", "5"], ["--limit=5", "data other than pairings"]),  # not in knob's --help
        (["--data-path", "x.npz"], ["--data-path 'x.npz'", "npz or folder only"]),
    ],
)
def test_knob_checks_every_option_before_printing_or_writing(bad, names, tmp_path, capsys):
    out = tmp_path / "knob"
    args = ["theory", "knob", "--n", "2", "--sampler", "ddim", "--steps", "2", "--no-progress"]
    refused([*args, *bad, "--out", str(out)], capsys, *names)
    assert not out.exists()


@pytest.mark.parametrize("command", ["calibrate", "compare"])
def test_a_file_given_as_the_run_is_called_a_file(command, tmp_path, capsys):
    (tmp_path / "afile").touch()
    out = tmp_path / "out"
    args = ["theory", command, str(tmp_path / "afile"), "--out", str(out)]
    refused(args, capsys, "afile", "is a file, not a run directory")
    assert not out.exists()


def test_a_folder_drawn_with_a_calibration_is_not_resumed_at_another_stride(tmp_path, capsys):
    # Probe 64: a file made again at another stride (same table) resumed the folder, mixing
    # chunks of two strides; one drawn before files held a stride was drawn at stride 1
    images = np.random.default_rng(0).random((20, 6, 6, 1)).astype("float32")
    np.savez(tmp_path / "six.npz", images=images)
    cal = tmp_path / "cal.json"
    draw = [*SAMPLE, "--data", "npz", "--data-path", str(tmp_path / "six.npz")]
    draw += ["--n", "4", "--batch", "2", "--patch", str(cal)]
    for name, made in [("old", {}), ("new", {"stride": 3})]:
        cal.write_text(json.dumps({"patch_size": [3] * 1000, **made}))
        out = tmp_path / name
        assert main([*draw, "--out", str(out)]) == 0
        (out / "chunk-00001.npz").unlink()  # as if stopped halfway
        if name == "old":  # as drawn by a version that stored no stride
            meta = json.loads((out / "sample.json").read_text())
            meta["theory"].pop("stride")
            (out / "sample.json").write_text(json.dumps(meta))
        other = {"stride": 3} if name == "old" else {}
        cal.write_text(json.dumps({"patch_size": [3] * 1000, **other}))
        capsys.readouterr()
        refused([*draw, "--out", str(out)], capsys, "other settings", "stride")
