"""A tiny shared config so the jitted burst compiles once for the whole autodecoder test module set."""

import pytest

from jaxsys.autodecoder.model import ModelConfig
from jaxsys.autodecoder.train import TrainConfig

TINY = TrainConfig(
    model=ModelConfig(latent_dim=4, num_freqs=2, hidden=(16, 16)),
    batch_size=32,
    steps=8,
    steps_per_call=4,
    eval_res=24,
    checkpoint_every=4,
)


@pytest.fixture
def tiny() -> TrainConfig:
    return TINY
