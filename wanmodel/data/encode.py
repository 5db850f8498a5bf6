"""The encode job (``python -m jobs.encode``, ``wan encode``): the DiT's training caches, so that training never
runs the VAE or umT5.

For one curriculum stage (``wanmodel.data.buckets``) it reads the kept clips of ``curated`` (``keep = true``, and
the stage's ``splits`` if it names some) that have an ``ok`` caption in ``captions``, and writes two tables through
the lake driver (``curation.lake.driver.LakeJob``), each with its own ``runs`` row:

1. ``text_embeddings`` (stage ``encode_text``), first: the umT5 embedding ([tokens, dim], padding dropped) of each
   distinct caption, keyed by ``sha256(encoder_id + "\\n" + text)[:32]``. It runs before any latent is written, so
   every ``latents`` row's ``text_key`` has its row; a caption whose embedding failed gives its clips error rows.
2. ``latents`` (stage ``encode``), keyed by ``{clip_id}@{bucket}@{vae_id}``: each clip goes to the bucket of its
   media type closest to its aspect ratio (after its crop box), its frames sampled at the bucket's fps from the
   middle of the clip; ``ClipDecoder`` actors (CPUs) decode each source file once, crop (borders, watermark: the
   box ``select`` stored in ``curated``) and resize; ``LatentEncoder`` actors (GPU when ``encode.num_gpus > 0``)
   run ``WanVAE.encode``. A clip too short for the stage's video frames, of a media type the stage has no bucket
   for, or whose file no longer decodes gets a ``status="error"`` row with the reason.

**Sample policy.** A row stores the posterior ``mean`` and ``logvar`` ([C, F, H, W], not normalised). The trainer
trains on the mean (``latent_sample: mean``, as the official ``WanVAE.encode``, which returns the mean) or draws a
fresh ``z = mean + exp(logvar / 2) * eps`` at every step (``posterior``; ``eps`` from its own seeded generator, so
resume stays exact), and normalises with the encoding VAE's latent statistics, which every row carries
(``latents_mean`` / ``latents_std``, from the VAE's config: ``(z - mean) / std`` per channel,
``wanmodel.models.vae_config.normalize_latents``) before the flow-matching loss.

Both tables are resumable: the driver computes only keys not yet written, commits every ``commit_every`` clips,
and a run killed at any point (kill -9 included) re-runs only what is missing, never writing a key twice.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from curation.config import RayConfig
from curation.jobconfig import Strict, load_yaml_config
from curation.lake.schemas import STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake
from wanmodel.data.buckets import (
    Bucket,
    Curriculum,
    TrainingStage,
    assign_bucket,
    source_frame_indices,
)
from wanmodel.data.encode_models import (
    EmbedSettings,
    LatentEncoder,
    TextEncoder,
    VAESettings,
)
from wanmodel.data.encode_pixels import ClipDecoder
from wanmodel.data.tensor_bytes import STORE_DTYPES, text_key

__all__ = ["EncodeJobConfig", "EncodeSummary", "load_encode_config", "pending_clips", "run_encode_job"]

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


class Resources(Strict):
    """One actor pool: how many actors and what each holds."""

    concurrency: int = Field(default=1, ge=1, le=4096)
    num_cpus: float = Field(default=1.0, gt=0, le=256)
    num_gpus: float = Field(default=0.0, ge=0, le=16)


class EncodeJobConfig(Strict):
    """The encode job (see ``jobs/configs/encode_tiny.yaml``)."""

    lake: str
    stage: str  # a stage of the curriculum, e.g. joint_256_192
    curriculum: str = str(REPO / "jobs/configs/curriculum.yaml")
    vae: str | None = None  # a Wan-VAE folder or file (``load_vae``)
    text_encoder: str | None = None  # a UMT5EncoderModel folder or the official .pth
    tokenizer: str | None = None  # default: the text_encoder folder
    random_tiny: str | None = None  # a folder for the tiny random VAE and umT5 (tests, the demo) instead
    vae_id: str | None = None  # written to every latents row; default: the VAE's folder or file name
    encoder_id: str | None = None  # part of the text key; default: the encoder's name and text_len
    text_len: int = Field(default=512, ge=1, le=4096)
    store_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = Field(default=4, ge=1, le=1024)  # clips of one bucket per VAE call
    text_batch_size: int = Field(default=32, ge=1, le=4096)
    commit_every: int = Field(default=16, ge=1, le=100_000)
    retry_errors: bool = False  # delete earlier latents error rows first, so those clips are tried again
    limit: int | None = Field(default=None, ge=1)  # encode at most this many pending clips (trial runs)
    execution: Literal["ray", "local"] = "ray"  # local: the same actors in this process
    decode: Resources = Field(default_factory=Resources)
    encode: Resources = Field(default_factory=Resources)
    text: Resources = Field(default_factory=Resources)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _models(self) -> EncodeJobConfig:
        if self.random_tiny is None and (self.vae is None or self.text_encoder is None):
            raise ValueError("set 'vae' and 'text_encoder' (local weights), or 'random_tiny' (a folder for the "
                             "tiny random models)")
        assert self.store_dtype in STORE_DTYPES
        return self

    def model_paths(self) -> tuple[str, str, str | None]:
        """(vae, text encoder, tokenizer) paths, building the tiny random models when configured."""
        if self.random_tiny is not None and (self.vae is None or self.text_encoder is None):
            from wanmodel.pipelines.tiny import build_tiny_models

            tiny = build_tiny_models(self.random_tiny)
            return str(self.vae or tiny.vae), str(self.text_encoder or tiny.text_encoder), self.tokenizer
        return str(self.vae), str(self.text_encoder), self.tokenizer

    def ids(self, vae: str, text_encoder: str) -> tuple[str, str]:
        """(vae_id, encoder_id)."""
        tiny = self.random_tiny is not None
        vae_id = self.vae_id or ("tiny-random-vae" if tiny and self.vae is None else Path(vae).name)
        name = "tiny-random-umt5" if tiny and self.text_encoder is None else Path(text_encoder).name
        return vae_id, self.encoder_id or f"{name}:len{self.text_len}"


def load_encode_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EncodeJobConfig:
    """Read and validate an encode job YAML; a bad key or value is a ``ConfigError`` naming it."""
    return load_yaml_config(path, EncodeJobConfig, overrides)


# -------------------------------------------------------------------------------------------- work items
_CURATED = ["clip_id", "keep", "split", "media_type", "uri", "video_id", "start_frame", "end_frame", "start_s",
            "end_s", "width", "height", "crop_x0", "crop_y0", "crop_x1", "crop_y1"]


def _crop(row: dict[str, Any]) -> list[int] | None:
    box = [row[k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    return None if any(v is None for v in box) else [int(v) for v in box]


def _captions(lake: Lake) -> dict[str, str]:
    t = lake.read("captions", columns=["clip_id", "caption", "status"])
    return {c: text for c, text, st in zip(*(t.column(n).to_pylist() for n in ("clip_id", "caption", "status")))
            if st == STATUS_OK and text}


def _fps(lake: Lake) -> dict[str, float]:
    t = lake.read("clips", columns=["clip_id", "fps"])
    return {c: float(f or 0.0) for c, f in zip(t.column("clip_id").to_pylist(), t.column("fps").to_pylist())}


def pending_clips(lake: Lake, stage: TrainingStage, vae_id: str, encoder_id: str) -> list[dict[str, Any]]:
    """One ``latents`` row template per kept, captioned clip of ``stage``: key, bucket (or None), caption, text key,
    lineage, and the source frames its bucket samples. Clips without an ``ok`` caption are not candidates."""
    from curation.stages.registry import MissingInputError

    for table, step in (("curated", "the curation's 'select' stage"), ("captions", "the caption job")):
        if not lake.exists(table):
            raise MissingInputError(f"the encode job reads the table '{table}', which is not in the lake "
                                    f"{lake.root}: run {step} first")
    captions, fps = _captions(lake), _fps(lake)
    out, seen = [], set()
    for row in lake.read("curated", columns=_CURATED).to_pylist():
        cid = row["clip_id"]
        if not row["keep"] or cid not in captions or cid in seen:
            continue
        if stage.splits is not None and row["split"] not in stage.splits:
            continue
        seen.add(cid)
        out.append(_template(row, stage, captions[cid], fps.get(cid, 0.0), vae_id, encoder_id))
    return out


def _template(row: dict[str, Any], stage: TrainingStage, caption: str, fps: float, vae_id: str,
              encoder_id: str) -> dict[str, Any]:
    media = row["media_type"] or "video"
    crop = _crop(row)
    width, height = (crop[2] - crop[0], crop[3] - crop[1]) if crop else (row["width"] or 0, row["height"] or 0)
    start, end = int(row["start_frame"] or 0), int(row["end_frame"] or 1)
    bucket = assign_bucket(stage, media, width, height, end - start, fps if media == "video" else 1.0)
    frames = None
    if bucket is not None:
        frames = [start + i for i in source_frame_indices(bucket, end - start, fps if media == "video" else 1.0)]
    return {
        "latent_id": f"{row['clip_id']}@{bucket.name if bucket else 'none:' + stage.name}@{vae_id}",
        "clip_id": row["clip_id"], "bucket": bucket.name if bucket else None, "media_type": media, "vae_id": vae_id,
        "num_frames": bucket.frames if bucket else None, "height": bucket.height if bucket else None,
        "width": bucket.width if bucket else None, "fps": bucket.fps if bucket and media == "video" else None,
        "caption": caption, "text_key": text_key(encoder_id, caption), "video_id": row["video_id"],
        "uri": row["uri"], "start_s": row["start_s"], "end_s": row["end_s"], "start_frame": start,
        "end_frame": end, "crop": crop,
        "_frames": frames, "_max_side": max(int(row["width"] or 0), int(row["height"] or 0)),
        "_why": None if bucket else _no_bucket_reason(stage, media, end - start, fps),
    }


def _no_bucket_reason(stage: TrainingStage, media: str, frames: int, fps: float) -> str:
    buckets = stage.buckets_of(media)
    if not buckets:
        return f"bucket: stage '{stage.name}' has no {media} buckets"
    b = buckets[0]
    return (f"bucket: too short for stage '{stage.name}': {frames} frames at {fps:g} fps, its video buckets need "
            f"{b.frames} frames at {b.fps:g} fps ({(b.frames - 1) / b.fps:.2f} s)")


def work_items(templates: list[dict[str, Any]], buckets: dict[str, Bucket]) -> list[dict[str, Any]]:
    """Templates with a bucket, grouped by source file (each file is decoded once)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    media: dict[str, tuple[str, int]] = {}
    for t in templates:
        b = buckets[t["bucket"]]
        groups[t["uri"]].append({"latent_id": t["latent_id"], "bucket": b.name, "frames": t["_frames"],
                                 "crop": t["crop"], "height": b.height, "width": b.width})
        media[t["uri"]] = (t["media_type"], t["_max_side"])
    return [{"uri": uri, "media_type": media[uri][0], "max_side": media[uri][1], "clips": clips}
            for uri, clips in groups.items()]


def public(template: dict[str, Any]) -> dict[str, Any]:
    """A template without its private (``_``) fields: the ``latents`` row's metadata."""
    return {k: v for k, v in template.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------------------------- execution
def actor_batches(items: list[dict[str, Any]], steps: list[tuple[type, tuple, int, Resources]],
                  cfg: EncodeJobConfig) -> Iterator[pa.Table]:
    """``items`` through the actor ``steps`` (class, constructor args, batch size, resources): in this process
    (``execution: local``) or as Ray Data actor pools."""
    if not items:
        return
    if cfg.execution == "local":
        yield from _local_batches(items, steps)
        return
    import ray
    import ray.data

    from curation.ray_runtime import ensure_ray

    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    need = max(r.num_gpus for *_, r in steps)
    if need > 0 and ray.cluster_resources().get("GPU", 0.0) < need:
        raise RuntimeError(f"num_gpus={need} but the Ray cluster has {ray.cluster_resources().get('GPU', 0.0)} "
                           "GPU(s); set encode.num_gpus: 0 (and text.num_gpus: 0) for CPUs")
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 2000)))
    for actor, args, batch_size, res in steps:
        ds = ds.map_batches(actor, fn_constructor_args=args, batch_size=batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=res.concurrency), num_cpus=res.num_cpus,
                            num_gpus=res.num_gpus or None)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


def _local_batches(items: list[dict[str, Any]], steps: list[tuple[type, tuple, int, Resources]]
                   ) -> Iterator[pa.Table]:
    actors = [cls(*args) for cls, args, _, _ in steps]

    def run(tables: Iterator[pa.Table], depth: int) -> Iterator[pa.Table]:
        if depth == len(actors):
            yield from tables
            return
        size, buffer = steps[depth][2], []
        rows = (r for t in tables for r in t.to_pylist())
        for row in rows:
            buffer.append(row)
            if len(buffer) >= size:
                yield from run(iter([actors[depth](pa.Table.from_pylist(buffer))]), depth + 1)
                buffer = []
        if buffer:
            yield from run(iter([actors[depth](pa.Table.from_pylist(buffer))]), depth + 1)

    yield from run(iter([pa.Table.from_pylist([i]) for i in items]), 0)


# --------------------------------------------------------------------------------------------------- driver
@dataclass
class EncodeSummary:
    """Counts and speed of one run (both tables)."""

    stage: str
    clips: int = 0  # kept, captioned clips of the stage
    pending: int = 0  # of those, without a latents row before this run
    written: int = 0
    ok: int = 0
    failed: int = 0
    texts_written: int = 0
    texts_failed: int = 0
    wall_s: float = 0.0
    by_bucket: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        rate = self.written / self.wall_s if self.wall_s > 0 else 0.0
        buckets = ", ".join(f"{b}: {n}" for b, n in sorted(self.by_bucket.items())) or "none"
        lines = [(f"encode ({self.stage}): {self.clips} clips, {self.pending} pending, {self.written} latents written "
                 f"({self.ok} ok, {self.failed} failed) in {self.wall_s:.1f}s ({rate:.2f} clips/s); buckets: "
                 f"{buckets}; text embeddings: {self.texts_written} written ({self.texts_failed} failed)")]
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


def _encode_texts(lake: Lake, cfg: EncodeJobConfig, templates: list[dict[str, Any]],
                  settings: EmbedSettings) -> Any:
    """The ``text_embeddings`` pass (its own ``runs`` row): every distinct caption not yet embedded."""
    from curation.lake.driver import LakeJob

    job = LakeJob(lake, "encode_text", ["text_embeddings"], commit_every=cfg.commit_every)
    done = job.done()
    texts = {t["text_key"]: t["caption"] for t in templates if t["text_key"] not in done}
    items = [{"text_key": k, "text": v} for k, v in texts.items()]
    steps = [(TextEncoder, (settings,), cfg.text_batch_size, cfg.text)]
    job.consume(actor_batches(items, steps, cfg))
    return job.finish(len(items), config=cfg, inputs=["captions"])


def _embedded(lake: Lake) -> set[str]:
    t = lake.read("text_embeddings", columns=["text_key", "status"])
    return {k for k, st in zip(t.column("text_key").to_pylist(), t.column("status").to_pylist()) if st == STATUS_OK}


def _error_row(template: dict[str, Any], message: str) -> dict[str, Any]:
    return {**public(template), "status": STATUS_ERROR, "error": message}


def _with_meta(batches: Iterator[pa.Table], meta: dict[str, dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Encoded rows joined with their clip's caption and lineage."""
    for batch in batches:
        yield [{**meta[r["latent_id"]], **r} for r in batch.to_pylist()]


def run_encode_job(cfg: EncodeJobConfig, progress: bool = True) -> EncodeSummary:
    """Write the stage's ``text_embeddings`` and ``latents`` (see the module docs); returns the run's counts."""
    from tqdm import tqdm

    from curation.lake.driver import LakeJob

    stage = Curriculum.load(cfg.curriculum).stage(cfg.stage)  # a bad stage fails here, before any work
    vae_path, text_path, tokenizer = cfg.model_paths()
    for what, path in (("VAE", vae_path), ("umT5 text encoder", text_path)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} weights not found at {path}")
    vae_id, encoder_id = cfg.ids(vae_path, text_path)
    lake = Lake(cfg.lake)
    templates = pending_clips(lake, stage, vae_id, encoder_id)
    if cfg.retry_errors and lake.exists("latents"):
        lake.dataset("latents").delete(f"status = '{STATUS_ERROR}'")
    job = LakeJob(lake, "encode", ["latents"], commit_every=cfg.commit_every)
    done = job.done()
    pending = [t for t in templates if t["latent_id"] not in done][:cfg.limit]
    summary = EncodeSummary(cfg.stage, clips=len(templates), pending=len(pending))
    text_settings = EmbedSettings(text_path, tokenizer, encoder_id, cfg.text_len, cfg.store_dtype,
                                  cfg.text.num_gpus > 0)
    texts = _encode_texts(lake, cfg, pending, text_settings)
    summary.texts_written, summary.texts_failed = texts.written.get("text_embeddings", 0), texts.counts["failed"]
    embedded = _embedded(lake)
    bar = tqdm(desc="encoded", unit="clip", total=len(pending), disable=not progress)
    job.progress = lambda n: bar.update(n - bar.n)
    job.on_rows = lambda _, rows: _tally_buckets(summary.by_bucket, rows)
    ready = _record_unencodable(job, pending, embedded)
    meta = {t["latent_id"]: public(t) for t in ready}
    vae_settings = VAESettings(vae_path, cfg.store_dtype, cfg.batch_size, cfg.encode.num_gpus > 0)
    steps = [(ClipDecoder, (), 1, cfg.decode), (LatentEncoder, (vae_settings,), cfg.batch_size, cfg.encode)]
    items = work_items(ready, {b.name: b for b in stage.buckets})
    log.info("encode: %d clips of stage %s in %d files (%s)", len(ready), cfg.stage, len(items), cfg.execution)
    for rows in _with_meta(actor_batches(items, steps, cfg), meta):
        job.add({"latents": rows}, items=len(rows))
    bar.close()
    res = job.finish(len(pending), config=cfg, inputs=["curated", "captions", "text_embeddings"])
    return _summary(summary, res, job.errors)


def _tally_buckets(counts: dict[str, int], rows: pa.Table) -> None:
    for bucket, status in zip(rows.column("bucket").to_pylist(), rows.column("status").to_pylist()):
        if status == STATUS_OK:
            counts[bucket] = counts.get(bucket, 0) + 1


def _record_unencodable(job: Any, pending: list[dict[str, Any]], embedded: set[str]) -> list[dict[str, Any]]:
    """Error rows for clips with no bucket or no text embedding; returns the clips to encode."""
    ready, errors = [], []
    for t in pending:
        if t["bucket"] is None:
            errors.append(_error_row(t, t["_why"]))
        elif t["text_key"] not in embedded:
            errors.append(_error_row(t, f"text: caption has no text embedding (text_key {t['text_key']})"))
        else:
            ready.append(t)
    if errors:
        job.add({"latents": errors}, items=len(errors))
    return ready


def _summary(summary: EncodeSummary, res: Any, errors: list[str]) -> EncodeSummary:
    summary.written = res.written.get("latents", 0)
    summary.ok, summary.failed = res.counts["ok"], res.counts["failed"]
    summary.wall_s = res.wall_s
    summary.errors = [e.removeprefix("latents: ") for e in errors]
    return summary
