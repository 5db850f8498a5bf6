"""Post-training selection (report 3.2) over kept clips that have a quality score.

* Images: the top ``top_fraction`` (20%) by expert quality score within each category/style group, so every
  group contributes; then, when a budget is set, category-balanced sampling (``water_fill`` across categories,
  best quality first).
* Videos: the same top fraction by quality per group; then split by motion tier into simple and complex motion
  (tiers named in config: by default ``optimal``, one clear subject moving cleanly, is simple, and ``medium``,
  several subjects or occlusion, is complex); each set category-balanced under its own budget.

Split values written to ``curated.split`` (``SPLITS``): ``pretrain`` for a kept clip not picked for
post-training, ``posttrain_image`` / ``posttrain_simple`` / ``posttrain_complex`` for a picked one, null for a
rejected clip. The pretraining set is every kept row; a post-training row is also kept.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from curation.embeddings.quotas import group_counts, take_by_quota, water_fill

PRETRAIN = "pretrain"
POSTTRAIN_IMAGE = "posttrain_image"
POSTTRAIN_SIMPLE = "posttrain_simple"
POSTTRAIN_COMPLEX = "posttrain_complex"
SPLITS = (PRETRAIN, POSTTRAIN_IMAGE, POSTTRAIN_SIMPLE, POSTTRAIN_COMPLEX)


@dataclass(frozen=True)
class PostTrainRules:
    """The knobs of the selection (mirrors the ``post_train`` config section)."""

    top_fraction: float = 0.2
    group_by: tuple[str, ...] = ("category", "style")
    simple_motion_tiers: tuple[str, ...] = ("optimal",)
    complex_motion_tiers: tuple[str, ...] = ("medium",)
    max_images: int | None = None
    max_simple_videos: int | None = None
    max_complex_videos: int | None = None
    seed: int = 0


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def top_fraction_per_group(groups: Sequence[Hashable], quality: Sequence[float | None],
                           fraction: float) -> np.ndarray:
    """Mask of the best ``ceil(fraction * n)`` rows by quality within each group of ``n`` scored rows
    (ceil: a small group still gives its best row). Unscored rows are never taken."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    scored = [i for i, q in enumerate(quality) if _finite(q)]
    counts = group_counts([groups[i] for i in scored])
    quotas = {g: math.ceil(fraction * n) for g, n in counts.items()}
    mask = np.zeros(len(groups), dtype=bool)
    taken = take_by_quota([groups[i] for i in scored], [quality[i] for i in scored], quotas)
    mask[np.array(scored, dtype=np.int64)[taken]] = True
    return mask


def balanced(mask: np.ndarray, categories: Sequence[Hashable], quality: Sequence[float | None],
             budget: int | None, seed: int) -> np.ndarray:
    """``mask`` cut to ``budget`` rows spread evenly over categories (a small category whole), best first."""
    if budget is None or mask.sum() <= budget:
        return mask
    rows = np.nonzero(mask)[0]
    cats = [categories[i] for i in rows]
    quotas = water_fill(group_counts(cats), budget)
    out = np.zeros_like(mask)
    out[rows[take_by_quota(cats, [quality[i] for i in rows], quotas, seed)]] = True
    return out


def select_post_training(keep: Sequence[bool], media_type: Sequence[str | None], quality: Sequence[float | None],
                         category: Sequence[str | None], style: Sequence[str | None],
                         motion_tier: Sequence[str | None], rules: PostTrainRules) -> list[str | None]:
    """The ``split`` value of every row (see the module docstring)."""
    n = len(keep)
    if not all(len(col) == n for col in (media_type, quality, category, style, motion_tier)):
        raise ValueError("select_post_training: columns of different lengths")
    columns = {"category": category, "style": style}
    unknown = [g for g in rules.group_by if g not in columns]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; known: {sorted(columns)}")
    groups = [tuple(columns[g][i] for g in rules.group_by) for i in range(n)]
    kept = np.array([bool(k) for k in keep])
    is_image = np.array([m == "image" for m in media_type]) & kept
    is_video = kept & ~is_image
    splits: list[str | None] = [PRETRAIN if k else None for k in kept]

    def pick(pool: np.ndarray) -> np.ndarray:
        q = [quality[i] if pool[i] else None for i in range(n)]
        return top_fraction_per_group(groups, q, rules.top_fraction)

    images = balanced(pick(is_image), category, quality, rules.max_images, rules.seed)
    top_videos = pick(is_video)
    tiers = np.array([t if t is not None else "" for t in motion_tier], dtype=object)
    simple = balanced(top_videos & np.isin(tiers, list(rules.simple_motion_tiers)), category, quality,
                      rules.max_simple_videos, rules.seed)
    complex_ = balanced(top_videos & np.isin(tiers, list(rules.complex_motion_tiers)), category, quality,
                        rules.max_complex_videos, rules.seed)
    for mask, value in ((images, POSTTRAIN_IMAGE), (simple, POSTTRAIN_SIMPLE), (complex_, POSTTRAIN_COMPLEX)):
        for i in np.nonzero(mask)[0]:
            splits[i] = value
    return splits
