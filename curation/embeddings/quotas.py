"""Per-group quotas for sampling (report 3.1: "select a certain amount of data from each cluster" so that
long-tail clusters are not lost; 3.2: "category balance").

``water_fill`` spends a budget across groups the way a long tail needs: every group gets the same cap, a group
smaller than the cap is kept whole, and what small groups leave unused goes to the large ones. ``take_by_quota``
then picks each group's rows, best score first.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np


def water_fill(counts: dict[Hashable, int], budget: int) -> dict[Hashable, int]:
    """Quota per group: ``min(count, cap)`` with the largest cap whose total fits ``budget``; the rows left
    over (budget not divisible) go one each to the largest groups still above the cap. Totals
    ``min(budget, sum(counts))``."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if any(n < 0 for n in counts.values()):
        raise ValueError("group counts must be >= 0")
    total = sum(counts.values())
    if budget >= total:
        return dict(counts)
    remaining, cap = budget, 0
    ordered = sorted(counts.values())
    for i, n in enumerate(ordered):
        groups_left = len(ordered) - i
        if n * groups_left <= remaining:  # this group (and every smaller one) fits whole
            remaining -= n
            continue
        cap = remaining // groups_left
        break
    quotas = {g: min(n, cap) for g, n in counts.items()}
    left = budget - sum(quotas.values())
    # Deterministic: largest groups first, then by group key text.
    for g in sorted((g for g, n in counts.items() if n > cap), key=lambda g: (-counts[g], str(g)))[:left]:
        quotas[g] += 1
    return quotas


def capped(counts: dict[Hashable, int], cap: int) -> dict[Hashable, int]:
    """Quota per group: at most ``cap`` rows, small groups whole."""
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    return {g: min(n, cap) for g, n in counts.items()}


def take_by_quota(groups: Sequence[Hashable], scores: Sequence[float | None] | None,
                  quotas: dict[Hashable, int], seed: int = 0) -> np.ndarray:
    """Boolean mask of the rows taken: per group, its quota of rows with the highest score (a missing score
    ranks last; ties and score-less groups in a seeded random order)."""
    n = len(groups)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(n)
    score = np.full(n, -np.inf)
    if scores is not None:
        score = np.array([-np.inf if s is None or not np.isfinite(s) else float(s) for s in scores])
    taken = np.zeros(n, dtype=bool)
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for g, rows in by_group.items():
        q = quotas.get(g, 0)
        if q <= 0:
            continue
        rows_arr = np.array(rows)
        order = np.lexsort((tiebreak[rows_arr], -score[rows_arr]))
        taken[rows_arr[order[:q]]] = True
    return taken


def group_counts(groups: Sequence[Hashable]) -> dict[Hashable, int]:
    """``{group: rows}``."""
    return dict(Counter(groups))
