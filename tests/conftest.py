import os
import pathlib
import sys

# Under pytest-xdist (`-n auto`) each worker gets an equal share of the cores, and so do the anode-train
# subprocesses it starts (they inherit OMP_NUM_THREADS). Two workers that each spin two OpenMP threads on
# a 2-core machine run far slower than two one-thread workers. Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _share = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def fresh_seed():
    """Fresh random inputs on every run; the seed is printed, so a failure can be replayed."""
    seed = torch.seed()
    print(f"torch seed {seed}")
    return seed
