"""Stage ``semantic_dedup``: near-duplicates by CLIP cosine similarity, searched within each k-means cluster
(faiss inner-product range search), keeping the best-quality member (``curation.embeddings.semantic_dedup``).

Global by nature, so it rewrites ``stages/semantic_dedup`` whole. The driver handles only keys and positions:
each cluster is one Ray Data task that reads its own embeddings from a pinned version of ``stages/embed``.
Ties in quality (or no quality stage) go to the larger clip (pixels x seconds), then the clip id.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import SemanticDedupConfig
from curation.embeddings.lake_io import read_embeddings
from curation.embeddings.semantic_dedup import dedup_group
from curation.lake.schemas import STATUS_OK, stage_schema
from curation.lake.tables import Lake
from curation.stages.cluster import require_embeddings
from curation.stages.quality import quality_by_clip

log = logging.getLogger(__name__)

STAGE = "semantic_dedup"
VERSION = "1"

_WORK = pa.schema([
    ("cluster_id", pa.int32()), ("positions", pa.list_(pa.int64())), ("clip_ids", pa.list_(pa.string())),
    ("quality", pa.list_(pa.float32())), ("size", pa.list_(pa.float64())),
])


def dedup_clusters(work: pa.Table, uri: str, version: int, threshold: float,
                   storage_options: dict[str, str] | None = None) -> pa.Table:
    """``stages/semantic_dedup`` rows for a batch of clusters (one work row each)."""
    rows = []
    for item in work.to_pylist():
        x = read_embeddings(uri, version, item["positions"], storage_options)
        for d in dedup_group(item["clip_ids"], x, item["quality"], threshold, tie_break=item["size"]):
            rows.append({"clip_id": d.clip_id, "dup_group": d.dup_group, "duplicate_of": d.duplicate_of,
                         "is_duplicate": d.is_duplicate, "similarity": d.similarity,
                         "cluster_id": item["cluster_id"], "stage_version": VERSION, "status": STATUS_OK})
    return pa.Table.from_pylist(rows, schema=stage_schema(STAGE))


def run_semantic_dedup(lake: Lake, cfg: SemanticDedupConfig, *, backend: str = "ray") -> dict[str, Any]:
    """Rewrite ``stages/semantic_dedup``; returns ``{"in", "duplicates", "groups", "clusters"}``."""
    index = require_embeddings(lake, STAGE)
    if index is None or len(index) == 0:
        lake.overwrite(f"stages/{STAGE}", stage_schema(STAGE).empty_table())
        return {"in": 0, "duplicates": 0, "groups": 0}
    if not lake.exists("stages/cluster"):
        raise RuntimeError("semantic_dedup needs the 'cluster' stage's table: run stage 'cluster' first")
    clusters = lake.read("stages/cluster", columns=["clip_id", "cluster_id"], filter=f"status = '{STATUS_OK}'")
    cluster_of = dict(zip(clusters.column("clip_id").to_pylist(), clusters.column("cluster_id").to_pylist()))
    quality = quality_by_clip(lake)
    meta = lake.read("clips", columns=["clip_id", "width", "height", "duration_s"])
    size = {c: float((w or 0) * (h or 0)) * max(float(d or 0.0), 1e-3)
            for c, w, h, d in zip(*(meta.column(n).to_pylist() for n in meta.column_names))}
    groups: dict[int, list[int]] = {}
    for k, cid in enumerate(index.clip_ids):
        if cid in cluster_of:
            groups.setdefault(int(cluster_of[cid]), []).append(k)
    work = [{"cluster_id": c, "positions": index.positions[ks].tolist(),
             "clip_ids": [index.clip_ids[k] for k in ks],
             "quality": [quality.get(index.clip_ids[k]) for k in ks],
             "size": [size.get(index.clip_ids[k], 0.0) for k in ks]}
            for c, ks in sorted(groups.items())]
    args = (index.uri, index.version, cfg.threshold, index.storage_options)
    if backend == "local":
        parts = [dedup_clusters(pa.Table.from_pylist([w], schema=_WORK), *args) for w in work]
    elif backend == "ray":
        import ray.data

        ds = ray.data.from_arrow([pa.Table.from_pylist([w], schema=_WORK) for w in work]).map_batches(
            dedup_clusters, fn_args=args, batch_size=None, batch_format="pyarrow", num_cpus=1,
            concurrency=cfg.concurrency)
        parts = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    else:
        raise ValueError(f"unknown backend {backend!r}")
    schema = stage_schema(STAGE)
    out = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
    out = out.sort_by("clip_id")
    lake.overwrite(f"stages/{STAGE}", out)
    dup = np.array(out.column("is_duplicate").to_pylist(), dtype=bool)
    kept_groups = {g for g, d in zip(out.column("dup_group").to_pylist(), dup) if g is not None and d}
    return {"in": out.num_rows, "duplicates": int(dup.sum()), "groups": len(kept_groups),
            "clusters": len(work), "unclustered": len(index) - out.num_rows}
