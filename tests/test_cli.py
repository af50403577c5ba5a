import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mosaicdiff.cli import main
from mosaicdiff.config import defaults_for
from mosaicdiff.config_io import override, to_dict
from mosaicdiff.evaluate import measured_as_now


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mosaicdiff", *args], capture_output=True, text=True, timeout=300
    )


def test_help_explains_every_command():
    out = run_cli("--help").stdout
    for cmd in ("train", "sample", "evaluate", "reproduce"):
        assert cmd in out
    train_help = run_cli("train", "--help").stdout
    for opt in (
        "--out",
        "--resume",
        "--model",
        "--epochs",
        "--seeds",
        "--set",
        "--dry-run",
        "--device",
    ):
        assert opt in train_help


def test_version_is_the_package_version(capsys):
    from mosaicdiff import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mosaicdiff {__version__}\n"


def test_dry_run_prints_the_resolved_config(tmp_path, capsys):
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            "--model",
            "attn",
            "--epochs",
            "7",
            "--seeds",
            "3",
            "--set",
            "train.lr=0.002",
            "--dry-run",
        ]
    )
    assert code == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["arch"] == "attn" and cfg["train"]["epochs"] == 7
    assert cfg["train"]["seeds"] == [0, 1, 2] and cfg["train"]["lr"] == 0.002
    assert not (tmp_path / "r").exists()


def test_dry_run_reads_the_data_and_builds_the_network(tmp_path, capsys):
    # It printed any config, a data.path that does not exist included, that train then refused.
    train = ["train", "--out", str(tmp_path / "r"), "--dry-run", "--set", "data.kind=npz"]
    assert main([*train, "--set", f"data.path={tmp_path / 'none.npz'}"]) == 2
    assert "none.npz' is not a file" in capsys.readouterr().err
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 7, 7), dtype=np.uint8))
    assert main([*train, "--set", f"data.path={tmp_path / 'a.npz'}", "--model", "unet"]) == 2
    assert "and 7x7 do not" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def dry_run_sample(capsys, *args) -> dict:
    assert main([*args, "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    return printed.get("sample", printed)


def test_new_runs_on_natural_data_sample_a_thousand_clipped_ddim_images(tmp_path, capsys):
    out = ["train", "--out", str(tmp_path / "r")]
    paper = dry_run_sample(capsys, *out)
    assert (paper["sampler"], paper["steps"], paper["n_runs"], paper["n_per_run"]) == (
        "ddpm",
        1000,
        100,
        10_000,
    )
    assert not paper["clip_x0"]
    digits = dry_run_sample(capsys, *out, "--set", "data.kind=digits")
    assert (digits["sampler"], digits["steps"], digits["n_runs"], digits["n_per_run"]) == (
        "ddim",
        50,
        1,
        1000,
    )
    assert digits["clip_x0"]
    config = tmp_path / "digits.yaml"
    config.write_text("data: {kind: digits}\n")
    assert dry_run_sample(capsys, *out, "--config", str(config)) == digits
    # what is given still wins over the data kind's defaults
    given = dry_run_sample(
        capsys, *out, "--set", "data.kind=digits", "--runs", "3", "--steps", "20"
    )
    assert (given["sampler"], given["steps"], given["n_runs"]) == ("ddim", 20, 3)
    unclipped = dry_run_sample(
        capsys, *out, "--set", "data.kind=digits", "--set", "sample.clip_x0=false"
    )
    assert not unclipped["clip_x0"]
    assert not (tmp_path / "r").exists()


def test_a_config_file_is_read_once(tmp_path, capsys, monkeypatch):
    """A new run lays the file over the defaults twice (once to learn the data kind): one read."""
    import mosaicdiff.resolve as resolve

    reads, read = [], resolve.read_mapping
    monkeypatch.setattr(resolve, "read_mapping", lambda *a: reads.append(a) or read(*a))
    path = tmp_path / "digits.yaml"
    path.write_text("data: {kind: digits}\n")
    args = ["train", "--out", str(tmp_path / "r"), "--config", str(path)]
    assert dry_run_sample(capsys, *args)["sampler"] == "ddim"
    assert len(reads) == 1


def test_a_config_file_is_checked_for_fields_nothing_reads(tmp_path, capsys):
    out = ["train", "--out", str(tmp_path / "r")]
    saved = tmp_path / "saved.json"  # every field, as --dry-run prints them
    assert main([*out, "--set", "data.kind=digits", "--dry-run"]) == 0
    saved.write_text(capsys.readouterr().out)
    assert dry_run_sample(capsys, *out, "--config", str(saved))["sampler"] == "ddim"
    deeper = tmp_path / "deeper.yaml"
    deeper.write_text("model: {depth: 3}\n")
    assert main([*out, "--config", str(deeper), "--dry-run"]) == 2
    assert "model.depth=3 is read by model.arch in ['resnet'" in capsys.readouterr().err
    assert dry_run_sample(capsys, *out, "--config", str(deeper), "--model", "unet")
    assert not (tmp_path / "r").exists()


def test_sampler_without_steps_takes_its_own_step_count(tmp_path, capsys):
    out = ["train", "--out", str(tmp_path / "r"), "--set", "data.kind=digits"]
    assert dry_run_sample(capsys, *out, "--sampler", "ddpm")["steps"] == 1000
    short = ["--sampler", "ddpm", "--set", "diffusion.T=300"]
    assert dry_run_sample(capsys, *out, *short)["steps"] == 300
    # ddpm is the pairings' default: a shorter T alone needs no --sampler to follow it
    pairings = ["train", "--out", str(tmp_path / "r"), "--set", "diffusion.T=300"]
    assert dry_run_sample(capsys, *pairings)["steps"] == 300
    paper = ["train", "--out", str(tmp_path / "r"), "--sampler", "ddim"]
    assert dry_run_sample(capsys, *paper)["steps"] == 50
    # a stored run that samples with DDIM, resampled with DDPM
    run = tmp_path / "stored"
    run.mkdir()
    stored = override(defaults_for("digits"), ["data.kind=digits", "sample.eta=1.0"])
    (run / "config.json").write_text(json.dumps(to_dict(stored)))
    ddpm = dry_run_sample(capsys, "sample", str(run), "--sampler", "ddpm")
    assert (ddpm["steps"], ddpm["eta"]) == (1000, 0.0)  # DDIM's eta is dropped with its steps
    assert dry_run_sample(capsys, "sample", str(run))["steps"] == 50


def test_a_key_set_twice_is_refused_unless_both_agree(tmp_path, capsys):
    twice = ["--set", "train.lr=1e-3", "--set", "train.lr=2e-3"]
    for command in (["train", "--out", str(tmp_path / "r")], ["study", "digits"]):
        assert main([*command, *twice, "--dry-run"]) == 2
        assert "--set train.lr=1e-3 and --set train.lr=2e-3 both" in capsys.readouterr().err
    again = ["--set", "train.lr=2e-3", "--set", "train.lr=2e-3"]
    assert main(["train", "--out", str(tmp_path / "r"), *again, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["lr"] == 2e-3
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"out": str(tmp_path / "s"), "grid": {"train.lr": [1e-3]}}))
    assert main(["sweep", str(spec), "--set", "train.lr=2e-3", "--dry-run"]) == 2
    assert "--set and the grid both set ['train.lr']" in capsys.readouterr().err


def test_a_relative_data_path_is_stored_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"out": "s", "grid": {"train.lr": [1e-3]}}))
    npz = ["--set", "data.kind=npz", "--set", "data.path=imgs.npz"]
    np.savez(tmp_path / "imgs.npz", images=np.zeros((4, 8, 8), dtype=np.uint8))  # dry runs read it
    assert main(["train", "--out", "r", *npz, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["path"] == str(tmp_path / "imgs.npz")
    from mosaicdiff.experiments.sweep_plan import plan_sweep

    point = plan_sweep(json.loads(spec.read_text()), sets=npz[1::2]).points[0]
    assert point.cfg.data.path == str(tmp_path / "imgs.npz")


def test_ddims_eta_is_refused_for_ddpm(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r"), "--dry-run", "--set", "sample.eta=0.5"]
    assert main(args) == 2
    assert "sample.eta=0.5 is DDIM's noise level" in capsys.readouterr().err
    ddim = dry_run_sample(capsys, *args[:3], "--set", "sample.eta=0.5", "--sampler", "ddim")
    assert ddim["eta"] == 0.5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "transformer9"], "model.arch"),
        (["--epochs", "-3"], "train.epochs"),
        (["--seeds", "x"], "--seeds"),
        (["--set", "train.lr=-1"], "train.lr"),
        (["--set", "train.nope=1"], "nope"),
        (["--set", 'data.colours=["red","red"]'], "repeats a colour"),
        (["--set", "data.kind=npz", "--set", "data.path=/no/such.npz"], "/no/such.npz"),
        (["--set", "sample.n_per_run=0"], "sample.n_per_run"),
        (["--set", "sample.steps=10"], "ddim"),
        (["--device", "cuda:7"], "cuda"),
        (["--set", "model.patch=3"], "model.patch"),
        (["--set", "train.lr=1e-3", "--set", "train.lr=2e-3"], "both set train.lr; give it once"),
        (["--config", "/no/file.yaml"], "--config"),
        (["--sample-seed", "99999999999999999999"], "sample.seed"),
        (["--seeds", "0,3000000000"], "train.seeds"),
        (["--seeds", "100000000000", "--dry-run"], "a count must be 1 to 10000"),
        (["--seeds", "0", "--dry-run"], "--seeds 1 trains seed 0"),
        (["--seeds", "1,,2"], "--seeds '1,,2'"),
        (["--set", "sample.eta=1.5"], "sample.eta=1.5"),
        (["--set", "data.image_size=-1"], "data.image_size=-1"),
        (["--set", "data.kind=digits", "--set", "data.n_images=64"], "data.n_images=64 sets"),
        (["--set", "data.kind=digits", "--set", "data.layout=rows"], "data.layout='rows' sets"),
        (["--set", "model.depth=4"], "model.depth=4 is read by model.arch in ['resnet'"),
        (["--model", "attn", "--set", "model.gumbel_tau=0.5"], "['top1'] only, not attn"),
        (["--sampler", "ddpm", "--set", "sample.sampler=ddim"], "and --sampler both set"),
        (["--sample-seed", "1", "--set", "sample.seed=1"], "and --sample-seed both set"),
    ],
)
def test_bad_values_give_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_train_sample_evaluate_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "--out",
        str(out),
        "--model",
        "attn",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--set",
        "data.n_images=128",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "sample", str(out), "--runs", "3", "--per-run", "20", "--sampler", "ddim", "--no-progress"
    )
    assert r.returncode == 0, r.stderr
    assert (out / "samples" / "default" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    r = run_cli("evaluate", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("  samples: consistent ") == 2  # each seed's split by reason
    split = [line.split(", ") for line in r.stdout.splitlines() if "  samples: " in line]
    names = [[part.rsplit(" ", 1)[0] for part in seed] for seed in split]
    assert names[0] == names[1]  # the same reasons named for both seeds, a 0.0% too
    res = json.loads((out / "samples" / "default" / "results.json").read_text())
    assert [p["seed"] for p in res["per_seed"]] == [0, 1]
    assert all(p["n"] == 3 and 0 <= p["mean"] <= 1 for p in res["per_seed"])
    assert sum(res["per_seed"][0]["reasons"].values()) == 60
    # The creativity metrics apply to the colour pairings too, on request.
    r = run_cli("evaluate", str(out), "--metric", "creativity", "--limit", "30")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "samples" / "default" / "results-creativity.json").read_text())
    assert [(p["seed"], p["n_samples"]) for p in res["per_seed"]] == [(0, 30), (1, 30)]
    for args, needle in [
        (["--patch", "3"], "--patch 3 applies to --metric creativity, not consistency"),
        (["--metric", "creativity", "--patch", "0"], "--patch=0 must be between 1 and 4"),
    ]:
        r = run_cli("evaluate", str(out), *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1
    # Asking for other sampling settings under the same name is refused.
    r = run_cli("sample", str(out), "--runs", "4", "--per-run", "20", "--sampler", "ddim")
    assert r.returncode == 2 and "other settings (sample.n_runs: 3 -> 4)" in r.stderr
    # sample changes sampling only, and writes only inside RUN/samples/.
    for args, needle in [
        (["--set", "model.arch=cnn"], 'the trained run\'s [\'model.arch: "attn" -> "cnn"\']'),
        # named as such before the value is checked (probe 53: "set data.kind too")
        (["--set", "data.path=x"], "not the trained run's ['data.path']"),
        # a bad sampling value beside it is named as itself (probe 57)
        (["--set", "model.hidden=64", "--set", "sample.n_runs=0"], "sample.n_runs=0"),
        (["--name", "../escape"], "--name '../escape'"),
        (["--name", ""], "--name ''"),
    ]:
        r = run_cli("sample", str(out), "--sampler", "ddim", *args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1
    same = run_cli("sample", str(out), "--set", "model.arch=attn", "--dry-run")  # as trained
    assert same.returncode == 0, same.stderr
    assert not (out / "escape").exists()


def test_a_run_too_short_for_its_ema_is_told_so(tmp_path, capsys):
    short = ["train", "--out", str(tmp_path / "a"), "--epochs", "2", "--set", "data.n_images=64"]
    assert main([*short, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train.ema_decay=0.9999" in out and "takes 2 steps" in out and "hold 100% of" in out
    # Probe 51: "over about 1,000 steps but this run takes 1,280, so they stay near the initial
    # ones" read as a contradiction; the note now says how much of the first step's remains.
    from mosaicdiff.config import TrainConfig
    from mosaicdiff.training import ema_note

    note = ema_note(TrainConfig(ema_decay=0.999, epochs=20, batch_size=64), 64 * 64)
    assert "takes 1,280 steps" in note and "still hold 28% of the first step's" in note
    fitting = ["--set", "train.ema_decay=0", "--no-progress"]
    assert main([*short[:2], str(tmp_path / "b"), *short[3:], *fitting]) == 0
    assert "ema_decay" not in capsys.readouterr().out


def test_resume_flag_continues_a_run(tmp_path):
    out = tmp_path / "run"
    base = [
        "train",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--set",
        "data.n_images=64",
        "--no-progress",
    ]
    assert main(base) == 0
    assert main(base) == 2  # refuses to overwrite
    assert main(base + ["--resume"]) == 0


def test_samples_that_would_not_fit_on_the_disk_are_refused_before_drawing(
    tmp_path, capsys, monkeypatch
):
    # A typo in --runs drew chunks until the disk was full.
    import shutil

    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--epochs", "1", "--set", "data.n_images=64"]
    assert main([*train, "--no-progress"]) == 0
    draw = ["sample", str(out), "--runs", "2", "--per-run", "50", "--sampler", "ddim"]
    draw += ["--steps", "2", "--no-progress"]
    usage = shutil.disk_usage(tmp_path)
    room = 2 * 50 * 48 * 4  # float32 bytes of 100 samples of 3x4x4
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=room - 1))
    capsys.readouterr()
    assert main(draw) == 2
    err = capsys.readouterr().err.strip()
    assert "these samples need 0.0 GB" in err and "draw fewer (--runs, --per-run)" in err
    assert not (out / "samples").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=room))
    assert main(draw) == 0


def test_samples_of_an_older_checkpoint_are_not_mixed_with_newer(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--epochs", "2", "--set", "data.n_images=64"]
    assert main([*train, "--set", "train.checkpoint_every=1", "--no-progress"]) == 0
    for f in (out / "checkpoints").glob("epoch-000002.*"):
        f.unlink()  # as if stopped after epoch 1
    draw = ["sample", str(out), "--runs", "1", "--per-run", "4", "--sampler", "ddim"]
    assert main([*draw, "--steps", "5", "--no-progress"]) == 0
    resume = ["--set", "train.checkpoint_every=1", "--resume", "--no-progress"]
    assert main([*train, *resume]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    said = capsys.readouterr().out
    assert "samples are of epoch 1; the run is now at epoch 2" in said
    assert " over 1 run)" in said  # the binomial interval of its 4 samples, not 0.50-0.50
    result = json.loads((out / "samples" / "default" / "results.json").read_text())
    low, high = result["per_seed"][0]["ci95"]
    assert high - low > 0.3 and measured_as_now(result)
    del result["per_seed"][0]["ci_method"]  # stored with the older normal interval
    assert not measured_as_now(result)  # so `reproduce` measures it again
    assert main([*draw, "--steps", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other settings (epoch: 1 -> 2)" in err


def test_resume_says_where_it_starts(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--epochs", "2", "--set", "data.n_images=64", "--resume"]
    assert main(base) == 0  # nothing to resume yet: a new run, and it says so
    assert "no checkpoint to resume from; starting at epoch 0" in capsys.readouterr().out
    assert main(base) == 0
    assert "resuming from the checkpoint at epoch 2 of 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train: {epochs: 3\n", "but got '<stream end>' at line 2, column 1)"),
        ("model: cnn\n", "--config: config section model must be a mapping, not 'cnn'"),
        ("data: [1]\n", "--config: config section data must be a mapping, not [1]"),
    ],
)
def test_malformed_config_file_is_one_line(tmp_path, capsys, text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_damaged_run_files_are_one_line_and_checkpoints_fall_back(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--epochs", "2", "--set", "data.n_images=64"]
    assert main([*train, "--set", "train.checkpoint_every=1", "--no-progress"]) == 0
    draw = ["sample", str(out), "--runs", "1", "--per-run", "4", "--sampler", "ddim"]
    draw += ["--steps", "2", "--no-progress"]
    config = (out / "config.json").read_bytes()
    for junk in (b"\xff\xfe", b"null", b"[1, 2]", b"{}"):  # not UTF-8; not an object; empty
        (out / "config.json").write_bytes(junk)
        assert main([*draw, "--name", "x"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "config.json" in err and "Traceback" not in err
    edited = json.loads(config)
    edited["model"]["hidden"] = 16  # edited after training: the checkpoint holds width 32
    (out / "config.json").write_text(json.dumps(edited))
    assert main([*draw, "--name", "x"]) == 2
    assert "config.json does not match its checkpoint (size mismatch" in capsys.readouterr().err
    (out / "config.json").write_bytes(config)
    newest, oldest = sorted((out / "checkpoints").glob("*.json"), reverse=True)
    newest.write_bytes(b"\xff")  # a damaged sidecar: the checkpoint before it is used
    with pytest.warns(UserWarning, match="falling back to the previous checkpoint"):
        assert main([*draw, "--name", "fallback"]) == 0
    assert json.loads((out / "samples" / "fallback" / "sample.json").read_text())["epoch"] == 1
    shell = [sys.executable, "-m", "mosaicdiff", *draw, "--name", "fallback2"]
    err = subprocess.run(shell, capture_output=True, text=True, check=True).stderr
    warned = [line for line in err.splitlines() if "falling back" in line]
    assert len(warned) == 1 and warned[0].startswith(f"mosaicdiff: warning: {out}")
    assert "warnings.warn" not in err  # Python's second line, the source that warned
    oldest.write_bytes(b"[]")
    with pytest.warns(UserWarning) as warned:
        assert main([*draw, "--name", "none"]) == 2
    assert str(warned[-1].message).endswith("; it was the oldest")
    err = capsys.readouterr().err.strip()
    assert err.endswith("has no checkpoint that verifies (2 damaged); train it again")
    newest.unlink(), oldest.unlink()  # the sidecars gone, the checkpoints still there
    assert main([*draw, "--name", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has 2 checkpoint(s) without the .json beside each; train it again")


def test_damaged_samples_are_one_line_and_a_bad_chunk_is_redrawn(tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--out", str(out), "--epochs", "1", "--set", "data.n_images=64"]
    assert main([*train, "--no-progress"]) == 0
    draw = ["sample", str(out), "--runs", "2", "--per-run", "4", "--sampler", "ddim"]
    draw += ["--steps", "2", "--set", "sample.chunk_size=4", "--no-progress"]
    assert main(draw) == 0
    folder = out / "samples" / "default"
    meta = (folder / "sample.json").read_bytes()
    chunk = folder / "chunk-00001.npz"
    good = np.load(chunk)["samples"]
    (folder / "sample.json").write_text("{}")
    for command in (draw, ["evaluate", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.endswith(
            f"sample.json is damaged (it has no 'n_chunks'); delete {folder} and sample again"
        )
    (folder / "sample.json").write_bytes(meta)
    np.savez(chunk, samples=np.zeros((1, 3, 3, 4, 4)), index=np.arange(3), run=np.zeros(3))
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(chunk) in err and "redraw it" in err
    chunk.write_text("garbage")  # not numpy's advice to unpickle it
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "is not a readable .npz file (not a zip archive); delete it and sample again to redraw it"
    )
    chunk.unlink()  # as the message says: the chunk comes back as it was
    assert main(draw) == 0 and np.array_equal(np.load(chunk)["samples"], good)
    assert main(["evaluate", str(out)]) == 0
    (folder / "results.json").unlink()
    (folder / "results.json").mkdir()  # a folder where an output file goes: named, not its temp
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{folder / 'results.json'}: Is a directory; choose another path")


def test_an_unusable_out_path_is_one_line(tmp_path, capsys):
    taken = tmp_path / "afile"
    taken.write_text("not a folder")
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"out": str(taken), "grid": {"model.arch": ["cnn"]}}))
    for out in (taken, taken / "sub"):
        # --dry-run too: it says whether the command would run
        train = ["train", "--out", str(out), "--epochs", "1", "--no-progress"]
        for command in (train, *dry_runs_into(out, spec)):
            assert main(command) == 2, command
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"--out '{out}'" in err and "Traceback" not in err
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    assert f"sweep spec: out '{taken}' is a file; name a folder" in capsys.readouterr().err
    assert taken.read_text() == "not a folder"


def dry_runs_into(out, spec) -> list[list[str]]:
    """The dry run of each command that makes a new folder at --out (a sweep of `spec`)."""
    return [
        ["train", "--out", str(out), "--dry-run"],
        ["reproduce", "--out", str(out), "--dry-run"],
        ["study", "digits", "--out", str(out), "--dry-run"],
        ["sweep", str(spec), "--out", str(out), "--dry-run"],
    ]


def test_an_out_inside_a_trained_run_is_refused(tmp_path, capsys):
    # `train --out RUN/samples/x` made a folder both a run and a sample folder of RUN.
    run = tmp_path / "run"
    train = ["train", "--out", str(run), "--epochs", "1", "--no-progress"]
    assert main([*train, "--set", "data.n_images=64", "--set", "train.ema_decay=0.9"]) == 0
    assert main([*train, "--resume", "--dry-run"]) == 0  # the run itself, to continue it
    capsys.readouterr()
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"grid": {"model.arch": ["cnn"]}}))
    for inside in (run / "samples" / "x", run / "checkpoints" / "x", run / "mine"):
        for command in dry_runs_into(inside, spec):
            assert main(command) == 2, command
            err = capsys.readouterr().err.strip()
            assert err.endswith(
                f"--out '{inside}' lies inside the trained run '{run}'; name a folder beside it"
            )
    for command in (
        ["reproduce", "--out", str(run), "--dry-run"],
        ["sweep", str(spec), "--out", str(run), "--dry-run"],
    ):
        assert main(command) == 2
        assert f"--out '{run}' is the trained run '{run}'" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_path_nothing_can_be_created_in_is_refused_before_the_work(tmp_path, capsys):
    # /proc takes no new folders, whoever asks: `theory sample --out /proc/x` drew its samples
    # and only then failed to write them.
    for out in ("/proc/mosaicdiff-x", "/proc/mosaicdiff-x/sub"):
        for command in (
            ["theory", "sample", "--n", "100000", "--out", out, "--no-progress"],
            ["train", "--out", out, "--dry-run"],
        ):
            assert main(command) == 2, command
            err = capsys.readouterr().err.strip()
            assert f"--out '{out}' can't be written: '/proc' takes no new files (" in err
    before = sorted(tmp_path.iterdir())
    assert main(["train", "--out", str(tmp_path / "new" / "run"), "--dry-run"]) == 0
    assert sorted(tmp_path.iterdir()) == before  # the check leaves nothing behind


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path, capsys, monkeypatch):
    # `kill` of a `reproduce --jobs 2` killed the main process at once and left its workers
    # running, writing into the folder a rerun would use. Now it unwinds as Ctrl-C does:
    # `process_pool` stops the workers, the command says how to resume, and exits 128 + 15.
    import os
    import signal
    import time

    from mosaicdiff import cli

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("this test process handles SIGTERM itself")

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        return 0

    monkeypatch.setattr(cli, "cmd_train", killed)
    assert main(["train", "--out", str(tmp_path / "run")]) == 128 + signal.SIGTERM
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the caller's handler is back


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--out", ""], "argument --out: '' is empty"),
        (["reproduce", "--out", " "], "argument --out: ' ' is empty"),
        (["study", "digits", "--out", ""], "argument --out: '' is empty"),
        (["sweep", "SPEC", "--out", ""], "argument --out: '' is empty"),
        (["sweep", "SPEC"], "out=5 must name an output folder"),
        (["reproduce", "--models", "cnn,,attn"], "--models: '' is not one of"),
        (["reproduce", "--models", "cnn,cnn"], "names a model twice"),
        (["reproduce", "--set", "model.arch=dit"], "choose them with --models"),
        (["reproduce", "--config", "ARCH"], "--config sets model.arch='attn'"),  # was ignored
        (["reproduce", "--set", "data.kind=digits"], "needs data.kind=pairings"),
    ],
)
def test_bad_outputs_and_model_lists_are_refused_before_anything_runs(
    tmp_path, capsys, monkeypatch, args, needle
):
    monkeypatch.chdir(tmp_path)  # an empty --out would write here
    (tmp_path / "sweep.yaml").write_text("grid: {train.epochs: [1]}\nout: 5\n")
    (tmp_path / "arch.yaml").write_text("model: {arch: attn}\n")
    files = {"SPEC": str(tmp_path / "sweep.yaml"), "ARCH": str(tmp_path / "arch.yaml")}
    args = [files.get(a, a) for a in args]
    code = main([*args, "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml", "sweep.yaml"]


def test_a_missing_command_names_the_commands(capsys):
    for argv, names in (([], "{train,sample,evaluate,"), (["theory"], "{sample,knob,calibrate,")):
        assert main(argv) == 2
        assert f"the following arguments are required: {names}" in capsys.readouterr().err


def test_a_data_file_rewritten_since_training_is_refused(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8), dtype=np.uint8)
    data = tmp_path / "imgs.npz"
    np.savez(data, images=images)
    out = tmp_path / "run"
    npz = ["--set", "data.kind=npz", "--set", f"data.path={data}", "--set", "model.hidden=8"]
    train = ["train", "--out", str(out), *npz, "--epochs", "1", "--no-progress"]
    assert main(train) == 0
    draw = ["sample", str(out), "--runs", "1", "--per-run", "2", "--sampler", "ddim"]
    draw += ["--steps", "2", "--no-progress"]
    np.savez(data, images=images[::-1])  # the same file name, other images (order counts)
    resume = [*train, "--resume"]  # finished, but resuming checks the data first
    for command in (draw, ["evaluate", str(out)], resume):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(
            "no longer holds the images this run trained on (their sha256 "
            "differs); put them back, or train a new run on them"
        )
    np.savez(data, images=images)
    assert main(draw) == 0 and main(resume) == 0


def test_generated_data_that_now_comes_out_otherwise_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--epochs", "1", "--set", "data.n_images=64"]
    assert main([*args, "--no-progress"]) == 0
    from mosaicdiff import runs

    real = runs.load_dataset

    def other_generator(cfg):  # as if the pairings' code had changed since training
        dataset = real(cfg)
        dataset.images = dataset.images.flip(0)
        return dataset

    monkeypatch.setattr(runs, "load_dataset", other_generator)
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "data.kind=pairings now gives other images than this run trained on" in err
    monkeypatch.setattr(runs, "load_dataset", real)
    assert runs.load_run(out).epoch == 1
