"""Which global batch each training step takes (the DiT's latents, the VAE's clips): bucket-homogeneous batches, epochs, and the stage's media mix.

A **stream** is a set of buckets with its own epochs: each epoch shuffles every bucket's rows from (seed, epoch),
cuts them into full global batches (a bucket's last rows short of a batch wait for a later epoch's shuffle) and
shuffles the batches. Without a mix there is one stream over all buckets and step ``s`` is its batch ``s``. With a
curriculum stage's ``mix`` (``{"image": 0.5, "video": 0.5}``) there is one stream per media type, and each step
picks a stream with the mix's probabilities from a generator seeded by (seed, block of steps); step ``s`` takes
the next batch of the stream it picked. Everything is a function of the step, so the step is the whole data
position: resume is exact, and within each stream's epoch no sample is seen twice or skipped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Batch", "EpochPlan", "RowGroups"]

BLOCK = 4096  # stream choices are drawn in blocks of steps


@dataclass(frozen=True)
class Batch:
    step: int
    epoch: int  # of its stream
    bucket: str
    rows: tuple[int, ...]  # positions in LatentIndex.rows, the whole global batch
    stream: str = "all"  # the media type with a mix


@dataclass(frozen=True)
class RowGroups:
    """What a plan needs of an index: the bucket names and each bucket's row positions (the DiT's
    ``LatentIndex`` has the same two attributes). ``single(n)``: one bucket of rows ``0..n-1`` (the VAE's clips)."""

    buckets: list[str]
    by_bucket: dict[str, list[int]]

    @classmethod
    def single(cls, rows: int, name: str = "all") -> RowGroups:
        return cls([name], {name: list(range(rows))})


class _Stream:
    def __init__(self, name: str, index: Any, buckets: Sequence[str], global_batch: int, seed: int,
                 salt: Sequence[int]) -> None:
        self.name, self.index, self.buckets, self.global_batch = name, index, list(buckets), global_batch
        self.seed, self.salt = seed, list(salt)
        self.per_epoch = sum(len(index.by_bucket[b]) // global_batch for b in self.buckets)
        self._cache: tuple[int, list[tuple[str, tuple[int, ...]]]] | None = None

    def epoch(self, epoch: int) -> list[tuple[str, tuple[int, ...]]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = []
        for bucket in self.buckets:
            b = self.index.buckets.index(bucket)
            members = np.array(self.index.by_bucket[bucket])
            order = members[np.random.default_rng([self.seed, epoch, b]).permutation(len(members))]
            for start in range(0, len(order) - self.global_batch + 1, self.global_batch):
                batches.append((bucket, tuple(int(i) for i in order[start:start + self.global_batch])))
        rng = np.random.default_rng([self.seed, epoch, *self.salt])
        shuffled = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, shuffled)
        return shuffled

    def batch(self, step: int, k: int) -> Batch:
        epoch, position = divmod(k, self.per_epoch)
        bucket, rows = self.epoch(epoch)[position]
        return Batch(step, epoch, bucket, rows, self.name)


class EpochPlan:
    """The global batch of every step (see the module doc)."""

    def __init__(self, index: Any, global_batch: int, seed: int, mix: Mapping[str, float] | None = None,
                 media: Mapping[str, str] | None = None) -> None:
        self.seed = seed
        if not mix:
            self.streams = [_Stream("all", index, index.buckets, global_batch, seed, [])]
            self.weights = np.array([1.0])
        else:
            chosen = [(m, w) for m, w in sorted(mix.items()) if w > 0]
            self.streams = [_Stream(m, index, [b for b in index.buckets if (media or {}).get(b) == m], global_batch,
                                    seed, [1_000_000 + i]) for i, (m, _) in enumerate(chosen)]
            for stream in self.streams:
                if stream.per_epoch == 0:
                    raise ValueError(f"the mix gives {stream.name!r} a share but no bucket of it has a full batch")
            self.weights = np.array([w for _, w in chosen]) / sum(w for _, w in chosen)
        self._choices = np.zeros(0, dtype=np.int64)

    def _choice_block(self, block: int) -> np.ndarray:
        if len(self.streams) == 1:
            return np.zeros(BLOCK, dtype=np.int64)
        u = np.random.default_rng([self.seed, 2_000_000, block]).random(BLOCK)
        return np.minimum(np.searchsorted(np.cumsum(self.weights), u, side="right"), len(self.streams) - 1)

    def _locate(self, step: int) -> tuple[int, int]:
        """(stream of this step, how many batches that stream gave before it)."""
        while len(self._choices) <= step:
            self._choices = np.concatenate([self._choices, self._choice_block(len(self._choices) // BLOCK)])
        stream = int(self._choices[step])
        return stream, int(np.count_nonzero(self._choices[:step] == stream))

    def batch(self, step: int) -> Batch:
        stream, k = self._locate(step)
        return self.streams[stream].batch(step, k)
