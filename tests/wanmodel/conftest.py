"""Fixtures of every wanmodel test."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """At most 2 torch threads (CI's cores), restored afterwards: CPU float sums depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)
