"""Near-duplicate grouping of clips by perceptual hash, scaling to millions of clips.

Two clips are near duplicates when the minimum Hamming distance over all pairs of their keyframe hashes
(``phash.phashes``) is ``<= max_distance``. Groups are the connected components of that relation.

Candidate search is banded LSH with an exactness guarantee (multi-index hashing, Norouzi et al. 2012):

* the 64 bits are split into ``m`` contiguous bands; if two hashes differ in ``<= d`` bits, the pigeonhole
  principle says at least one band differs in ``<= r = d // m`` bits;
* every hash is bucketed by each band's value (hashes sorted by band value plus a direct-address table of bucket
  offsets for bands up to 24 bits, ``searchsorted`` for wider ones), and for
  each band every bucket within ``r`` bit flips of a hash's own band value is probed;
* every candidate pair is verified with the exact Hamming distance (``numpy.bitwise_count``).

With ``m = d + 1`` (so ``r = 0``) this is the plain "d + 1 exact bands" scheme; that is what small inputs use. For
large inputs exact 7-bit bands are unselective (each bucket holds ``n / 128`` hashes), so ``m`` is chosen by a cost
model that trades probes (``m * sum_k<=r C(w, k)`` lookups per hash) against expected random collisions
(``n^2 * probes / 2^w``); e.g. for ``d = 8`` and a million hashes it picks ``m = 3`` bands of ~21 bits probed within
radius 2. Recall is exact for every ``m`` (tests compare with brute force).

Components are found with vectorised hook-and-compress union-find. In each group the member with the largest
``quality_keys`` entry is kept (ties: smallest ``clip_id``); the others are duplicates of it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

_CHUNK_PAIRS = 1 << 22
_DIRECT_BITS = 24  # bands up to this width use a direct-address table of 2**width bucket offsets


def _bands(m: int) -> list[tuple[int, int]]:
    """``m`` contiguous (shift, width) bands covering 64 bits, widths differing by at most one."""
    base, extra = divmod(64, m)
    out, lo = [], 0
    for b in range(m):
        w = base + (1 if b < extra else 0)
        out.append((lo, w))
        lo += w
    return out


def _num_probes(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def choose_num_bands(n_items: int, max_distance: int) -> int:
    """Number of bands minimising a rough cost model (lookups + expected random candidate pairs)."""
    best, best_cost = max_distance + 1, math.inf
    for m in range(1, min(max_distance + 1, 64) + 1):
        widths = [w for _, w in _bands(m)]
        r = max_distance // m
        probes = sum(_num_probes(w, r) for w in widths)
        lookups = probes * (400.0 + 4.0 * n_items)  # per-call overhead + lookup work
        collisions = 10.0 * sum(n_items * n_items * _num_probes(w, r) / 2.0**w for w in widths)
        cost = lookups + collisions
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _xor_masks(width: int, radius: int) -> np.ndarray:
    masks = [0]
    for k in range(1, min(radius, width) + 1):
        for bits in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.uint64)


def candidate_pairs(
    hashes: np.ndarray, owner: np.ndarray, max_distance: int, num_bands: int | None = None
) -> np.ndarray:
    """All owner pairs ``(i, j)``, ``i < j``, having some hash pair within ``max_distance`` bits.

    Args:
        hashes: ``(K,)`` uint64 hashes.
        owner: ``(K,)`` int64 index of the clip each hash belongs to.
    Returns:
        ``(P, 2)`` int64 unique pairs of owners.
    """
    k = len(hashes)
    if k < 2:
        return np.empty((0, 2), dtype=np.int64)
    m = num_bands if num_bands is not None else choose_num_bands(k, max_distance)
    radius = max_distance // m
    found: list[np.ndarray] = []
    item = np.arange(k, dtype=np.int64)
    for shift, width in _bands(m):
        mask = np.uint64((1 << width) - 1)
        v = (hashes >> np.uint64(shift)) & mask
        order = np.argsort(v, kind="stable")
        direct = width <= _DIRECT_BITS
        if direct:  # direct-address bucket table: O(1) lookups
            v = v.astype(np.int64)
            counts = np.bincount(v, minlength=1 << width)
            starts = np.cumsum(counts) - counts
        else:
            sv = v[order]
        for e in _xor_masks(width, radius):
            if direct:
                q = v ^ np.int64(e)
                left = starts[q]
                cnt = counts[q]
            else:
                q = v ^ e
                left = np.searchsorted(sv, q, side="left")
                cnt = np.searchsorted(sv, q, side="right") - left
            if e == 0:
                cnt_total = int(cnt.sum())
                if cnt_total == k:  # every bucket is a singleton (each hash only finds itself)
                    continue
            csum = np.cumsum(cnt)
            total = int(csum[-1]) if k else 0
            if total == 0:
                continue
            # Expand (item, bucket range) into pairs, in chunks of about _CHUNK_PAIRS.
            start = 0
            while start < k:
                base = int(csum[start - 1]) if start > 0 else 0
                stop = int(np.searchsorted(csum, base + _CHUNK_PAIRS, side="right"))
                stop = max(stop, start + 1)
                c = cnt[start:stop]
                n_pairs = int(c.sum())
                if n_pairs:
                    src = np.repeat(item[start:stop], c)
                    first = np.repeat(left[start:stop] - (np.cumsum(c) - c), c)
                    dst = order[first + np.arange(n_pairs, dtype=np.int64)]
                    oi, oj = owner[src], owner[dst]
                    keep = oi < oj
                    if keep.any():
                        src, dst, oi, oj = src[keep], dst[keep], oi[keep], oj[keep]
                        close = np.bitwise_count(hashes[src] ^ hashes[dst]) <= max_distance
                        if close.any():
                            found.append(np.stack([oi[close], oj[close]], axis=1))
                start = stop
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Root (smallest member index) of each of ``n`` nodes given undirected edges ``pairs`` (P, 2)."""
    parent = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return parent
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        pa, pb = parent[a], parent[b]
        if np.array_equal(pa, pb):
            return parent
        lo = np.minimum(pa, pb)
        np.minimum.at(parent, pa, lo)  # hook roots onto the smaller root (parents only ever decrease)
        np.minimum.at(parent, pb, lo)
        while True:  # pointer jumping until every node points at its root
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp


def find_near_duplicates(
    clip_ids: list[str],
    phashes: list[list[int]],
    quality_keys: list[tuple],
    max_distance: int = 8,
    num_bands: int | None = None,
) -> list[dict]:
    """Group clips whose keyframe hashes are within ``max_distance`` bits; keep the best of each group.

    Args:
        clip_ids: one id per clip (unique).
        phashes: per clip, its keyframe hashes (signed or unsigned 64-bit ints); an empty list never matches.
        quality_keys: per clip, a comparable key, larger = better (e.g. ``(width * height, duration_s)``).
        max_distance: max Hamming distance (0..32) between two hashes for the clips to be near duplicates.
        num_bands: force the number of LSH bands (default: chosen by a cost model; recall is exact either way).
    Returns:
        One dict per input clip, in input order: ``clip_id``, ``dup_group`` (the kept clip's id),
        ``duplicate_of`` (kept clip's id, ``None`` for the kept clip itself) and ``is_duplicate``.
    """
    n = len(clip_ids)
    if len(phashes) != n or len(quality_keys) != n:
        raise ValueError("clip_ids, phashes and quality_keys must have the same length")
    if not 0 <= max_distance <= 32:
        raise ValueError(f"max_distance must be in [0, 32], got {max_distance}")
    if num_bands is not None and not 1 <= num_bands <= 64:
        raise ValueError(f"num_bands must be in [1, 64], got {num_bands}")
    counts = np.fromiter((len(p) for p in phashes), dtype=np.int64, count=n)
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    flat = [int(h) & 0xFFFFFFFFFFFFFFFF for p in phashes for h in p]
    hashes = np.array(flat, dtype=np.uint64) if flat else np.empty(0, dtype=np.uint64)
    pairs = candidate_pairs(hashes, owner, max_distance, num_bands)
    root = connected_components(n, pairs)

    kept = list(range(n))  # kept[i] = index of the kept member of i's group
    if len(pairs):
        in_group = np.flatnonzero(root != np.arange(n))
        members: dict[int, list[int]] = {}
        for i in np.unique(np.concatenate([in_group, root[in_group]])).tolist():
            members.setdefault(int(root[i]), []).append(i)
        for group in members.values():
            group.sort(key=lambda i: clip_ids[i])
            best = max(group, key=lambda i: quality_keys[i])  # first max = smallest clip_id among ties
            for i in group:
                kept[i] = best
    out = []
    for i in range(n):
        k = kept[i]
        out.append(
            {
                "clip_id": clip_ids[i],
                "dup_group": clip_ids[k],
                "duplicate_of": None if k == i else clip_ids[k],
                "is_duplicate": k != i,
            }
        )
    return out
