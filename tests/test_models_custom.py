"""Networks of the user's own (`model.arch="FILE.py:Class"`): built, trained, sampled and
measured as the built-in natural-data networks are, and refused on one line when they can't be."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from mosaicdiff.cli import main
from mosaicdiff.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mosaicdiff.errors import UserError
from mosaicdiff.models import Ensemble, build_model
from mosaicdiff.runs import RunDir, load_run
from mosaicdiff.training import train, use_compiled

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_network.py"
MLP = f"{EXAMPLE}:MLP"
DIGITS = ["--set", "data.kind=digits", "--no-progress"]

NETS = """
import torch
from torch import nn

class Attending(nn.Module):
    def __init__(self, cfg, shape, T):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
    def forward(self, x, t, return_attention=False):
        eps = x * self.w
        a = torch.ones(x.shape[0], 2, 2) / 2
        return (eps, a) if return_attention else eps

class WrongShape(nn.Module):
    def __init__(self, cfg, shape, T):
        super().__init__()
        self.conv = nn.Conv2d(shape[0], 2, 1)
    def forward(self, x, t):
        return self.conv(x)

class Raises(nn.Module):
    def __init__(self, cfg, shape, T):
        super().__init__()
        self.lin = nn.Linear(3, 3)
    def forward(self, x, t):
        return self.lin(x)

class NoWeights(nn.Module):
    def __init__(self, cfg, shape, T):
        super().__init__()
    def forward(self, x, t):
        return x

class Detached(WrongShape):
    def forward(self, x, t):
        return x * self.conv.weight.sum().detach()

class Double(Raises):
    def forward(self, x, t):
        return x.double() * self.lin.weight.sum()

class SmallTable(nn.Module):
    def __init__(self, cfg, shape, T):
        super().__init__()
        self.t = nn.Embedding(10, 1)  # not T rows: the last steps index past it
    def forward(self, x, t):
        return x * self.t(t)[:, :, None, None]

class BadReads(nn.Module):
    reads = ("widht",)

NOT_A_MODULE = 3

class Tuple(Raises):
    def forward(self, x, t):
        return (x * self.lin.weight.sum(),)

class OneArg(nn.Module):
    def __init__(self, cfg):
        super().__init__()

class ViaJson(Raises):
    def forward(self, x, t):
        import json
        return json.loads("{bad")
"""


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def test_the_example_mlp_is_grouped_like_a_built_in_network():
    model = build_model(ModelConfig(arch=MLP, hidden=8, depth=3), (1, 8, 8), 1000, [3, 5])
    assert isinstance(model, Ensemble) and model.n_seeds == 2
    assert len(model.members[0].net.net) == 2 * 3 + 1  # depth hidden layers + output
    x, t = torch.randn(2, 4, 1, 8, 8), torch.randint(1000, (2, 4))
    alone = build_model(ModelConfig(arch=MLP, hidden=8, depth=3), (1, 8, 8), 1000, [5])
    with torch.no_grad():
        eps = model(x, t)
        assert eps.shape == x.shape
        torch.testing.assert_close(eps[1:], alone(x[1:], t[1:]))  # member 1 is seed 5 alone
        assert not torch.allclose(eps[0], alone(x[:1], t[:1])[0])


def test_a_forward_that_takes_return_attention_is_passed_it(nets):
    model = build_model(ModelConfig(arch=f"{nets}:Attending"), (3, 4, 4), 1000, [0])
    eps, a = model(torch.randn(1, 5, 3, 4, 4), torch.tensor([7]), return_attention=True)
    assert eps.shape == (1, 5, 3, 4, 4) and a.shape == (1, 5, 2, 2)


def test_trains_resumes_and_reloads_through_the_python_api(tmp_path):
    cfg = RunConfig(
        data=DataConfig(kind="digits"),
        model=ModelConfig(arch=MLP, hidden=8),
        train=TrainConfig(epochs=2, seeds=(0, 1), ema_decay=0.9, checkpoint_every=1),
    )
    train(cfg, tmp_path / "whole", progress=False)
    shutil.copytree(tmp_path / "whole", tmp_path / "half")  # as if killed in epoch 2
    for f in RunDir(tmp_path / "half").checkpoint_dir.glob("epoch-000002*"):
        f.unlink()
    train(cfg, tmp_path / "half", resume=True, progress=False)
    whole, half = load_run(tmp_path / "whole"), load_run(tmp_path / "half")
    assert whole.epoch == 2 and half.epoch == 2
    resumed = half.model.state_dict()
    for name, p in whole.model.state_dict().items():
        torch.testing.assert_close(p, resumed[name], msg=name)  # resumed to the same weights


def test_compiled_training_is_chosen_only_when_asked_for_a_custom_network(monkeypatch):
    monkeypatch.delenv("MOSAICDIFF_COMPILE", raising=False)
    cpu = torch.device("cpu")
    assert use_compiled(None, 10**9, cpu) and not use_compiled(None, 10**9, cpu, custom=True)
    assert use_compiled(True, 1, cpu, custom=True)
    monkeypatch.setenv("MOSAICDIFF_COMPILE", "1")
    assert use_compiled(None, 1, cpu, custom=True)


def test_cli_train_sample_evaluate_from_other_folders(tmp_path, monkeypatch, capsys):
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    (tmp_path / "here" / "mine.py").write_text(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path / "here")
    run = str(tmp_path / "run")
    args = ["train", "--out", run, "--model", "mine.py:MLP", "--epochs", "2", *DIGITS]
    assert main([*args, "--set", "train.ema_decay=0.9", "--set", "model.depth=1"]) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert stored["arch"] == f"{tmp_path / 'here' / 'mine.py'}:MLP" and stored["depth"] == 1
    monkeypatch.chdir(tmp_path / "there")  # the stored path is absolute
    assert main(["sample", run, "--per-run", "20", "--no-progress"]) == 0
    assert main(["evaluate", run, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "seed 0: 20 samples" in out
    assert (tmp_path / "run" / "samples" / "default" / "nearest.png").is_file()


@pytest.mark.parametrize(
    "arch, message",
    [
        ("{dir}/missing.py:Net", "missing.py is not a file"),
        ("{nets}:Missing", "nets.py defines no Missing"),
        ("{nets}:NOT_A_MODULE", "NOT_A_MODULE is not a torch.nn.Module class"),
        ("{nets}:BadReads", "BadReads.reads=('widht',) must list fields of"),
        ("{nets}:WrongShape", "returned eps of shape (2, 2, 8, 8) for x_t of shape (2, 1, 8, 8)"),
        ("{nets}:Raises", "running Raises on 2 images failed: RuntimeError: mat1 and mat2"),
        ("{nets}:NoWeights", "NoWeights has no trainable parameters"),
        ("{nets}:Detached", "Detached's eps does not depend on its weights"),
        ("{nets}:Double", "returned eps of dtype torch.float64 for x_t of torch.float32"),
        ("{nets}:Tuple", "returned a tuple, not a tensor eps of x_t's shape (2, 1, 8, 8)"),
        ("{nets}:OneArg", "building OneArg(cfg, image_shape, T) failed: TypeError"),
        ("{nets}:SmallTable", "running SmallTable on 2 images failed: IndexError"),
        ("no_such_module_here:Net", "no module no_such_module_here on the Python path"),
        ("torch.nn:Linear", "building Linear(cfg, image_shape, T) failed: TypeError"),
        ("nets.py:", "is not one of ['cnn', 'attn'"),
        ("nets", "nor a network of your own (path/to/file.py:Class or module:Class)"),
    ],
)
def test_a_network_that_cannot_be_used_is_refused_before_the_run_is_written(
    arch, message, nets, tmp_path, capsys
):
    arch = arch.format(dir=tmp_path, nets=nets)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--model", arch, *DIGITS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mosaicdiff: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_an_error_in_the_users_file_names_its_line(tmp_path):
    (tmp_path / "boom.py").write_text("import torch\n\nraise RuntimeError('boom')\n")
    with pytest.raises(UserError, match=r"RuntimeError: boom \(.*boom.py, line 3\)"):
        build_model(ModelConfig(arch=f"{tmp_path}/boom.py:Net"), (1, 8, 8), 1000, [0])
    (tmp_path / "fwd.py").write_text(NETS)
    with pytest.raises(UserError, match=r"\(.*fwd.py, line 26\)"):  # Raises.forward's line
        build_model(ModelConfig(arch=f"{tmp_path}/fwd.py:Raises"), (1, 8, 8), 1000, [0])
    # Raised inside Python's json, called from the user's line 65, which is the line named.
    with pytest.raises(UserError, match=r"JSONDecodeError: .*\(.*fwd.py, line 65\)$"):
        build_model(ModelConfig(arch=f"{tmp_path}/fwd.py:ViaJson"), (1, 8, 8), 1000, [0])
    # Built with arguments its __init__ does not take: the TypeError is raised at our call, and
    # the line named is the __init__'s.
    with pytest.raises(UserError, match=r"takes 2 positional .*\(.*fwd.py, line 59\)$"):
        build_model(ModelConfig(arch=f"{tmp_path}/fwd.py:OneArg"), (1, 8, 8), 1000, [0])


def test_fields_the_network_does_not_read_are_refused(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r"), "--model", MLP, "--dry-run", *DIGITS]
    assert main([*args, "--set", "model.depth=3"]) == 0  # MLP.reads = ("depth",)
    assert main([*args, "--set", "model.kernel=5"]) == 2
    assert "model.kernel=5 is not read by model.arch=" in capsys.readouterr().err


def test_a_sweep_names_its_points_by_file_and_class(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = f"out: sw\nbase:\n  data: {{kind: digits}}\ngrid:\n  model.arch: [resnet, '{MLP}']\n"
    (tmp_path / "sw.yaml").write_text(spec)
    assert main(["sweep", "sw.yaml", "--dry-run"]) == 0
    assert "arch=own-network.MLP" in capsys.readouterr().out


def test_a_run_whose_network_file_changed_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine.py"
    mine.write_text(EXAMPLE.read_text())
    run = str(tmp_path / "run")
    train_args = ["train", "--out", run, "--model", f"{mine}:MLP", "--epochs", "1", *DIGITS]
    assert main(train_args) == 0
    sample = ["sample", run, "--per-run", "8", "--no-progress"]
    assert main(sample) == 0
    mine.write_text(EXAMPLE.read_text().replace("SiLU()", "ReLU()"))  # the same weights' shapes
    for command in ([*sample, "--name", "new"], [*train_args, "--resume"]):
        assert main(command) == 2
        assert "the file changed since this run's checkpoint" in capsys.readouterr().err
    # The samples drawn are measured still (probe 53: evaluate was refused), even with the
    # file gone; other images than the run trained on are not.
    mine.unlink()
    assert main(["evaluate", run, "--no-progress"]) == 0
    assert "seed 0: 8 samples" in capsys.readouterr().out
    mine.write_text(EXAMPLE.read_text())
    assert load_run(run).epoch == 1


def test_labels_name_the_file_not_its_folders():
    from mosaicdiff.own_code import short

    assert short("/a/b/nets.py:MLP") == "nets.py:MLP" and short("pkg.nets:MLP") == "pkg.nets:MLP"
    assert short("cnn") == "cnn"


def test_imports_that_exit_or_do_not_parse_are_one_line(tmp_path):
    (tmp_path / "quits.py").write_text("import sys\n\nsys.exit(3)\n")
    with pytest.raises(UserError, match=r"called sys.exit\(3\)"):
        build_model(ModelConfig(arch=f"{tmp_path}/quits.py:Net"), (1, 8, 8), 1000, [0])
    (tmp_path / "typo.py").write_text("x = 1\n\ndef f(:\n")
    with pytest.raises(UserError, match=r"SyntaxError: .*typo.py, line 3\)") as e:
        build_model(ModelConfig(arch=f"{tmp_path}/typo.py:Net"), (1, 8, 8), 1000, [0])
    assert str(e.value).count("line 3") == 1  # named once, with the file's whole path
    # sys.exit while building or running: one line too (probe 53: exit 3 or 1, and no line)
    (tmp_path / "exits.py").write_text(
        "import sys\nfrom torch import nn\n\n"
        "class Init(nn.Module):\n    def __init__(self, cfg, shape, T):\n        sys.exit(3)\n\n"
        "class Forward(nn.Module):\n    def __init__(self, cfg, shape, T):\n"
        "        super().__init__()\n        self.w = nn.Linear(1, 1)\n"
        "    def forward(self, x, t):\n        raise SystemExit('bye')\n"
    )
    with pytest.raises(UserError, match=r"building Init.* failed: SystemExit: 3 \(.*line 6\)$"):
        build_model(ModelConfig(arch=f"{tmp_path}/exits.py:Init"), (1, 8, 8), 1000, [0])
    with pytest.raises(UserError, match=r"running Forward.* SystemExit: bye \(.*line 13\)$"):
        build_model(ModelConfig(arch=f"{tmp_path}/exits.py:Forward"), (1, 8, 8), 1000, [0])


def test_a_network_file_imports_the_modules_beside_it(tmp_path, monkeypatch):
    # Probe 53: `from helpers import block` failed (ModuleNotFoundError) from any folder.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "helpers_beside_net.py").write_text(
        "from torch import nn\n\ndef block(c):\n    return nn.Conv2d(c, c, 3, padding=1)\n"
    )
    (pkg / "net.py").write_text(
        "from torch import nn\nfrom helpers_beside_net import block\n\n"
        "class Net(nn.Module):\n    def __init__(self, cfg, shape, T):\n"
        "        super().__init__()\n        self.a = block(shape[0])\n"
        "    def forward(self, x, t):\n        return self.a(x)\n"
    )
    (pkg / "wave.py").write_text("SHADOW = True\n")  # beside it, named as Python's own
    monkeypatch.setattr("sys.path", list(sys.path))  # restored afterwards
    monkeypatch.delitem(sys.modules, "wave", raising=False)
    monkeypatch.chdir(tmp_path)
    model = build_model(ModelConfig(arch="pkg/net.py:Net"), (1, 8, 8), 1000, [0])
    assert isinstance(model, Ensemble)
    # Probe 56: the folder stayed first on the path, hiding Python's modules from the process.
    import wave

    assert not hasattr(wave, "SHADOW") and sys.path[-1] == str(pkg)


def test_dry_runs_and_sweep_plans_import_the_network(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--out", "r", "--model", "gone.py:Net", "--dry-run", *DIGITS]
    assert main(args) == 2 and "gone.py is not a file" in capsys.readouterr().err
    spec = "out: sw\nbase:\n  data: {kind: digits}\ngrid:\n  model.arch: [resnet, gone.py:Net]\n"
    (tmp_path / "sw.yaml").write_text(spec)
    assert main(["sweep", "sw.yaml", "--dry-run"]) == 2
    assert "sweep grid point arch=gone.Net: " in capsys.readouterr().err


def test_a_network_imported_as_a_module_is_fingerprinted_by_its_file(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    cfg = RunConfig(
        data=DataConfig(kind="digits"),
        model=ModelConfig(arch="mynets:MLP", hidden=8),
        train=TrainConfig(epochs=1, ema_decay=0.0),
    )
    train(cfg, run, progress=False)
    meta = json.loads(sorted((run / "checkpoints").glob("*.json"))[-1].read_text())
    assert meta["arch_sha256"] == hashlib.sha256((tmp_path / "mynets.py").read_bytes()).hexdigest()


def test_a_bad_compile_setting_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOSAICDIFF_COMPILE", "yes")
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--no-progress"]) == 2
    assert "MOSAICDIFF_COMPILE='yes' must be 0 or 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
