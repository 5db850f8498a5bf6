"""Dispatch for the stages over stored embeddings (``cluster``, ``quality``, ``semantic_dedup``, ``category``)
and ``split``: what the pipeline calls, the tables each reads (for ``runs``), and their preflight checks."""
from __future__ import annotations

from typing import Any

from curation.config import ConfigError
from curation.lake.tables import Lake

INPUTS: dict[str, list[str]] = {
    "cluster": ["stages/embed"],
    "quality": ["stages/embed", "stages/cluster", "ratings"],
    "semantic_dedup": ["stages/embed", "stages/cluster", "stages/quality"],
    "category": ["stages/embed"],
    "split": ["curated", "stages/cluster", "stages/quality", "stages/semantic_dedup", "stages/category"],
}


def preflight(cfg: Any, stages: list[str]) -> None:
    """Before any work: settings these stages need (``ConfigError`` naming the key) and the files they name."""
    from curation.models import require_file

    if "category" in stages and cfg.embed.clip is None:
        raise ConfigError("stage 'category' encodes its prompts with the CLIP model of 'embed.clip': set "
                          "'embed.clip.path' (an open_clip folder) or 'embed.clip.architecture' and 'embed.clip.weights'")
    if "quality" in stages and cfg.quality.head is not None:
        require_file(cfg.quality.head, "quality head")
    if "quality" in stages and cfg.quality.head is None and cfg.quality.head_out is None \
            and not Lake(cfg.lake).is_local:
        raise ConfigError("stage 'quality' on an object-store lake needs 'quality.head_out' (a local path)")


def run_stage(stage: str, lake: Lake, cfg: Any, backend: str, commit_every: int) -> dict[str, Any]:
    """Run one of these stages with its config section; returns its counts."""
    if stage == "cluster":
        from curation.stages.cluster import run_cluster

        return run_cluster(lake, cfg.cluster, backend=backend, commit_every=commit_every)
    if stage == "quality":
        from curation.stages.quality import run_quality

        return run_quality(lake, cfg.quality, backend=backend, commit_every=commit_every)
    if stage == "semantic_dedup":
        from curation.stages.semantic_dedup import run_semantic_dedup

        return run_semantic_dedup(lake, cfg.semantic_dedup, backend=backend)
    if stage == "category":
        from curation.stages.category import run_category

        return run_category(lake, cfg.category, cfg.embed.clip, backend=backend, commit_every=commit_every)
    if stage == "split":
        from curation.stages.split import run_split

        return run_split(lake, cfg.split)
    raise ValueError(f"{stage!r} is not a stage over embeddings")
