"""Inputs and comparisons for the kill -9 test (``test_kill_resume.py``).

``build_snapshots`` curates the generated corpus once, stage by stage, in-process, and copies the lake just before
each stage runs: the snapshot before stage S holds exactly S's inputs, and the snapshot after it (the next one, or
the final lake) holds S's uninterrupted output, the reference a killed-and-resumed run must reproduce.
``table_rows`` reads a table as ``{key: row}`` without the columns that legitimately differ between runs (wall
times, timestamps), and ``assert_same_rows`` compares two such tables, floats within a tight tolerance.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.lake import Lake
from curation.lake.schemas import key_for

# The stages a test kills, in run order; "classical" is the classical pass (ingest, shots with the scorers, dedup).
KILLED_STAGES = ("classical", "ocr", "embed", "aesthetic", "nsfw", "experts", "cluster", "quality", "semantic_dedup", "category",
                 "select", "split")
CLASSICAL = ("ingest", "shots", "duration_resolution", "borders", "exposure", "blur", "motion", "watermark", "phash",
             "dedup")
# Stages that rewrite a whole table each run (no per-key appends): "exactly once" is "equals the reference".
GLOBAL_STAGES = ("semantic_dedup", "select", "split")
GLOBAL_TABLES = ("stages/dedup", "stages/semantic_dedup", "curated")
# Small batches and commits, so a stage commits several times on the test corpus.
BATCHED = {"ocr": 2, "embed": 2, "aesthetic": 2, "nsfw": 2, "experts": 2, "cluster": 2, "quality": 2, "category": 2}
COMMIT_EVERY = 2


@dataclass(frozen=True)
class Snapshots:
    """Lake copies: ``before[stage]`` is the lake just before ``stage`` ran; ``final`` after every stage."""

    before: dict[str, Path]
    final: Path
    models: Path
    overrides: dict[str, Any]  # config overrides (dotted keys) every run of the test uses

    def after(self, stage: str) -> Path:
        i = KILLED_STAGES.index(stage)
        return self.before[KILLED_STAGES[i + 1]] if i + 1 < len(KILLED_STAGES) else self.final


def output_tables(stage: str) -> tuple[str, ...]:
    """The tables ``stage`` writes (compared with the reference after a resume)."""
    if stage == "classical":
        return ("videos", "clips", *(f"stages/{s}" for s in CLASSICAL[2:]))
    if stage in ("select", "split"):
        return ("curated",)
    if stage == "quality":
        return ("stages/quality", "ratings_todo")
    if stage == "cluster":
        return ("stages/cluster", "cluster_centroids")
    return (f"stages/{stage}",)


def stage_list(stage: str) -> list[str]:
    """The config's ``stages`` for one killed stage."""
    return list(CLASSICAL) if stage == "classical" else [stage]


def stage_overrides(models: Path, media: Path) -> dict[str, Any]:
    """Dotted config overrides: tiny models under ``models``, small batches, frequent commits."""
    from curation.models.aesthetic import save_random_aesthetic_head
    from curation.models.clip import CONFIG_FILE, save_tiny_clip

    clip = models / "clip"
    if not (clip / CONFIG_FILE).exists():
        save_tiny_clip(clip, seed=0)
    aesthetic = models / "aesthetic.safetensors"
    if not aesthetic.exists():
        from curation.config import EmbedConfig
        from curation.stages.model_stages import embedding_dim

        save_random_aesthetic_head(aesthetic, embedding_dim(EmbedConfig(clip={"path": str(clip)})), seed=1)
    out: dict[str, Any] = {"input.paths": [str(media)], "embed.clip": {"path": str(clip)},
                           "aesthetic.weights": str(aesthetic),
                           "experts.heads": {"overexposure": str(models / "overexposure.safetensors")},
                           "execution.commit_every": COMMIT_EVERY, "execution.items_per_task": 1,
                           "report.html": False,
                           # a corpus of about twenty clips: fewer clusters and ratings than the demo's
                           "cluster.n_clusters": 3, "quality.ratings_per_cluster": 4, "quality.min_ratings": 8,
                           "split.max_per_cluster": 4,
                           # keep more of the small corpus, so the caption job has several clips to commit
                           "select.min_duration_s": 1.0, "select.exclude_tiers": ["shaky"]}
    out.update({f"{s}.batch_size": n for s, n in BATCHED.items()})
    return out


def build_snapshots(root: Path, media: Path, labels: pa.Table) -> Snapshots:
    """Curate the corpus stage by stage (backend local, in-process), copying the lake before each killed stage."""
    from curation.config import load_config
    from curation.demo_models import train_demo_experts
    from curation.embeddings.demo_truth import rate_todo_from_labels
    from curation.pipeline import run_curation
    from tests.conftest import REPO

    models = root / "models"
    overrides = stage_overrides(models, media)
    lake_dir = root / "lake"

    def cfg_for(stages: Iterable[str]) -> Any:
        return load_config(REPO / "jobs/configs/demo.yaml", {**overrides, "lake": str(lake_dir),
                                                             "stages": list(stages), "execution.backend": "local"})

    Lake(str(lake_dir))  # an empty lake: the classical pass's input
    before: dict[str, Path] = {}
    for stage in KILLED_STAGES:
        cfg = cfg_for(stage_list(stage))
        if stage == "experts":
            train_demo_experts(cfg, labels, str(models.parent))  # the demo's hook: a head on the generator's labels
        if stage == "quality":  # the demo's hook: the human rating round, simulated from the labels
            rate_todo_from_labels(Lake(str(lake_dir)), labels, cfg.quality, str(root / "ratings.csv"))
        before[stage] = root / f"before_{stage}"
        shutil.copytree(lake_dir, before[stage])
        run_curation(cfg, report=False)
    return Snapshots(before, lake_dir, models, overrides)


# ------------------------------------------------------------------------------------------------ comparison
VOLATILE = {"wall_s", "fitted_at", "requested_at", "rated_at", "captioned_at", "sampled_at", "created_at",
            "started_at", "finished_at", "decode_s", "caption_s", "sample_s", "latency_s"}


def table_rows(lake: Lake, table: str) -> dict[str, dict[str, Any]]:
    """``{key: row}`` of ``table`` without its volatile columns; raises on a duplicate key."""
    t = lake.read(table)
    keep = [c for c in t.column_names if c not in VOLATILE and not c.endswith("_at")]
    key = key_for(table)
    rows: dict[str, dict[str, Any]] = {}
    for row in t.select(keep).to_pylist():
        assert row[key] not in rows, f"{table}: key {row[key]!r} written twice"
        rows[row[key]] = row
    return rows


def half_columns(lake: Lake, table: str) -> set[str]:
    """Columns stored as float16 (or lists of it): they are compared within one float16 step."""
    def is_half(t: pa.DataType) -> bool:
        return pa.types.is_float16(t) or (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and \
            pa.types.is_float16(t.value_type)

    return {f.name for f in lake.read(table).schema if is_half(f.type)}


def _close(a: Any, b: Any, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel, abs_) for k in a)
    return a == b


def _same_row(got: dict[str, Any], want: dict[str, Any], half: set[str]) -> list[str]:
    """The columns whose values differ (float16 columns within 2**-10 relative, others 1e-5)."""
    return [c for c in want if not (_close(got.get(c), want[c], 2 ** -10, 1e-4) if c in half
                                    else _close(got.get(c), want[c]))]


def assert_same_rows(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]], table: str,
                     half: set[str] = frozenset()) -> None:
    """Same key set and, key by key, the same values (floats within a relative 1e-5; float16 within one step)."""
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    assert not missing and not extra, f"{table}: missing keys {missing[:5]}, extra keys {extra[:5]}"
    differ = [k for k in want if _same_row(got[k], want[k], half)]
    if differ:
        k = differ[0]
        cols = _same_row(got[k], want[k], half)
        raise AssertionError(f"{table}: {len(differ)} rows differ from the uninterrupted run, e.g. {k!r} in {cols}: "
                             f"{[got[k].get(c) for c in cols]} != {[want[k][c] for c in cols]}")
