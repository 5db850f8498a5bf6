"""Shared fixtures: one generated corpus, one local Ray, one fully curated lake per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, "pq.Table"]:
    """The generator's ``test`` preset (seed 0): media dir and labels."""
    from curation.synth import generate

    out = tmp_path_factory.mktemp("corpus")
    labels = generate(out, preset="test", seed=0)
    return out / "media", labels


@pytest.fixture(scope="session")
def local_ray() -> None:
    """The embedded local Ray, started once (2 CPUs, as CI has)."""
    from curation.ray_runtime import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


def demo_config(lake: Path, media: Path, **overrides: object):
    from curation.config import load_config

    return load_config(REPO / "jobs/configs/demo.yaml", {"lake": str(lake), "input.paths": [str(media)],
                                                         **overrides})


@pytest.fixture(scope="session")
def curated_lake(corpus, local_ray, tmp_path_factory: pytest.TempPathFactory):
    """Every stage of the demo config run on Ray over the corpus; returns (lake, summary)."""
    from curation.lake import Lake
    from curation.pipeline import run_curation

    media, _ = corpus
    lake_dir = tmp_path_factory.mktemp("lake")
    summary = run_curation(demo_config(lake_dir, media))
    return Lake(str(lake_dir)), summary
