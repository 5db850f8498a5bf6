"""The DiT's held-out flow-matching loss: what ``validation`` in the training config logs as ``val_loss``.

    lake = Lake("out/val_lake")
    val = ValidationSet(lake, held_out_index(lake, ["i32_1x1", "v32_1x1"]), text_dim=32, text_len=16,
                        sigmas=[0.2, 0.4, 0.6, 0.8], seed=1234)
    val.loss(model)   # mean loss over every held-out latent at every sigma

The same weights always give the same number, so a curve of it moves with the weights alone: the clean latent is
each row's posterior mean, normalised as the trainer normalises it; the sigmas are fixed; each row's noise (one
draw per sigma) comes from a generator of its own, seeded by ``seed`` and the row's ``latent_id``. So the number
does not depend on ``batch_size`` (samples per forward, a memory setting), on the order of the buckets, or on which
other rows the lake holds; and nothing here touches the global random state, so a run with validation takes the
same steps as one without it (and resumes as exactly).

The held-out latents sit in a lake of their own (the encode job's ``latents`` and ``text_embeddings`` of the
held-out clips). The index is read once, by the driver (``held_out_index``), and handed to every rank like the
training index, so all ranks hold the same rows; the caption embeddings are loaded once per rank, the latents of a
batch at each validation. Under Ray Train every rank runs the whole set, in the same batches (FSDP gathers the
weights, context parallelism shards each batch's tokens): keep it small, it costs ``rows x sigmas`` samples of
forward passes per validation on every rank.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from curation.lake.tables import Lake
from wanmodel.diffusion.flow_matching import flow_matching_loss
from wanmodel.train.dit_config import check_sigmas
from wanmodel.train.dit_data import DataError, LatentIndex, LatentStore, TextStore

__all__ = ["ValidationSet", "held_out_index", "ok_buckets"]


def ok_buckets(lake: Lake) -> list[str]:
    """The buckets that hold ``ok`` rows of the lake's ``latents``, sorted."""
    if not lake.exists("latents"):
        raise DataError(f"lake {lake.root} has no latents table: run the encode job on the held-out clips first")
    column = lake.read("latents", columns=["bucket"], filter="status = 'ok'").column("bucket")
    return sorted(set(column.to_pylist()))


def held_out_index(lake: Lake, buckets: Sequence[str] | None) -> LatentIndex:
    """The ``ok`` latents of ``buckets`` (None: every bucket with rows) in the validation lake; an error naming the
    buckets it does hold when none of them has rows."""
    present = ok_buckets(lake)
    wanted = present if buckets is None else [b for b in buckets if b in present]
    if not wanted:
        raise DataError(f"the validation lake {lake.root} has no latents (status ok) in the run's buckets "
                        f"{list(buckets or [])}; it holds {present or 'none'}")
    return LatentIndex.from_lake(lake, wanted)


class ValidationSet:
    """The held-out latents of ``index`` (``held_out_index``), their captions' embeddings, and the fixed sigmas and
    noise seed of the loss; ``batch_size`` counts samples (a row at one sigma) per forward."""

    def __init__(self, lake: Lake, index: LatentIndex, *, text_dim: int, text_len: int, sigmas: Sequence[float],
                 seed: int, batch_size: int = 16, normalize: bool = True) -> None:
        check_sigmas(sigmas)
        self.index = index
        self.store = LatentStore(lake, self.index)
        self.text = TextStore(lake, self.index, text_dim, text_len)
        self.sigmas, self.seed = [float(s) for s in sigmas], seed
        self.batch_size, self.normalize = max(1, batch_size), normalize

    @property
    def rows(self) -> int:
        return len(self.index.rows)

    def loss(self, model: Any, *, device: torch.device | None = None,
             autocast: contextlib.AbstractContextManager[Any] | None = None) -> float:
        """Mean flow-matching loss over every held-out latent x every sigma (no gradients), summed in float64."""
        device = device or next(model.parameters()).device
        total, count = 0.0, 0
        for batch in self._batches():
            x0, noise, sigma, context = self._inputs(batch)
            with torch.no_grad(), autocast or contextlib.nullcontext():
                per = flow_matching_loss(model, x0.to(device), noise=noise.to(device), sigma=sigma.to(device),
                                         context=context.to(device), return_per_sample=True)
            total, count = total + float(per.double().sum()), count + per.numel()
        return total / count

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        """(row, sigma position) pairs, row after row, in batches of ``batch_size`` within each bucket."""
        for bucket in self.index.buckets:
            pairs = [(i, k) for i in self.index.by_bucket[bucket] for k in range(len(self.sigmas))]
            for start in range(0, len(pairs), self.batch_size):
                yield pairs[start:start + self.batch_size]

    def _inputs(self, batch: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        rows = list(dict.fromkeys(i for i, _ in batch))
        posterior = self.store.read(rows)
        clean = posterior.normalized_sample(None) if self.normalize else posterior.sample(None)
        noise = {i: self._row_noise(i, tuple(clean.shape[1:])) for i in rows}
        at = {i: p for p, i in enumerate(rows)}
        x0 = torch.stack([clean[at[i]] for i, _ in batch])
        eps = torch.stack([noise[i][k] for i, k in batch])
        sigma = torch.tensor([self.sigmas[k] for _, k in batch], dtype=torch.float32)
        context = self.text.batch([self.index.rows[i].text_key for i, _ in batch])  # type: ignore[misc]
        return x0, eps, sigma, context

    def _row_noise(self, row: int, shape: tuple[int, ...]) -> torch.Tensor:
        """[len(sigmas), *shape]: the row's noise at each sigma, from (seed, latent_id) alone."""
        digest = hashlib.sha256(f"{self.seed}:{self.index.rows[row].latent_id}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return torch.randn((len(self.sigmas), *shape), generator=generator)
