"""Tiny random-initialised models for the bench tests, written once per session to local folders."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bench.dimensions.id_consistency import save_tiny_dinov2
    from bench.dimensions.image_quality import save_random_quality_head
    from curation.models.aesthetic import save_random_aesthetic_head
    from curation.models.clip import TINY_MODEL_CFG, save_tiny_clip

    root = tmp_path_factory.mktemp("bench_models")
    dim = TINY_MODEL_CFG["embed_dim"]
    return {
        "clip": save_tiny_clip(root / "clip"),
        "aesthetic": save_random_aesthetic_head(root / "aesthetic.safetensors", dim),
        "maniqa": save_random_quality_head(root / "maniqa.safetensors", dim, seed=1),
        "musiq": save_random_quality_head(root / "musiq.safetensors", dim, seed=2),
        "dinov2": save_tiny_dinov2(root / "dinov2"),
    }


@pytest.fixture(scope="session")
def tiny_captioner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioner.tiny import save_tiny_captioner

    return save_tiny_captioner(tmp_path_factory.mktemp("bench_judge") / "captioner", seed=0)
