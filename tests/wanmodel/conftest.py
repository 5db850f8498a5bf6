"""Fixtures of every wanmodel test: few torch threads, and the tiny random model set with its T2V pipeline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wanmodel.pipelines import WanT2VPipeline
from wanmodel.pipelines.tiny import build_tiny_models


@pytest.fixture(autouse=True)
def _few_threads():
    """At most 2 torch threads (CI's cores), restored afterwards: CPU float sums depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny random t2v and i2v model sets (``build_tiny_models``)."""
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared 2-core CI box
    root = tmp_path_factory.mktemp("tiny_models")
    build_tiny_models(root, "t2v")
    build_tiny_models(root, "i2v")
    return root


@pytest.fixture(scope="module")
def t2v(tiny: Path) -> WanT2VPipeline:
    paths = build_tiny_models(tiny, "t2v")
    return WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder)
