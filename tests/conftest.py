import pytest
import torch

from gpt_from_scratch import GPT_CONFIG_124M

# A GPT small enough to build and run in milliseconds; same keys as GPT_CONFIG_124M.
TINY = {**GPT_CONFIG_124M, "vocab_size": 50, "context_length": 12, "emb_dim": 32, "n_heads": 4,
        "n_layers": 2, "drop_rate": 0.0}


@pytest.fixture
def tiny_cfg():
    return dict(TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(123)
