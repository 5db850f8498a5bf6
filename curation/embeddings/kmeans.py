"""Spherical k-means over L2-normalised embeddings: greedy k-means++ seeding, Lloyd iterations in faiss
(default) or torch (fallback when faiss is missing, or on request), then centroid swaps that undo Lloyd's
split-a-big-cluster / merge-two-small-ones optima, which would otherwise lose exactly the long tail that
clustering is meant to keep. Assignment is a plain nearest-centroid argmax, cheap enough to run as a distributed
pass over every row once the centroids are fitted on a sample.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

Backend = Literal["auto", "faiss", "torch"]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32); an all-zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def kmeans_plus_plus(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii; the greedy variant sklearn uses): each step draws
    ``2 + log(k)`` candidates with probability proportional to their squared distance from the nearest seed so
    far and keeps the one that lowers the total most. Plain k-means++ often puts two seeds in one planted
    cluster and none in another, a state Lloyd's iterations cannot leave."""
    n = x.shape[0]
    trials = 2 + int(np.log(n_clusters))
    seeds = np.empty((n_clusters, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    seeds[0] = x[first]
    sq_norms = np.einsum("ij,ij->i", x, x)
    closest = np.maximum(sq_norms - 2 * x @ x[first] + sq_norms[first], 0.0)
    for k in range(1, n_clusters):
        total = float(closest.sum())
        if total <= 0:
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
            cand = np.minimum(cand, n - 1)
        d = np.maximum(sq_norms[:, None] - 2 * x @ x[cand].T + sq_norms[cand][None, :], 0.0)
        pot = np.minimum(closest[:, None], d).sum(axis=0)
        best = int(pot.argmin())
        seeds[k] = x[cand[best]]
        np.minimum(closest, d[:, best], out=closest)
    return seeds


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def fit_kmeans(x: np.ndarray, n_clusters: int, *, niter: int = 20, n_init: int = 1, max_swaps: int = 10,
               seed: int = 0, backend: Backend = "auto") -> np.ndarray:
    """Centroids (``n_clusters`` x D, unit length, float32) of spherical k-means on the rows of ``x``: the best
    (highest total cosine similarity) of ``n_init`` runs from different k-means++ seeds, each improved by up to
    ``max_swaps`` centroid swaps (``refine_by_swaps``).

    Raises ``ValueError`` when there are fewer rows than clusters or the rows hold a NaN/inf."""
    x = np.ascontiguousarray(l2_normalize(x))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("k-means input holds NaN or inf values")
    if x.shape[0] < n_clusters:
        raise ValueError(f"k-means: {x.shape[0]} rows is fewer than n_clusters={n_clusters}")
    if n_init < 1 or niter < 1:
        raise ValueError(f"k-means needs n_init >= 1 and niter >= 1, got {n_init} and {niter}")
    if backend == "auto":
        backend = "faiss" if _faiss_available() else "torch"
    if backend not in ("faiss", "torch"):
        raise ValueError(f"unknown k-means backend {backend!r}; use 'auto', 'faiss' or 'torch'")
    rng = np.random.default_rng(seed)
    best, best_fit = None, -np.inf
    for run in range(n_init):
        init = kmeans_plus_plus(x, n_clusters, rng)
        lloyd = (lambda c, r=run: _fit_faiss(x, c, niter, seed + r)) if backend == "faiss" \
            else (lambda c: _fit_torch(x, c, niter))
        cent, fit = refine_by_swaps(x, lloyd(init), lloyd, max_swaps)
        if fit > best_fit:
            best, best_fit = cent, fit
    return best


def refine_by_swaps(x: np.ndarray, centroids: np.ndarray, lloyd: Callable[[np.ndarray], np.ndarray],
                    max_swaps: int) -> tuple[np.ndarray, float]:
    """Local search over Lloyd's optima (after Kanungo et al.'s swap heuristic): move the centroid whose removal
    costs least (its points fit their second-nearest centroid almost as well: it splits a big cluster) to the
    worst-fitting point (likely in a small cluster merged into another), re-run Lloyd, keep the result when the
    total similarity rises. Lloyd alone keeps such a split/merge pair forever, and the merged cluster is
    exactly the long tail that clustering is meant to protect. Returns the centroids and their total fit."""
    fit = float(assign_clusters(x, centroids)[1].sum())
    if centroids.shape[0] < 2:
        return centroids, fit
    for _ in range(max_swaps):
        sims = x @ centroids.T
        top2 = np.partition(sims, -2, axis=1)[:, -2:]
        best_id = sims.argmax(axis=1)
        removal_cost = np.bincount(best_id, weights=top2[:, 1] - top2[:, 0], minlength=len(centroids))
        victim = int(removal_cost.argmin())
        worst_point = int(top2[:, 1].argmin())
        trial = centroids.copy()
        trial[victim] = x[worst_point]
        trial = lloyd(trial)
        trial_fit = float(assign_clusters(x, trial)[1].sum())
        if trial_fit <= fit + 1e-6 * abs(fit):
            break
        centroids, fit = trial, trial_fit
    return centroids, fit


def _fit_faiss(x: np.ndarray, init: np.ndarray, niter: int, seed: int) -> np.ndarray:
    import faiss

    k, d = init.shape
    # The caller already sampled: no faiss sub-sampling, no warning about few points per centroid.
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(1, -(-x.shape[0] // k)), min_points_per_centroid=1)
    km.train(x, init_centroids=init)
    return l2_normalize(km.centroids)


def _fit_torch(x: np.ndarray, init: np.ndarray, niter: int) -> np.ndarray:
    import torch

    xt = torch.from_numpy(x)
    cent = torch.from_numpy(init.copy())
    k = cent.shape[0]
    for _ in range(niter):
        sims = xt @ cent.T
        best_sim, assign = sims.max(dim=1)
        sums = torch.zeros_like(cent).index_add_(0, assign, xt)
        counts = torch.bincount(assign, minlength=k)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # re-seed an empty cluster with the points its neighbours fit worst
            worst = torch.argsort(best_sim)[: len(empty)]
            sums[empty] = xt[worst]
        new = torch.nn.functional.normalize(sums, dim=1)
        if torch.allclose(new, cent, atol=1e-7):
            cent = new
            break
        cent = new
    return cent.numpy().astype(np.float32)


def assign_clusters(x: np.ndarray, centroids: np.ndarray, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row by cosine similarity: ``(cluster_id int32, similarity float32)``.

    Rows are normalised first, so fp16 embeddings read from the lake work as they are."""
    x = l2_normalize(x)
    ids = np.empty(x.shape[0], dtype=np.int32)
    sims = np.empty(x.shape[0], dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32).T
    for start in range(0, x.shape[0], batch_size):
        s = x[start:start + batch_size] @ c
        ids[start:start + batch_size] = s.argmax(axis=1)
        sims[start:start + batch_size] = s.max(axis=1)
    return ids, sims
