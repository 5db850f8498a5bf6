"""Shared captioner fixtures: the tiny random captioner (in memory and saved to a folder)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two shared CPU cores: one torch thread per test process is the steady setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_parts():
    """``(model, tokenizer, processor)`` of the tiny random captioner (seed 0)."""
    from captioner.processor import CaptionProcessor
    from captioner.tiny import build_tiny_captioner

    model, tokenizer = build_tiny_captioner(seed=0)
    return model, tokenizer, CaptionProcessor(model.config, tokenizer)


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random captioner saved with ``captioner.tiny.save_tiny_captioner`` (seed 0)."""
    from captioner.tiny import save_tiny_captioner

    return save_tiny_captioner(tmp_path_factory.mktemp("tiny_captioner") / "model", seed=0)
