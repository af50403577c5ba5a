import pytest
import torch

from mosaicdiff.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig

torch.set_num_threads(2)


def tiny_config(arch: str = "cnn", epochs: int = 2, seeds=(0,), **train) -> RunConfig:
    """A run small enough for the test suite: 256 images, batch 64, a few epochs."""
    return RunConfig(
        data=DataConfig(n_images=256),
        model=ModelConfig(arch=arch),
        train=TrainConfig(epochs=epochs, seeds=tuple(seeds), ema_decay=0.9, **train),
        sample=SampleConfig(n_runs=2, n_per_run=16),
    )


@pytest.fixture
def tiny():
    return tiny_config
