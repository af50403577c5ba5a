import json

import pytest
import torch

from mosaicdiff.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mosaicdiff.models import Ensemble, build_model
from mosaicdiff.models.resnet import receptive_field
from mosaicdiff.training import train

ARCHS = ["resnet", "resnet_attn", "dit", "unet"]


def _build(arch, seeds, shape=(1, 8, 8), **kw):
    if arch == "unet":
        pytest.importorskip("diffusers")
    return build_model(ModelConfig(arch=arch, hidden=8, **kw), shape, 1000, seeds)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(arch, channels):
    model = _build(arch, [0, 1], (channels, 8, 8))
    assert isinstance(model, Ensemble) and model.n_seeds == 2
    x = torch.randn(2, 3, channels, 8, 8)
    eps, a = model(x, torch.randint(1000, (2, 3)), return_attention=True)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert model(x, torch.tensor([10])).shape == x.shape
    n = {"resnet_attn": 64, "dit": 16}.get(arch)
    if n is None:
        assert a is None
    else:
        assert a.shape == (2, 3, n, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 3, n))
    flat = model.as_denoiser()(x.reshape(6, channels, 8, 8), torch.randint(1000, (6,)))
    assert flat.shape == (6, channels, 8, 8)


@pytest.mark.parametrize("arch", ARCHS)
def test_grouped_equals_each_seed_alone(arch):
    group, alone = _build(arch, [3, 5]), _build(arch, [5])
    x, t = torch.randn(1, 4, 1, 8, 8), torch.randint(1000, (1, 4))
    with torch.no_grad():
        want = alone(x, t)
        torch.testing.assert_close(group(x.expand(2, -1, -1, -1, -1), t.expand(2, -1))[1:], want)
        torch.testing.assert_close(group.member(1)(x, t), want)
        assert not torch.allclose(group.member(0)(x, t), want)  # seeds differ
    assert group.member(1).n_seeds == 1 and group.n_seeds == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_evaluates_big_batches_in_slices_with_the_same_result(arch, monkeypatch):
    from mosaicdiff.models import grouped

    model = _build(arch, [0, 1]).eval()
    x, t = torch.randn(2, 10, 1, 8, 8), torch.randint(1000, (2, 10))
    whole = model(x, t, return_attention=True)  # gradients on: one call per member
    # 3 samples x 64 pixels x width 8 per call: slices of 3, 3, 3 and 1 per member
    monkeypatch.setattr(grouped, "CPU_SLICE_VALUES", 3 * 64 * 8 + 7)
    calls = []
    for m in model.members:
        m.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        sliced = model(x, t, return_attention=True)
        torch.testing.assert_close(model(x, torch.tensor([7])), model(x, torch.full((2, 10), 7)))
    assert calls[:8] == [3, 3, 3, 1] * 2
    torch.testing.assert_close(sliced[0], whole[0].detach())
    if whole[1] is None:
        assert sliced[1] is None
    else:
        torch.testing.assert_close(sliced[1], whole[1].detach())


def test_building_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    _build("resnet", [3, 5])
    assert torch.equal(torch.get_rng_state(), state)


def _change_map(model, size, at):
    """(size, size) bool: which output pixels change when the input pixel `at` changes."""
    model = model.double().eval()
    x = torch.randn(1, 2, 1, size, size, dtype=torch.float64)
    y = x.clone()
    y[..., at[0], at[1]] += 1.0
    with torch.no_grad():
        d = (model(x, torch.tensor([500])) - model(y, torch.tensor([500]))).abs()
    return d.amax(dim=(0, 1, 2)) > 0


@pytest.mark.parametrize("depth,kernel", [(1, 3), (2, 3), (1, 5)])
def test_resnet_changes_exactly_its_receptive_field(depth, kernel):
    model = _build("resnet", [0], (1, 20, 20), depth=depth, kernel=kernel)
    side = model.members[0].receptive_field()
    assert side == receptive_field(depth, kernel) == 1 + (kernel - 1) * (2 * depth + 2)
    r = (side - 1) // 2
    want = torch.zeros(20, 20, dtype=torch.bool)
    want[10 - r : 10 + r + 1, 9 - r : 9 + r + 1] = True
    assert torch.equal(_change_map(model, 20, (10, 9)), want)


def test_resnet_attn_is_not_local():
    model = _build("resnet_attn", [0], (1, 20, 20), depth=1, kernel=3)
    assert model.members[0].receptive_field() is None
    assert _change_map(model, 20, (10, 9)).all()


@pytest.mark.parametrize("arch", ["resnet_attn", "dit"])
def test_a_few_training_steps_on_digits_lower_the_loss(arch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: a second thread only adds contention
    try:
        cfg = RunConfig(
            data=DataConfig(kind="digits"),
            model=ModelConfig(arch=arch, hidden=8, depth=1),
            train=TrainConfig(epochs=2, batch_size=128, lr=3e-3, ema_decay=0.9),
        )
        run = train(cfg, tmp_path / "run", progress=False, compile=False)
    finally:
        torch.set_num_threads(threads)
    lines = run.metrics_path.read_text().splitlines()
    losses = [json.loads(line)["loss"][0] for line in lines]
    assert len(losses) == 2 and losses[1] < 0.9 * losses[0]
