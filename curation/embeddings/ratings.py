"""Human ratings for the quality expert (report 3.1 "Scoring": samples from each cluster rated 1-5 by people,
then an expert model trained on all of them scores the whole corpus).

``sample_for_rating`` picks the clips to rate, the same number from every cluster so that small clusters are
rated too; ``mean_ratings`` checks the ratings that come back and averages several raters of one clip.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MIN_RATING, MAX_RATING = 1, 5


def sample_for_rating(clip_ids: Sequence[str], cluster_ids: Sequence[int], per_cluster: int, seed: int = 0,
                      exclude: Iterable[str] = (), already: Mapping[int, int] | None = None) -> list[int]:
    """Row indices of up to ``per_cluster`` clips from each cluster (all of a smaller cluster), in a seeded
    random order, skipping clips in ``exclude`` (already rated or already asked for); ``already`` counts the
    clips a cluster has had rated or asked for before, which its share tops up to ``per_cluster``."""
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    already = already or {}
    skip = set(exclude)
    rng = np.random.default_rng(seed)
    by_cluster: dict[int, list[int]] = {}
    for i, (cid, c) in enumerate(zip(clip_ids, cluster_ids)):
        if cid not in skip:
            by_cluster.setdefault(int(c), []).append(i)
    picked: list[int] = []
    for c in sorted(by_cluster):
        rows = np.array(sorted(by_cluster[c], key=lambda i: clip_ids[i]))  # independent of table row order
        want = max(0, per_cluster - int(already.get(c, 0)))
        picked += rows[rng.permutation(len(rows))[:want]].tolist()
    return sorted(picked)


def mean_ratings(clip_ids: Sequence[str], ratings: Sequence[float | int | None]) -> dict[str, float]:
    """``{clip_id: mean rating}``; raises ``ValueError`` naming the clips whose rating is missing or outside
    1..5 (a typo in a rating file must not silently train the expert)."""
    bad = [(c, r) for c, r in zip(clip_ids, ratings)
           if r is None or not np.isfinite(r) or not MIN_RATING <= r <= MAX_RATING]
    if bad:
        shown = ", ".join(f"{c}={r}" for c, r in bad[:5])
        raise ValueError(f"{len(bad)} rating(s) missing or outside {MIN_RATING}..{MAX_RATING}: {shown}")
    sums: dict[str, list[float]] = {}
    for c, r in zip(clip_ids, ratings):
        sums.setdefault(c, []).append(float(r))
    return {c: float(np.mean(v)) for c, v in sums.items()}
