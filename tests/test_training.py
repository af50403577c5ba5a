import os
import shutil

import pytest
import torch

from mosaicdiff.errors import UserError
from mosaicdiff.io import load_tensors
from mosaicdiff.runs import RunDir, load_run
from mosaicdiff.training import train


def _final(path):
    tensors, meta = load_tensors(RunDir(path).checkpoints()[-1])
    return tensors, meta


# top1 too: its Gumbel noise came from one global stream for the group, so seed 5 beside 3 and
# 7 trained otherwise than seed 5 alone (probe 50); it is drawn per seed now, as eps is.
@pytest.mark.parametrize("arch", ["cnn", "attn", "identity", "top1"])
def test_grouped_training_equals_each_seed_alone(tmp_path, tiny, arch):
    train(tiny(arch, epochs=2, seeds=(3, 5, 7)), tmp_path / "group", progress=False)
    train(tiny(arch, epochs=2, seeds=(5,)), tmp_path / "alone", progress=False)
    group, _ = _final(tmp_path / "group")
    alone, _ = _final(tmp_path / "alone")
    for key, value in alone.items():
        if key.startswith(("model.", "ema.")):
            torch.testing.assert_close(group[key][1:2], value, rtol=1e-5, atol=1e-6)


def test_training_moves_weights_and_lowers_loss(tmp_path, tiny):
    train(tiny("cnn", epochs=6), tmp_path, progress=False)
    losses = [row["loss"][0] for row in RunDir(tmp_path).read_metrics()]
    assert len(losses) == 6 and losses[-1] < losses[0]


@pytest.mark.parametrize("arch", ["cnn", "top1"])
def test_resume_equals_uninterrupted(tmp_path, tiny, arch):
    cfg = tiny(arch, epochs=4, seeds=(0, 1), checkpoint_every=2)
    train(cfg, tmp_path / "full", progress=False)
    # Interrupt: keep only the epoch-2 checkpoint, as if killed during epoch 3.
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    cut = RunDir(tmp_path / "cut")
    for f in cut.checkpoint_dir.glob("epoch-000004*"):
        f.unlink()
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    full, _ = _final(tmp_path / "full")
    resumed, meta = _final(tmp_path / "cut")
    assert meta["epoch"] == 4
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert len(cut.read_metrics()) == 4


def test_checkpoint_round_trip_rebuilds_the_ema_model(tmp_path, tiny):
    train(tiny("attn", epochs=1), tmp_path, progress=False)
    tensors, _ = _final(tmp_path)
    loaded = load_run(tmp_path)
    for name, p in loaded.model.state_dict().items():
        assert torch.equal(p, tensors["ema." + name])
    x = torch.randn(1, 3, 3, 4, 4)
    assert loaded.model(x, torch.tensor([10])).shape == x.shape


def test_a_run_made_before_out_bias_existed_loads_and_resumes_as_it_trained(tmp_path, tiny):
    # Such runs trained a bias per channel and place (probe 59); config.json does not say so.
    import json
    from dataclasses import replace

    cfg = tiny("cnn", epochs=2, checkpoint_every=1)
    older = replace(cfg, model=replace(cfg.model, out_bias="position"))
    older = replace(older, sample=replace(cfg.sample, noise="threefry"))  # earlier default too
    train(older, tmp_path, progress=False)
    run = RunDir(tmp_path)
    for f in run.checkpoint_dir.glob("epoch-000002*"):  # as if stopped during epoch 2
        f.unlink()
    stored = json.loads(run.config_path.read_text())
    del stored["model"]["out_bias"]
    run.config_path.write_text(json.dumps(stored))
    assert run.read_config().model.out_bias == "position"
    assert load_run(tmp_path).model.b_out.shape == (1, 12)
    train(older, tmp_path, resume=True, progress=False)  # resumes with the settings it began
    assert run.latest_epoch() == 2
    continues = (
        r'"indexed"\) \(made before its default changed: model.out_bias=position '
        r"sample.noise=threefry continues it\)"
    )
    with pytest.raises(UserError, match=continues):
        train(cfg, tmp_path, resume=True, progress=False)


def test_refuses_to_overwrite_a_run(tmp_path, tiny):
    train(tiny(), tmp_path, progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny(), tmp_path, progress=False)


def test_a_run_another_process_is_training_is_refused(tmp_path, tiny):
    # Two reproduce into one --out interleaved their lines in metrics.jsonl.
    cfg = tiny(epochs=1)
    with RunDir(tmp_path / "r").training():  # as another process would hold it
        with pytest.raises(
            UserError, match=rf"being trained by another process \(pid {os.getpid()}\)"
        ):
            train(cfg, tmp_path / "r", resume=True, progress=False)
        assert not (tmp_path / "r" / "metrics.jsonl").exists()
        RunDir(tmp_path / "r").write_config(cfg)  # as it would be, before its first checkpoint
        with pytest.raises(UserError, match=r"is being trained \(pid \d+\) and has no checkpoint"):
            load_run(tmp_path / "r")
    train(cfg, tmp_path / "r", resume=True, progress=False)  # let go: it trains
    assert len(RunDir(tmp_path / "r").read_metrics()) == 1


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path, tiny):
    train(tiny(epochs=2, checkpoint_every=1), tmp_path, progress=False)
    newest = RunDir(tmp_path).checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupted"):
        assert load_run(tmp_path).epoch == 1


def test_divergence_stops_with_a_clear_message(tmp_path, tiny, monkeypatch):
    from mosaicdiff.training import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="stopped before its first checkpoint") as e:
        train(tiny(epochs=2, lr=1e30), tmp_path / "a", progress=False)
    assert "loss became [nan] at epoch 1" in str(e.value) and "kept" not in str(e.value)
    assert not (tmp_path / "a").exists()  # nothing to resume: nothing left behind
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)  # a folder of the user's: theirs stays
    for name in ("notes.txt", "metrics.jsonl"):
        (tmp_path / "b" / name).write_text("mine")
    with pytest.raises(TrainingDiverged):
        train(tiny(epochs=2, lr=1e30), tmp_path / "b", progress=False)
    kept = sorted(f.name for f in (tmp_path / "b").iterdir())
    assert kept == ["checkpoints", "metrics.jsonl", "notes.txt"]
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == "mine"
    # as the message says, a lower lr: the run never got a checkpoint, so it starts afresh
    # (it said "already holds a run", and --resume refused the new lr)
    train(tiny(epochs=2, lr=1e-3), tmp_path / "a", progress=False)
    assert [r["epoch"] for r in RunDir(tmp_path / "a").read_metrics()] == [1, 2]
    diverge_at(3, monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"epoch 3; .*epoch-000002.safetensors is kept"):
        train(tiny(epochs=4, checkpoint_every=1), tmp_path / "b", progress=False)


def diverge_at(epoch: int, monkeypatch) -> None:
    """Make the eager step's loss infinite at its `epoch`-th epoch."""
    from mosaicdiff import training

    real = training.EagerStep.epoch

    def diverging(self, draws, loss_sum, batch_size):
        real(self, draws, loss_sum, batch_size)
        self.epochs_run = getattr(self, "epochs_run", 0) + 1
        if self.epochs_run == epoch:
            loss_sum.fill_(float("inf"))

    monkeypatch.setattr(training.EagerStep, "epoch", diverging)


def test_a_metrics_file_already_in_out_is_cut_back_when_the_run_stops_early(
    tmp_path, tiny, monkeypatch
):
    # Probe 57: the failed run's epoch lines stayed in it, beside the next run's.
    from mosaicdiff.training import TrainingDiverged

    (tmp_path / "metrics.jsonl").write_text("mine\n")
    diverge_at(2, monkeypatch)
    with pytest.raises(TrainingDiverged, match="epoch 2; training stopped before its first"):
        train(tiny(epochs=3, checkpoint_every=10), tmp_path, progress=False, compile=False)
    assert (tmp_path / "metrics.jsonl").read_text() == "mine\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["metrics.jsonl"]
