"""Stage ``split``, after ``select``: the embedding-based selection over ``curated``.

1. Semantic near-duplicates (``stages/semantic_dedup``) are rejected (``semantic_duplicate``).
2. Pretraining sample per cluster (report 3.1: "select a certain amount of data from each cluster"): with
   ``split.max_per_cluster`` and/or ``split.pretrain_budget``, each cluster keeps its quota of kept clips, best
   quality first; a small cluster keeps all of its clips (``water_fill``), the rest get ``cluster_quota``.
3. Post-training subsets (report 3.2, ``curation.embeddings.post_train``) in the ``split`` column.

``cluster_id``, ``quality`` and the category/style go into ``curated`` (the latter two in ``scores_json``).
Idempotent: the reasons this stage adds are recomputed on each run, so re-running ``split`` alone with other
settings needs no re-run of ``select``; re-running ``select`` rewrites ``curated`` and needs ``split`` again.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import SplitConfig
from curation.embeddings.post_train import PostTrainRules, select_post_training
from curation.embeddings.quotas import capped, group_counts, take_by_quota, water_fill
from curation.lake.schemas import CURATED, STATUS_OK
from curation.lake.tables import Lake

STAGE = "split"
SEMANTIC_DUPLICATE = "semantic_duplicate"
CLUSTER_QUOTA = "cluster_quota"
_OWN_REASONS = (SEMANTIC_DUPLICATE, CLUSTER_QUOTA)


def _ok_columns(lake: Lake, stage: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    """``{column: {clip_id: value}}`` from the ok rows of ``stages/<stage>`` (empty when it does not exist)."""
    t = lake.read(f"stages/{stage}", columns=["clip_id", "status", *columns])
    t = t.filter(pc.equal(t.column("status"), STATUS_OK))
    ids = t.column("clip_id").to_pylist()
    return {c: dict(zip(ids, t.column(c).to_pylist())) for c in columns}


def cluster_quotas(counts: dict[Any, int], cfg: SplitConfig) -> dict[Any, int] | None:
    """Kept clips allowed per cluster, or None when no quota is configured."""
    if cfg.max_per_cluster is None and cfg.pretrain_budget is None:
        return None
    quotas = dict(counts)
    if cfg.max_per_cluster is not None:
        quotas = capped(quotas, cfg.max_per_cluster)
    if cfg.pretrain_budget is not None:
        quotas = water_fill(quotas, cfg.pretrain_budget)
    return quotas


def rules_from(cfg: SplitConfig) -> PostTrainRules:
    return PostTrainRules(top_fraction=cfg.top_fraction, group_by=tuple(cfg.group_by),
                          simple_motion_tiers=tuple(cfg.simple_motion_tiers),
                          complex_motion_tiers=tuple(cfg.complex_motion_tiers), max_images=cfg.max_images,
                          max_simple_videos=cfg.max_simple_videos, max_complex_videos=cfg.max_complex_videos,
                          seed=cfg.seed)


def split_rows(rows: list[dict[str, Any]], cluster: dict[str, int], quality: dict[str, float],
               duplicate: dict[str, bool], category: dict[str, str], style: dict[str, str],
               cfg: SplitConfig) -> list[dict[str, Any]]:
    """``curated`` rows with this stage's reasons, ``keep``, ``cluster_id``, ``quality`` and ``split`` set."""
    out = []
    for r in sorted(rows, key=lambda row: row["clip_id"]):  # seeded tie-breaks must not depend on row order
        cid = r["clip_id"]
        reasons = [x for x in (r["reject_reasons"] or []) if x not in _OWN_REASONS]
        if cfg.reject_semantic_duplicates and duplicate.get(cid):
            reasons.append(SEMANTIC_DUPLICATE)
        out.append({**r, "reject_reasons": reasons, "cluster_id": cluster.get(cid), "quality": quality.get(cid)})
    kept = [i for i, r in enumerate(out) if not r["reject_reasons"]]
    quotas = cluster_quotas(group_counts([out[i]["cluster_id"] for i in kept]), cfg)
    if quotas is not None:
        taken = take_by_quota([out[i]["cluster_id"] for i in kept], [out[i]["quality"] for i in kept], quotas,
                              cfg.seed)
        for i, t in zip(kept, taken):
            if not t:
                out[i]["reject_reasons"].append(CLUSTER_QUOTA)
    for r in out:
        r["keep"] = not r["reject_reasons"]
    splits = select_post_training([r["keep"] for r in out], [r["media_type"] for r in out],
                                  [r["quality"] for r in out], [category.get(r["clip_id"]) for r in out],
                                  [style.get(r["clip_id"]) for r in out], [r["motion_tier"] for r in out],
                                  rules_from(cfg))
    for r, s in zip(out, splits):
        r["split"] = s
        scores = json.loads(r["scores_json"] or "{}")
        extra = {"cluster.cluster_id": r["cluster_id"], "quality.quality": r["quality"],
                 "category.category": category.get(r["clip_id"]), "category.style": style.get(r["clip_id"])}
        scores.update({k: v for k, v in extra.items() if v is not None})
        r["scores_json"] = json.dumps(scores, sort_keys=True, default=float)
    return out


def run_split(lake: Lake, cfg: SplitConfig) -> dict[str, Any]:
    """Rewrite ``curated`` with this stage's decisions; returns counts (kept, rejected, per split)."""
    if not lake.exists("curated"):
        raise RuntimeError("split runs over the 'curated' table: run stage 'select' first")
    rows = lake.read("curated").to_pylist()
    cluster = _ok_columns(lake, "cluster", ["cluster_id"])["cluster_id"]
    quality = _ok_columns(lake, "quality", ["quality"])["quality"]
    duplicate = _ok_columns(lake, "semantic_dedup", ["is_duplicate"])["is_duplicate"]
    labels = _ok_columns(lake, "category", ["category", "style"])
    out = split_rows(rows, cluster, quality, duplicate, labels["category"], labels["style"], cfg)
    lake.overwrite("curated", pa.Table.from_pylist(out, schema=CURATED))
    kept = sum(r["keep"] for r in out)
    reasons = Counter(x for r in out for x in r["reject_reasons"] if x in _OWN_REASONS)
    splits = Counter(r["split"] for r in out if r["split"] is not None)
    return {"in": len(out), "kept": kept, "rejected": len(out) - kept,
            "failed": sum(any(x.startswith("error:") for x in r["reject_reasons"]) for r in out),
            **{k: reasons.get(k, 0) for k in _OWN_REASONS}, **dict(sorted(splits.items()))}
