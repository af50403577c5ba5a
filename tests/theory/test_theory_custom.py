"""Score machines of the user's own (`theory --machine FILE.py:Class`): the example Gaussian
machine's maths, and the theory commands on a machine of one's own, refusals included."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mosaicdiff.cli import main
from mosaicdiff.diffusion import Schedule
from mosaicdiff.theory.custom import build_custom
from mosaicdiff.theory.ideal import IdealScore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_machine.py"
GAUSS = f"{EXAMPLE}:Gaussian"
SAMPLE = ["theory", "sample", "--n", "4", "--sampler", "ddim", "--steps", "3", "--no-progress"]

MACHINES = '''
import torch
from mosaicdiff.theory.base import ScoreMachine
from mosaicdiff.theory.local import ELS

class Copies(ScoreMachine):
    """x0_hat: the first training image, whatever x_t is."""
    def x0_hat(self, x_t, t, a, b2):
        return self.images[:1].expand_as(x_t)

class Patchy(ELS):
    """ELS under another name: takes patch_size, stride and boundary."""

class WrongShape(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t[:, :1]

class Raises(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t @ torch.ones(2, 2)

class Lam(ScoreMachine):
    def __init__(self, images, schedule, lam=0.5, **kw):
        super().__init__(images, schedule, **kw)
    def x0_hat(self, x_t, t, a, b2):
        return x_t

class BatchOfOne(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t.view(1, *x_t.shape[1:])

class NotAMachine:
    pass

class Tuple(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return (x_t,)

class OneArg(ScoreMachine):
    def __init__(self, images):
        super().__init__(images, None)
    def x0_hat(self, x_t, t, a, b2):
        return x_t

class PatchyKw(ELS):
    """ELS with an __init__ of its own that passes the options on."""
    def __init__(self, images, schedule, **kw):
        super().__init__(images, schedule, **kw)

class NoX0(ScoreMachine):
    pass

class Half(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t.half()

class Ints(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t.long()

class Exits(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        raise SystemExit("bye")

class Fixed(ELS):
    """ELS at patch size 1, whatever it is given."""
    def __init__(self, images, schedule, **kw):
        super().__init__(images, schedule, patch_size=1, **kw)

class NaNs(ScoreMachine):
    def x0_hat(self, x_t, t, a, b2):
        return x_t * float("nan")

from mosaicdiff.theory.attention import AttentionELS

class Attn(AttentionELS):
    """AttentionELS under another name: its stride reaches LocalMachine through **kwargs."""
'''


@pytest.fixture
def machines(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(MACHINES)
    return path


def test_the_gaussian_machine_is_the_ideal_score_of_one_gaussian():
    """Of two training images, the fitted Gaussian has mean their midpoint and all its variance
    along their difference: x0_hat moves along that line only, with the Wiener gain."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 2, 2, generator=g) * 2 - 1
    schedule = Schedule.linear()
    machine = build_custom(GAUSS, images, schedule, torch.float64)
    d = (images[1] - images[0]).flatten().double()
    mu, var = images.mean(0).flatten().double(), d.dot(d) / 2  # unbiased: (d/2)^2 * 2 / 1
    x_t = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    for t in (10, 500, 999):
        ab = float(schedule.alpha_bar[t])
        a, b2 = ab**0.5, 1 - ab
        u = d / d.norm()
        proj = (x_t.flatten(1) - a * mu) @ u  # (5,)
        want = mu + (a * var / (a * a * var + b2) * proj)[:, None] * u
        got = machine.x0_hat(x_t, t, a, b2).flatten(1)
        torch.testing.assert_close(got, want)
    # at low noise, with one image, the Gaussian collapses onto it as the ideal score does
    one = images[:1].double()
    x = one + 0.01 * torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64)
    ideal = IdealScore(one, schedule)(x, torch.tensor([5]))
    twice = build_custom(GAUSS, torch.cat([one, one]), schedule, torch.float64)
    gauss = twice(x, torch.tensor([5]))
    torch.testing.assert_close(gauss, ideal)
    # and given that one image alone (no spread to divide by N - 1), the same, not NaN
    torch.testing.assert_close(
        build_custom(GAUSS, one, schedule, torch.float64)(x, torch.tensor([5])), gauss
    )


def test_sample_and_evaluate_a_machine_of_your_own(machines, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "copies"
    assert main([*SAMPLE, "--machine", "mine.py:Copies", "--out", str(out)]) == 0
    samples = np.load(out / "samples.npz")["samples"]  # each of them the first training image
    assert samples.shape == (4, 3, 4, 4) and np.allclose(samples, samples[:1], atol=1e-5)
    report = json.loads((out / "consistency.json").read_text())
    assert report["rate"] in (0.0, 1.0) and report["args"]["machine"] == f"{machines}:Copies"
    assert len(report["args"]["machine_sha256"]) == 64


def test_a_machine_that_takes_the_patch_options_gets_them(machines, tmp_path):
    args = [*SAMPLE, "--machine", f"{machines}:Patchy", "--data", "digits"]
    assert main([*args, "--patch", "5", "--boundary", "zeros", "--out", str(tmp_path / "p")]) == 0
    stored = json.loads((tmp_path / "p" / "results-creativity.json").read_text())
    assert stored["per_seed"][0]["n_samples"] == 4
    again = [*SAMPLE, "--machine", "els", "--data", "digits", "--patch", "5", "--boundary", "zeros"]
    assert main([*again, "--out", str(tmp_path / "e")]) == 0
    ours, els = (np.load(tmp_path / f / "samples.npz")["samples"] for f in ("p", "e"))
    np.testing.assert_array_equal(ours, els)  # the same machine under another name


def test_a_rerun_after_the_machines_file_changed_is_refused(machines, tmp_path, capsys):
    args = [*SAMPLE, "--machine", f"{machines}:Copies", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    assert main(args) == 0  # the same file: resumes (nothing to do)
    machines.write_text(MACHINES + "\n# edited\n")
    assert main(args) == 2
    assert "machine_sha256" in capsys.readouterr().err


@pytest.mark.parametrize(
    "machine, extra, message",
    [
        ("{m}:Copies", ["--patch", "3"], "--patch 3: {m}:Copies takes no patch_size"),
        ("{m}:Copies", ["--lam", "0.2"], "--lam 0.2: {m}:Copies takes no lam"),
        ("{m}:Patchy", ["--attention", "top1"], "takes no attention"),
        (
            "{m}:WrongShape",
            [],
            "WrongShape.x0_hat returned x0 of shape (2, 1, 4, 4) for x_t of shape",
        ),
        ("{m}:Raises", [], "running Raises on 2 images failed: RuntimeError"),
        ("{m}:Tuple", [], "Tuple.x0_hat returned a tuple, not a tensor x0 of x_t's shape (2, 3,"),
        ("{m}:OneArg", [], "got an unexpected keyword argument 'dtype' ({m}, line 40)"),
        ("{m}:NotAMachine", [], "NotAMachine is not a subclass of mosaicdiff.theory.base."),
        ("{m}:Missing", [], "mine.py defines no Missing"),
        ("{d}/none.py:X", [], "none.py is not a file"),
        ("nomodule_here:X", [], "no module nomodule_here on the Python path"),
        ("ELS", [], "--machine 'ELS' is not one of ['ideal', 'ls', 'els', 'bbels', 'attn'], nor"),
        ("{m}:Patchy", ["--stride", "0"], "--stride=0 must be at least 1"),
        ("{m}:Lam", ["--lam", "7"], "--lam=7.0 must lie in [0, 1]"),
        ("{m}:BatchOfOne", [], "running BatchOfOne on 2 images failed"),
        ("{m}:NoX0", [], "NoX0 does not implement x0_hat(self, x_t, t, a, b2)"),
        ("{m}:NaNs", [], "NaNs.x0_hat returned NaN or infinite values at step 0"),
        ("{m}:Ints", [], "Ints.x0_hat returned x0 of dtype torch.int64; it must be a floating"),
        ("{m}:Exits", [], "running Exits on 2 images failed: SystemExit: bye ({m}, line 63)"),
        (
            "{m}:WrongShape",
            [],
            "--machine '{m}:WrongShape': WrongShape.x0_hat returned x0 of shape",
        ),
    ],
)
def test_a_machine_that_cannot_be_used_is_refused_before_writing(
    machine, extra, message, machines, tmp_path, capsys
):
    fill = {"m": machines, "d": tmp_path}
    out = tmp_path / "out"
    assert main([*SAMPLE, "--machine", machine.format(**fill), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(**fill) in err, err
    assert not out.exists()


def test_calibrate_refuses_a_machine_without_a_patch_size(machines, tmp_path, capsys):
    args = ["theory", "calibrate", str(tmp_path / "run"), "--machine", f"{machines}:Copies"]
    assert main([*args, "--out", str(tmp_path / "p.json")]) == 2
    assert "takes no patch_size, so it has no patch size to calibrate" in capsys.readouterr().err


def test_a_folder_refused_before_its_first_chunk_takes_the_fixed_settings(machines, tmp_path):
    out = str(tmp_path / "late")
    args = [*SAMPLE, "--machine", f"{machines}:Copies", "--out", out]
    late = "x_t[:, :1] if t == 333 else self.images[:1].expand_as(x_t)"  # past the first try
    machines.write_text(MACHINES.replace("self.images[:1].expand_as(x_t)", late))
    assert main(args) == 2  # after its folder was made: refused, with no chunk in it
    assert (tmp_path / "late" / "sample.json").is_file()
    machines.write_text(MACHINES)
    assert main(args) == 0


def test_a_rerun_on_a_rewritten_data_file_is_refused(tmp_path, capsys):
    data = tmp_path / "imgs.npz"
    images = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8), dtype=np.uint8)
    np.savez(data, images=images)
    args = [*SAMPLE, "--data", "npz", "--data-path", str(data), "--batch", "2"]
    args += ["--out", str(tmp_path / "t")]
    assert main(args) == 0
    (tmp_path / "t" / "chunk-00001.npz").unlink()
    np.savez(data, images=images[::-1])
    assert main(args) == 2
    assert "data_sha256" in capsys.readouterr().err


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A tiny run on the pairings with T = 20, trained once for the refusals below."""
    run = tmp_path_factory.mktemp("short") / "run"
    train = ["train", "--out", str(run), "--epochs", "1", "--set", "data.n_images=64"]
    assert main([*train, "--set", "diffusion.T=20", "--no-progress"]) == 0
    return run


# Machines whose x0_hat turns NaN at some steps, for compare and calibrate: refused at the step.
NAN_AT = """
class Nan(Copies):
    def x0_hat(self, x_t, t, a, b2):
        return x_t * float('nan') if t < 5 else x_t

class PatchyNan(Patchy):
    def x0_hat(self, x_t, t, a, b2):
        return x_t * float('nan') if t == 10 else super().x0_hat(x_t, t, a, b2)
"""


@pytest.mark.parametrize(
    "epochs, says",
    [
        ([], "Nan.x0_hat returned NaN or infinite values at step 0"),  # the newest checkpoint
        (["--epoch", "all"], "Nan.x0_hat returned NaN or infinite values at step 0"),
    ],
)
def test_compare_refuses_samples_that_diverged(short_run, machines, tmp_path, capsys, epochs, says):
    machines.write_text(MACHINES + NAN_AT)
    args = ["theory", "compare", str(short_run), "--machine", f"{machines}:Nan", "--n", "2"]
    assert main([*args, *epochs, "--no-progress", "--out", str(tmp_path / "cmp")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_a_machine_file_changed_since_is_not_compared_into_the_same_folder(
    short_run, machines, tmp_path, capsys
):
    args = ["theory", "compare", str(short_run), "--machine", f"{machines}:Copies", "--n", "2"]
    args += ["--epoch", "all", "--no-progress", "--out", str(tmp_path / "cmp")]
    assert main(args) == 0
    machines.write_text(MACHINES + "\n# edited\n")
    assert main(args) == 2
    assert "other options or files (machine_sha256: " in capsys.readouterr().err


def test_calibrate_refuses_a_machine_whose_eps_is_nan(short_run, machines, tmp_path, capsys):
    machines.write_text(MACHINES + NAN_AT)
    args = ["theory", "calibrate", str(short_run), "--machine", f"{machines}:PatchyNan"]
    assert main([*args, "--n", "2", "--no-progress", "--out", str(tmp_path / "p.json")]) == 2
    assert "PatchyNan.x0_hat returned NaN or infinite values at step 10" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_machine_whose_init_passes_kwargs_on_takes_what_its_base_takes(machines, tmp_path):
    # Probe 53: PatchyKw took none of the options (its __init__ names none), so --patch 2
    # --stride 2, what `--machine els` gets on the pairings, was refused. They are passed on
    # when given; left out, the class's own defaults stand, as they did (probe 56: an __init__
    # fixing one of them broke, and older folders would have resumed with another machine).
    from mosaicdiff.theory.custom import load_machine_class, takes

    kw = load_machine_class(f"{machines}:PatchyKw")
    assert takes(kw) == {"patch_size", "stride", "boundary"} and takes(kw, passed_on=False) == set()
    folders = {name: tmp_path / name.rpartition(":")[2] for name in ("els", f"{machines}:PatchyKw")}
    for name, folder in folders.items():
        given = ["--patch", "2", "--stride", "2"] if name != "els" else []
        assert main([*SAMPLE, "--machine", name, *given, "--out", str(folder)]) == 0
    ours, els = (np.load(f / "samples.npz")["samples"] for f in folders.values())
    np.testing.assert_array_equal(ours, els)
    stored = json.loads((folders[f"{machines}:PatchyKw"] / "sample.json").read_text())["theory"]
    assert stored["patch"] == "2" and stored["stride"] == 2 and stored["boundary"] is None
    # drawn at its own defaults (patch 3, stride 1), a folder is not resumed at the command's
    drawn = [*SAMPLE, "--machine", f"{machines}:PatchyKw", "--out", str(tmp_path / "own")]
    assert main(drawn) == 0 and main([*drawn, "--patch", "2", "--stride", "2"]) == 2
    # a subclass of AttentionELS gets the pairings' patch 2 with its stride 2, as attn does
    folders = {name: tmp_path / f"attn{i}" for i, name in enumerate(("attn", f"{machines}:Attn"))}
    for name, folder in folders.items():
        assert main([*SAMPLE, "--machine", name, "--out", str(folder)]) == 0
    ours, attn = (np.load(f / "samples.npz")["samples"] for f in folders.values())
    np.testing.assert_array_equal(ours, attn)
    fixed = [*SAMPLE, "--machine", f"{machines}:Fixed", "--data", "digits"]
    assert main([*fixed, "--out", str(tmp_path / "fixed")]) == 0
    assert main([*fixed, "--patch", "1", "--out", str(tmp_path / "fixed_given")]) == 2


def test_x0_of_another_float_dtype_is_computed_on_at_the_machines_precision(machines, tmp_path):
    # as before the dtype was checked (probe 56): older folders of such machines resume
    assert main([*SAMPLE, "--machine", f"{machines}:Half", "--out", str(tmp_path / "h")]) == 0
    assert np.isfinite(np.load(tmp_path / "h" / "samples.npz")["samples"]).all()
