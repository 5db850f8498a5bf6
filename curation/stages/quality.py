"""Stage ``quality``: the report's quality expert (3.1 "Scoring": clips sampled from each cluster are rated 1-5
by people, an expert model trained on all the ratings scores the whole corpus).

One run does what the lake allows, in order:

1. ``ratings_todo``: tops each cluster up to ``quality.ratings_per_cluster`` clips to be rated (clips already
   rated or already asked for count), with what a rating tool needs to show them (uri, frame span).
2. ``ratings`` (``rating_id``, ``clip_id``, ``rating`` 1-5, ``rater``; filled by ``import_ratings`` from a
   CSV/Parquet file, e.g. ``wan curate ratings import FILE --lake LAKE``): once at least ``quality.min_ratings``
   clips are rated, a regression head on the CLIP embeddings is trained (``curation.models.expert_head``,
   mean rating per clip as the target) and saved to ``quality.head_out``; it is retrained only when the
   ratings, the embed model or the head settings change. A trained ``quality.head`` can be named instead.
3. ``stages/quality``: the head's score for every embedded clip, by an actor pool; rows of an older head are
   recomputed.

Without enough ratings the stage stops after step 1 and says how many it is waiting for.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import QualityConfig
from curation.embeddings.lake_io import EmbedIndex
from curation.embeddings.ratings import (
    MAX_RATING,
    MIN_RATING,
    mean_ratings,
    sample_for_rating,
)
from curation.lake.schemas import EMBED_TABLE, STATUS_OK
from curation.lake.tables import KeyedWriter, Lake
from curation.stages.cluster import require_embeddings
from curation.stages.model_runner import ModelStageSpec, run_model_stage

log = logging.getLogger(__name__)

STAGE = "quality"
VERSION = "1"
TODO_TABLE = "ratings_todo"
RATINGS_TABLE = "ratings"


# --- 1. what to rate ---------------------------------------------------------------------------------------------

def write_ratings_todo(lake: Lake, cfg: QualityConfig) -> int:
    """Append clips to ``ratings_todo`` so every cluster has ``ratings_per_cluster`` rated or requested;
    returns how many were added."""
    if cfg.ratings_per_cluster == 0 or not lake.exists("stages/cluster"):
        return 0
    clusters = lake.read("stages/cluster", columns=["clip_id", "cluster_id"], filter=f"status = '{STATUS_OK}'")
    ids = clusters.column("clip_id").to_pylist()
    cids = clusters.column("cluster_id").to_pylist()
    asked = lake.keys(TODO_TABLE) | set(lake.read(RATINGS_TABLE, columns=["clip_id"]).column("clip_id").to_pylist())
    already: dict[int, int] = {}
    for cid, c in zip(ids, cids):
        if cid in asked:
            already[c] = already.get(c, 0) + 1
    picked = sample_for_rating(ids, cids, cfg.ratings_per_cluster, seed=cfg.seed, exclude=asked, already=already)
    if not picked:
        return 0
    meta = lake.read("clips", columns=["clip_id", "uri", "media_type", "start_frame", "end_frame"])
    by_id = {r["clip_id"]: r for r in meta.to_pylist()}
    now = dt.datetime.now(dt.UTC)
    rows = [{**by_id.get(ids[i], {"clip_id": ids[i]}), "cluster_id": cids[i], "requested_at": now} for i in picked]
    return KeyedWriter(lake, TODO_TABLE).append(rows)


# --- 2. ratings in, a head out -----------------------------------------------------------------------------------

def read_rating_file(path: str) -> pa.Table:
    """A CSV or Parquet file with columns ``clip_id``, ``rating`` and optionally ``rater``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ratings file not found: {p}")
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
    elif p.suffix.lower() in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        t = pcsv.read_csv(p, parse_options=pcsv.ParseOptions(delimiter="\t" if p.suffix.lower() == ".tsv" else ","),
                          convert_options=pcsv.ConvertOptions(column_types={"clip_id": pa.string(),
                                                                            "rater": pa.string()}))
    else:
        raise ValueError(f"ratings file must be .csv, .tsv or .parquet, got {p.name}")
    missing = [c for c in ("clip_id", "rating") if c not in t.column_names]
    if missing:
        raise ValueError(f"{p.name}: missing column(s) {missing}; expected clip_id, rating[, rater]")
    return t


def import_ratings(lake: Lake, path: str, rater: str | None = None) -> int:
    """Append the ratings of a file to the ``ratings`` table (a rater's second rating of a clip is ignored);
    returns how many were added. A row with an empty rating is a clip not rated yet and is skipped; ratings
    outside 1-5 and clip ids not in ``clips`` are errors naming them."""
    t = read_rating_file(path)
    blank = pc.is_null(t.column("rating"))
    if pc.any(blank).as_py():
        log.info("%s: %d rows without a rating skipped", path, pc.sum(blank).as_py())
        t = t.filter(pc.invert(blank))
    ids = [str(c) if c is not None else None for c in t.column("clip_id").to_pylist()]
    try:
        ratings = [None if r is None else float(r) for r in t.column("rating").to_pylist()]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(path).name}: ratings must be numbers {MIN_RATING}-{MAX_RATING}: {e}") from None
    mean_ratings([c or "<no clip_id>" for c in ids], ratings)  # validates the values
    known = lake.keys("clips")
    unknown = sorted({c for c in ids if c not in known}, key=str)
    if unknown:
        raise ValueError(f"{len(unknown)} clip id(s) not in the lake's clips table: {unknown[:5]}")
    raters = t.column("rater").to_pylist() if "rater" in t.column_names else [None] * len(ids)
    raters = [r if r is not None else (rater or "unnamed") for r in raters]
    now = dt.datetime.now(dt.UTC)
    rows = [{"rating_id": f"{c}:{who}", "clip_id": c, "rating": r, "rater": who, "rated_at": now}
            for c, r, who in zip(ids, ratings, raters)]
    return KeyedWriter(lake, RATINGS_TABLE).append(rows)


def _training_hash(ratings: dict[str, float], index: EmbedIndex, cfg: QualityConfig) -> str:
    blob = json.dumps({"ratings": sorted(ratings.items()), "embed": index.stage_versions,
                       "head": {k: getattr(cfg, k) for k in ("hidden", "epochs", "seed")}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def head_path(lake: Lake, cfg: QualityConfig) -> str:
    """Where the trained head is written (``quality.head_out``, else under a local lake)."""
    if cfg.head_out is not None:
        return cfg.head_out
    if not lake.is_local:
        raise ValueError("quality: set 'quality.head_out' (a local path) for a lake on an object store")
    return os.path.join(lake.root, "models", "quality_head.safetensors")


def train_quality_head(lake: Lake, index: EmbedIndex, cfg: QualityConfig) -> tuple[Any | None, dict[str, Any]]:
    """The head to score with and facts for the summary: ``quality.head`` when named; else a head trained on
    the ratings (reused from ``head_path`` when its training hash matches); None while ratings are too few."""
    from curation.models.expert_head import load_head, train_head

    if cfg.head is not None:
        head = load_head(cfg.head)
        if head.kind != "regression":
            raise ValueError(f"quality.head {cfg.head} is a {head.kind} head; the quality expert is a regression head")
        return head, {"head": cfg.head}
    ratings_t = lake.read(RATINGS_TABLE, columns=["clip_id", "rating"])
    ratings = mean_ratings(ratings_t.column("clip_id").to_pylist(), ratings_t.column("rating").to_pylist())
    position = dict(zip(index.clip_ids, index.positions.tolist()))
    rated = sorted(c for c in ratings if c in position)  # a rated clip whose embedding failed cannot train
    if len(rated) < cfg.min_ratings:
        return None, {"rated": len(rated), "waiting_for": cfg.min_ratings - len(rated)}
    out = head_path(lake, cfg)
    h = _training_hash({c: ratings[c] for c in rated}, index, cfg)
    if os.path.exists(out) and os.path.exists(Path(out).with_suffix(".json")):
        head = load_head(out)
        if head.info.get("training_hash") == h:
            return head, {"rated": len(rated), "head": out, "trained": False, **head.metrics}
    x = index.read([position[c] for c in rated])
    y = np.array([ratings[c] for c in rated], np.float32)
    log.info("quality: training the expert head on %d rated clips", len(rated))
    head = train_head(x, y, kind="regression", hidden=cfg.hidden, epochs=cfg.epochs, seed=cfg.seed,
                      info={"name": "quality", "training_hash": h, "rated_clips": len(rated),
                            "embed": list(index.stage_versions)})
    head.save(out)
    return head, {"rated": len(rated), "head": out, "trained": True, **head.metrics}


# --- 3. score every clip -----------------------------------------------------------------------------------------

class QualityScorer:
    """Actor model: the quality head on each clip's embedding."""

    def __init__(self, head: Any) -> None:
        self.head = head

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        if row.get("embedding") is None:
            raise ValueError("no embedding")
        return np.asarray(row["embedding"], np.float32)

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        return [{"quality": float(q)} for q in self.head.predict(np.stack(prepared))]


def head_version(head: Any) -> str:
    """``stage_version`` of rows scored by ``head`` (a hash of its weights)."""
    digest = hashlib.sha256()
    for t in head.net.state_dict().values():
        digest.update(t.detach().cpu().numpy().tobytes())
    digest.update(head.input_mean.tobytes() + head.input_std.tobytes())
    digest.update(f"{head.target_mean}:{head.target_std}".encode())
    return f"{VERSION}-{digest.hexdigest()[:12]}"


def run_quality(lake: Lake, cfg: QualityConfig, *, backend: str = "ray", commit_every: int = 1024) -> dict[str, Any]:
    """Steps 1-3 above; returns counts for the summary and ``runs``."""
    index = require_embeddings(lake, STAGE)
    if index is None or len(index) == 0:
        return {"in": 0, "ok": 0, "failed": 0, "todo_added": 0}
    added = write_ratings_todo(lake, cfg) if cfg.head is None else 0  # a named head needs no ratings
    counts: dict[str, Any] = {"todo_added": added, "todo_total": lake.count(TODO_TABLE)}
    head, facts = train_quality_head(lake, index, cfg)
    counts.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in facts.items()})
    if head is None:
        log.warning("quality: %d rated clips, %d more needed (quality.min_ratings=%d): rate the clips in %s and "
                    "import them into the ratings table", facts["rated"], facts["waiting_for"], cfg.min_ratings,
                    lake.uri(TODO_TABLE))
        return {"in": 0, "ok": 0, "failed": 0, **counts}
    if head.input_dim != index.read(index.positions[:1]).shape[1]:
        raise ValueError(f"quality head expects {head.input_dim}-wide embeddings; the embed table holds others")
    spec = ModelStageSpec(name=STAGE, version=head_version(head), make_model=functools.partial(QualityScorer, head),
                          input_table=EMBED_TABLE, input_columns=("clip_id", "embedding"),
                          batch_size=cfg.batch_size, concurrency=cfg.concurrency, num_gpus=cfg.num_gpus,
                          num_cpus=cfg.num_cpus)
    res = run_model_stage(lake, spec, backend=backend, commit_every=commit_every, record=False)
    st = res.status.get(spec.table, {})
    return {"in": res.count_in, "ok": st.get("ok", 0), "failed": st.get("error", 0), **counts,
            "total": lake.count(spec.table)}


def quality_by_clip(lake: Lake) -> dict[str, float]:
    """``{clip_id: quality}`` of the ok rows of ``stages/quality`` (empty when the stage has not run)."""
    t = lake.read("stages/quality", columns=["clip_id", "quality", "status"])
    t = t.filter(pc.equal(t.column("status"), STATUS_OK))
    return dict(zip(t.column("clip_id").to_pylist(), t.column("quality").to_pylist()))
