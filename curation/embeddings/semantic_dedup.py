"""Semantic near-duplicates: pairs of clips whose CLIP embeddings have cosine similarity at or above a
threshold, searched within each k-means cluster (faiss inner-product range search), so the cost is the sum of
squared cluster sizes instead of the square of the corpus.

In each set of near-duplicates the best member is kept: clips are visited best first (highest quality, then the
caller's tie-break, then clip id), a clip is kept unless it is near a clip already kept, and a dropped clip
records the most similar kept clip as ``duplicate_of``. Keeping against kept clips only (not against dropped
ones) stops a chain a~b~c from dropping c when c is not itself near a.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curation.embeddings.kmeans import l2_normalize


@dataclass(frozen=True)
class DedupDecision:
    """One clip's outcome: ``duplicate_of`` is the kept clip it nearly duplicates (None when kept);
    ``dup_group`` the kept clip of its set (None for a clip with no near-duplicate); ``similarity`` the
    cosine similarity to ``duplicate_of`` (or to its nearest dropped duplicate, for a kept clip)."""

    clip_id: str
    dup_group: str | None
    duplicate_of: str | None
    similarity: float | None

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None


def similar_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of rows of ``x`` (unit length) with inner product >= ``threshold``:
    ``(i, j, similarity)``."""
    n = x.shape[0]
    if n < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # faiss keeps results strictly above the radius; step just below the threshold to keep "at or above".
    lims, sims, idx = index.range_search(x, float(np.nextafter(np.float32(threshold), np.float32(-np.inf))))
    rows = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    keep = rows < idx
    return rows[keep], idx[keep].astype(np.int64), sims[keep]


def dedup_group(clip_ids: Sequence[str], embeddings: np.ndarray, quality: Sequence[float | None] | None,
                threshold: float, tie_break: Sequence[float] | None = None) -> list[DedupDecision]:
    """Decisions for one cluster's clips (see the module docstring for the rule)."""
    n = len(clip_ids)
    if embeddings.shape[0] != n:
        raise ValueError(f"{n} clip ids but {embeddings.shape[0]} embeddings")
    x = np.ascontiguousarray(l2_normalize(embeddings))
    i, j, s = similar_pairs(x, threshold)
    neighbours: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for a, b, sim in zip(i.tolist(), j.tolist(), s.tolist()):
        neighbours[a].append((b, sim))
        neighbours[b].append((a, sim))
    q = np.array([-np.inf if v is None or not np.isfinite(v) else float(v) for v in quality]) \
        if quality is not None else np.zeros(n)
    tb = np.asarray(tie_break, dtype=np.float64) if tie_break is not None else np.zeros(n)
    order = sorted(range(n), key=lambda k: (-q[k], -tb[k], clip_ids[k]))
    kept: set[int] = set()
    dup_of: dict[int, tuple[int, float]] = {}
    for k in order:
        near_kept = [(m, sim) for m, sim in neighbours[k] if m in kept]
        if near_kept:
            dup_of[k] = max(near_kept, key=lambda t: (t[1], -t[0]))
        else:
            kept.add(k)
    best_dup_sim: dict[int, float] = {}
    for k, (m, sim) in dup_of.items():
        best_dup_sim[m] = max(best_dup_sim.get(m, -1.0), sim)
    out = []
    for k in range(n):
        if k in dup_of:
            m, sim = dup_of[k]
            out.append(DedupDecision(clip_ids[k], clip_ids[m], clip_ids[m], float(sim)))
        elif k in best_dup_sim:
            out.append(DedupDecision(clip_ids[k], clip_ids[k], None, float(best_dup_sim[k])))
        else:
            out.append(DedupDecision(clip_ids[k], None, None, None))
    return out


def find_semantic_duplicates(clip_ids: Sequence[str], embeddings: np.ndarray, cluster_ids: Sequence[int],
                             quality: Sequence[float | None] | None, threshold: float,
                             tie_break: Sequence[float] | None = None) -> list[DedupDecision]:
    """Decisions for every clip, searching near-duplicates within each cluster; same order as ``clip_ids``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"similarity threshold must be in (0, 1], got {threshold}")
    clusters = np.asarray(cluster_ids)
    out: list[DedupDecision | None] = [None] * len(clip_ids)
    for c in np.unique(clusters):
        rows = np.nonzero(clusters == c)[0]
        decisions = dedup_group([clip_ids[r] for r in rows], embeddings[rows],
                                None if quality is None else [quality[r] for r in rows], threshold,
                                None if tie_break is None else [tie_break[r] for r in rows])
        for r, d in zip(rows, decisions):
            out[r] = d
    return [d for d in out if d is not None]
