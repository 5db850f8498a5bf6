"""The DiT's held-out flow-matching loss: what ``validation`` in the training config logs as ``val_loss``.

    val = ValidationSet(Lake("out/val_lake"), ["i32_1x1", "v32_1x1"], text_dim=32, text_len=16,
                        sigmas=[0.2, 0.4, 0.6, 0.8], seed=1234)
    val.loss(model)   # mean loss over every held-out latent at every sigma

The same weights always give the same number, so a curve of it moves with the weights alone: the clean latent is
each row's posterior mean, normalised as the trainer normalises it; the sigmas are fixed; the noise comes from a
generator of its own per bucket (seeded by ``seed`` + the bucket's position among the buckets that hold rows) and
is drawn chunk after chunk in row order. Nothing here touches the global random state, so a run with validation
takes the same steps as one without it (and resumes as exactly).

The held-out latents sit in a lake of their own (the encode job's ``latents`` and ``text_embeddings`` of the
held-out clips), read once. Under Ray Train every rank runs the same batches (FSDP gathers the weights, context
parallelism shards each batch's tokens), so ranks agree.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from curation.lake.tables import Lake
from wanmodel.diffusion.flow_matching import flow_matching_loss
from wanmodel.train.dit_data import DataError, LatentIndex, LatentStore, TextStore

__all__ = ["ValidationSet", "ok_buckets"]


def ok_buckets(lake: Lake) -> list[str]:
    """The buckets that hold ``ok`` rows of the lake's ``latents``, sorted."""
    if not lake.exists("latents"):
        raise DataError(f"lake {lake.root} has no latents table: run the encode job on the held-out clips first")
    column = lake.read("latents", columns=["bucket"], filter="status = 'ok'").column("bucket")
    return sorted(set(column.to_pylist()))


class ValidationSet:
    """The held-out latents of ``buckets`` (None: every bucket with rows), their captions' embeddings, and the
    fixed sigmas and noise seed of the loss."""

    def __init__(self, lake: Lake, buckets: Sequence[str] | None, *, text_dim: int, text_len: int,
                 sigmas: Sequence[float], seed: int, batch_size: int = 16, normalize: bool = True) -> None:
        if not sigmas or not all(0.0 < s < 1.0 for s in sigmas):
            raise DataError(f"validation sigmas must be a non-empty list of values in (0, 1); got {list(sigmas)}")
        present = ok_buckets(lake)
        wanted = present if buckets is None else [b for b in buckets if b in present]
        if not wanted:
            raise DataError(f"the validation lake {lake.root} has no latents (status ok) in the run's buckets "
                            f"{list(buckets or [])}; it holds {present or 'none'}")
        self.index = LatentIndex.from_lake(lake, wanted)
        self.store = LatentStore(lake, self.index)
        self.text = TextStore(lake, self.index, text_dim, text_len)
        self.sigmas, self.seed = [float(s) for s in sigmas], seed
        self.batch_size, self.normalize = batch_size, normalize

    @property
    def rows(self) -> int:
        return len(self.index.rows)

    def check(self, in_dim: int, patch: Sequence[int], expected: dict[str, tuple[int, ...]] | None = None) -> None:
        """Every held-out latent has its bucket's shape (the curriculum's, else its first row's) and fits the DiT."""
        self.index.check(in_dim=in_dim, patch=patch, global_batch=1, expected=expected)

    def loss(self, model: Any, *, device: torch.device | None = None,
             autocast: contextlib.AbstractContextManager[Any] | None = None) -> float:
        """Mean flow-matching loss over every held-out latent x every sigma (no gradients)."""
        device = device or next(model.parameters()).device
        total, count = 0.0, 0
        for b, bucket in enumerate(self.index.buckets):
            rows = self.index.by_bucket[bucket]
            generator = torch.Generator().manual_seed(self.seed + b)
            for start in range(0, len(rows), self.batch_size):
                per = self._chunk_losses(model, rows[start:start + self.batch_size], generator, device, autocast)
                total, count = total + float(per.float().sum()), count + per.numel()
        return total / count

    def _chunk_losses(self, model: Any, rows: list[int], generator: torch.Generator, device: torch.device,
                      autocast: contextlib.AbstractContextManager[Any] | None) -> torch.Tensor:
        posterior = self.store.read(rows)
        clean = posterior.normalized_sample(None) if self.normalize else posterior.sample(None)
        n = len(self.sigmas)
        x0 = clean.repeat(n, *([1] * (clean.ndim - 1)))  # sigma-major: every row at sigma 0, then at sigma 1, ...
        sigma = torch.tensor(self.sigmas, dtype=torch.float32).repeat_interleave(len(rows))
        context = self.text.batch([self.index.rows[i].text_key for i in rows]).repeat(n, 1, 1)  # type: ignore[misc]
        noise = torch.randn(x0.shape, generator=generator)
        with torch.no_grad(), autocast or contextlib.nullcontext():
            return flow_matching_loss(model, x0.to(device), noise=noise.to(device), sigma=sigma.to(device),
                                      context=context.to(device), return_per_sample=True)
