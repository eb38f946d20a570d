import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    """The tests use small tensors: a fixed thread count (1 unless DEEPARCH_TEST_THREADS says
    otherwise) is faster than threads fighting over a shared machine, and reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("DEEPARCH_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(n)
