import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))


@pytest.fixture(autouse=True)
def fresh_seed():
    """Fresh random inputs on every run; the seed is printed, so a failure can be replayed."""
    seed = torch.seed()
    print(f"torch seed {seed}")
    return seed
