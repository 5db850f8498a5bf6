"""What the DiT trainer reads: the ``latents`` index, a per-epoch plan of bucket-homogeneous batches, the tensors
of a batch, and the text embeddings of its captions.

The data position is the step alone. Every worker holds the same small index (latent_id, bucket, shape, text_key
of every usable row; under Ray Train it comes through ``ray.data.read_lance`` and ``get_dataset_shard``, not
split), sorted by ``latent_id``. The plan of an epoch is a function of (seed, epoch): each bucket's rows shuffled
and cut into full global batches, then the batches shuffled (``dit_plan``; a stage's mix gives each media type its
own stream of epochs). Step ``s`` is batch ``s % n`` of epoch ``s // n``;
data shard ``r`` of ``k`` (``ParallelMesh.rank("data")``; context-parallel ranks of one group share it) takes the
``r``-th contiguous slice of it and reads only those rows' tensors (Lance ``take``). So a resumed run continues
exactly where the checkpoint was, no sample of an epoch is seen twice or skipped (a bucket's last rows short of a
full batch wait for a later epoch's shuffle), and the result does not depend on how many workers share a batch.

The clean latent is the posterior mean (``latent_sample: mean``, the default) or a posterior sample
``z = mean + exp(logvar / 2) * eps`` (``posterior``), normalised with the row's own VAE statistics. Noise (``eps``,
the flow-matching noise and sigma) is drawn
for the whole global batch from a generator seeded by (seed, step) and sliced the same way; so is caption dropout
(``caption_dropout``: each sample's caption embedding replaced by the empty prompt's, ``empty_text_key``, with that
probability, so that the model also learns the unconditional prediction classifier-free guidance needs).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch

from curation.jobconfig import ConfigError
from curation.lake.tables import Lake
from wanmodel.train.dit_plan import Batch, EpochPlan

__all__ = [
    "Batch",
    "DataError",
    "EpochPlan",
    "IndexRow",
    "LatentIndex",
    "LatentStore",
    "Posterior",
    "StageData",
    "TextStore",
    "TrainData",
    "check_text_keys",
    "index_filter",
    "stage_buckets",
]

INDEX_COLUMNS = ["latent_id", "bucket", "media_type", "shape", "text_key", "status"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DataError(ConfigError):
    """Training data that cannot be used (no rows, wrong shapes, missing text embeddings); names the problem."""


@dataclass(frozen=True)
class IndexRow:
    latent_id: str
    bucket: str
    shape: tuple[int, ...]
    text_key: str | None


def index_filter(buckets: Sequence[str]) -> str:
    """The Lance filter of the rows a run trains on."""
    names = ", ".join("'" + b.replace("'", "''") + "'" for b in buckets)
    return f"status = 'ok' AND bucket IN ({names})"


def tensor_from_bytes(data: bytes, shape: Sequence[int], dtype: str) -> torch.Tensor:
    if dtype not in DTYPES:
        raise DataError(f"unknown tensor dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return torch.frombuffer(bytearray(data), dtype=DTYPES[dtype]).reshape(tuple(shape)).float()


# ------------------------------------------------------------------------------------------------ the index
class LatentIndex:
    """The usable rows of ``latents`` for a set of buckets, checked before any step."""

    def __init__(self, rows: Iterable[dict], buckets: Sequence[str]) -> None:
        parsed = sorted((IndexRow(r["latent_id"], r["bucket"], tuple(int(s) for s in r["shape"]), r["text_key"])
                         for r in rows), key=lambda r: r.latent_id)
        self.rows = parsed
        self.buckets = list(buckets)
        self.by_bucket: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(parsed):
            self.by_bucket[row.bucket].append(i)

    @classmethod
    def from_lake(cls, lake: Lake, buckets: Sequence[str]) -> LatentIndex:
        """Read the index in this process (the in-process entry point)."""
        if not lake.exists("latents"):
            raise DataError(f"lake {lake.root} has no latents table: run the encode job first")
        table = lake.read("latents", columns=INDEX_COLUMNS, filter=index_filter(buckets))
        return cls(table.to_pylist(), buckets)

    def check(self, *, in_dim: int, patch: Sequence[int], global_batch: int,
              expected: dict[str, tuple[int, ...]] | None = None) -> None:
        """Every bucket has rows of one shape that fits the model, and at least one full batch."""
        for bucket in self.buckets:
            members = self.by_bucket.get(bucket, [])
            if not members:
                raise DataError(f"bucket {bucket!r} has no data: no row of latents with status 'ok' in it")
            if len(members) < global_batch:
                raise DataError(f"bucket {bucket!r} has {len(members)} rows, fewer than global_batch_size "
                                f"{global_batch}: it would never make a batch")
            first = self.rows[members[0]].shape
            want = expected.get(bucket, first) if expected else first
            for i in members:
                row = self.rows[i]
                if row.shape != want:
                    raise DataError(f"latent {row.latent_id!r} of bucket {bucket!r} has shape {list(row.shape)}, "
                                    f"expected {list(want)} (the bucket's latent shape)")
            _check_fits(bucket, want, in_dim, patch)


def _check_fits(bucket: str, shape: tuple[int, ...], in_dim: int, patch: Sequence[int]) -> None:
    if len(shape) != 4 or shape[0] != in_dim:
        raise DataError(f"bucket {bucket!r}: latents of shape {list(shape)} do not fit the DiT, which takes "
                        f"[{in_dim}, F, H, W]")
    if any(s % p for s, p in zip(shape[1:], patch)):
        raise DataError(f"bucket {bucket!r}: latent shape {list(shape)} is not divisible by the patch {list(patch)}")


# ------------------------------------------------------------------------------------------- tensors and text
class Posterior(NamedTuple):
    """The posterior of some rows, and each row's latent statistics (its VAE's, [B, C] each)."""

    mean: torch.Tensor
    logvar: torch.Tensor
    stats: tuple[torch.Tensor, torch.Tensor]

    def sample(self, eps: torch.Tensor | None) -> torch.Tensor:
        """``z = mean + exp(logvar / 2) * eps``; the mean when ``eps`` is None."""
        return self.mean if eps is None else self.mean + torch.exp(0.5 * self.logvar) * eps

    def normalized_sample(self, eps: torch.Tensor | None) -> torch.Tensor:
        """``sample(eps)`` normalised with the rows' statistics: what the DiT trains on."""
        from wanmodel.models.vae_config import normalize_latents

        return normalize_latents(self.sample(eps), self.stats)


class LatentStore:
    """Reads the posterior of given rows from ``latents`` (one Lance version for the whole run)."""

    COLUMNS = ("mean", "logvar", "shape", "dtype", "latents_mean", "latents_std")

    def __init__(self, lake: Lake, index: LatentIndex) -> None:
        self.dataset = lake.dataset("latents")
        ids = self.dataset.to_table(columns=["latent_id"]).column("latent_id").to_pylist()
        position = {k: i for i, k in enumerate(ids)}
        self.offsets = [position[row.latent_id] for row in index.rows]
        names = set(self.dataset.schema.names)
        # a table written before rows carried their statistics: the release's (the only VAE it could have been)
        self.columns = [c for c in self.COLUMNS if c in names]

    def read(self, rows: Sequence[int]) -> Posterior:
        from wanmodel.models.vae_config import LATENT_MEAN, LATENT_STD

        table = self.dataset.take([self.offsets[i] for i in rows], columns=self.columns)
        means, logvars, stat_means, stat_stds = [], [], [], []
        for rec in table.to_pylist():
            means.append(tensor_from_bytes(rec["mean"], rec["shape"], rec["dtype"]))
            logvars.append(tensor_from_bytes(rec["logvar"], rec["shape"], rec["dtype"]))
            stat_means.append(rec.get("latents_mean") or LATENT_MEAN)
            stat_stds.append(rec.get("latents_std") or LATENT_STD)
        stats = (torch.tensor(stat_means, dtype=torch.float32), torch.tensor(stat_stds, dtype=torch.float32))
        return Posterior(torch.stack(means), torch.stack(logvars), stats)


class TextStore:
    """The text embeddings every planned row needs, loaded once; a missing one is an error naming its key."""

    def __init__(self, lake: Lake, index: LatentIndex, text_dim: int, text_len: int,
                 extra_keys: Sequence[str] = ()) -> None:
        needed: dict[str, str] = {}
        for row in index.rows:
            if not row.text_key:
                raise DataError(f"latent {row.latent_id!r} has no text_key (a caption without an embedding)")
            needed.setdefault(row.text_key, row.latent_id)
        for key in extra_keys:  # e.g. the empty prompt's embedding that caption dropout puts in
            needed.setdefault(key, "(caption dropout: the empty prompt)")
        table = _read_embeddings(lake, sorted(needed))
        self.embeddings: dict[str, torch.Tensor] = {}
        for rec in table.to_pylist():
            self.embeddings[rec["text_key"]] = tensor_from_bytes(rec["embedding"], rec["shape"], rec["dtype"])
        for key, latent_id in needed.items():
            if key not in self.embeddings:
                raise DataError(f"caption of latent {latent_id!r} has no embedding: text_key {key!r} is not in "
                                "text_embeddings (status ok)")
            emb = self.embeddings[key]
            if emb.ndim != 2 or emb.shape[1] != text_dim or not 0 < emb.shape[0] <= text_len:
                raise DataError(f"text embedding {key!r} has shape {list(emb.shape)}, expected [tokens <= "
                                f"{text_len}, {text_dim}]")

    def batch(self, keys: Sequence[str]) -> torch.Tensor:
        """[B, L, text_dim], zero-padded to the longest (the DiT pads to text_len with zeros itself)."""
        items = [self.embeddings[k] for k in keys]
        longest = max(e.shape[0] for e in items)
        return torch.stack([torch.nn.functional.pad(e, (0, 0, 0, longest - e.shape[0])) for e in items])


def _read_embeddings(lake: Lake, keys: Sequence[str]) -> pa.Table:
    if not lake.exists("text_embeddings"):
        raise DataError(f"lake {lake.root} has no text_embeddings table: run the encode job first")
    if not keys:
        return lake.read("text_embeddings", columns=["text_key", "embedding", "shape", "dtype"], filter="false")
    names = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
    return lake.read("text_embeddings", columns=["text_key", "embedding", "shape", "dtype"],
                     filter=f"status = 'ok' AND text_key IN ({names})")


# --------------------------------------------------------------------------------------------- one step's data
@dataclass
class StepInputs:
    batch: Batch
    latents: torch.Tensor  # [b, C, F, H, W] normalised clean latents of this data shard
    context: torch.Tensor  # [b, L, text_dim]
    noise: torch.Tensor
    sigma: torch.Tensor
    latent_ids: list[str]


def _step_generator(seed: int, step: int) -> torch.Generator:
    state = int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(state)


class TrainData:
    """Index, plan, tensors and text of one worker; ``inputs(step)`` is this data shard's part of a step."""

    def __init__(self, lake: Lake, index: LatentIndex, *, global_batch: int, seed: int, shard: int, shards: int,
                 text_dim: int, text_len: int, normalize: bool, mix: dict[str, float] | None = None,
                 media: dict[str, str] | None = None, caption_dropout: float = 0.0,
                 empty_text_key: str | None = None, latent_sample: str = "mean") -> None:
        if global_batch % shards:
            raise DataError(f"global_batch_size {global_batch} is not divisible by the {shards} data shards")
        self.index, self.seed, self.normalize = index, seed, normalize
        if latent_sample not in ("mean", "posterior"):
            raise DataError(f"latent_sample must be 'mean' or 'posterior', got {latent_sample!r}")
        self.sample_posterior = latent_sample == "posterior"
        self.plan = EpochPlan(index, global_batch, seed, mix, media)
        self.local = global_batch // shards
        self.lo = shard * self.local
        self.latents = LatentStore(lake, index)
        if caption_dropout > 0 and not empty_text_key:
            raise DataError(f"caption_dropout {caption_dropout} needs empty_text_key (the empty prompt's embedding)")
        self.caption_dropout, self.empty_text_key = caption_dropout, empty_text_key
        self.text = TextStore(lake, index, text_dim, text_len, [empty_text_key] if caption_dropout > 0 else [])

    def inputs(self, step: int, timesteps: object) -> StepInputs:
        batch = self.plan.batch(step)
        mine = batch.rows[self.lo:self.lo + self.local]
        posterior = self.latents.read(mine)
        g = _step_generator(self.seed, step)
        shape = (len(batch.rows), *posterior.mean.shape[1:])
        eps, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        sigma = timesteps.sample(len(batch.rows), generator=g)  # type: ignore[attr-defined]
        part = slice(self.lo, self.lo + self.local)
        draw = eps[part] if self.sample_posterior else None  # eps is drawn either way: one stream for both
        z = posterior.normalized_sample(draw) if self.normalize else posterior.sample(draw)
        rows = [self.index.rows[i] for i in mine]
        keys = [r.text_key for r in rows]
        if self.caption_dropout > 0:  # drawn after the rest, so a run without dropout keeps its stream
            drop = (torch.rand(len(batch.rows), generator=g) < self.caption_dropout)[part].tolist()
            keys = [self.empty_text_key if d else k for k, d in zip(keys, drop)]
        return StepInputs(batch, z, self.text.batch(keys), noise[part], sigma[part], [r.latent_id for r in rows])


# ------------------------------------------------------------------------------------------ driver-side checks
def check_text_keys(lake: Lake, index: LatentIndex) -> None:
    """Every row's caption has an embedding (keys only: the driver does not load the embeddings)."""
    if not lake.exists("text_embeddings"):
        raise DataError(f"lake {lake.root} has no text_embeddings table: run the encode job first")
    have = set(lake.read("text_embeddings", columns=["text_key"], filter="status = 'ok'")
               .column("text_key").to_pylist())
    for row in index.rows:
        if not row.text_key or row.text_key not in have:
            raise DataError(f"caption of latent {row.latent_id!r} has no embedding: text_key {row.text_key!r} "
                            "is not in text_embeddings (status ok)")


@dataclass(frozen=True)
class StageData:
    """What a run trains on: bucket names, their latent shapes, media types and the mix (from a curriculum)."""

    buckets: list[str]
    shapes: dict[str, tuple[int, ...]] | None = None
    media: dict[str, str] | None = None
    mix: dict[str, float] | None = None


def stage_buckets(cfg: object, channels: int) -> StageData:
    """The buckets a run trains on: the config's ``buckets``, or those of its curriculum stage."""
    buckets = getattr(cfg, "buckets", None)
    if buckets is not None:
        return StageData(list(buckets))
    from wanmodel.data.buckets import Curriculum

    stage = Curriculum.load(cfg.curriculum).stage(cfg.stage)  # type: ignore[attr-defined]
    return StageData([b.name for b in stage.buckets], {b.name: tuple(b.latent_shape(channels)) for b in stage.buckets},
                     {b.name: b.media_type for b in stage.buckets}, dict(stage.mix))
