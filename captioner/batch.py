"""Batch captioning of the curated lake into the ``captions`` table (``python -m jobs.caption``).

Pipeline (Ray Data): the driver lists the curated clips (``keep = true``) that have no ``captions`` row yet and
groups them by source file; ``FrameSampler`` actors (CPUs) decode each file once and keep each clip's frames
(an image clip: its keyframe, or the source file; a video clip: frames sampled at the model's 3 fps, at most 129,
by ``CaptionProcessor``'s own rule); ``ClipCaptioner`` actors (GPUs, or CPUs) hold the engine (vLLM, or the
transformers reference) and caption ``batch_size`` clips per call; the lake driver (``curation.lake.driver``) commits
``captions`` rows every ``commit_every`` rows, so a run killed at any point re-runs only the missing clips and never
writes a clip twice. Instructions come from ``captioner.templates``: the image or video template, or the
OCR-prior template with the clip's recognised text when ``stages/ocr`` holds some (section 3.1's visual-text
branch). A clip that fails to decode or that the captioner rejects gets a row with ``status="error"`` and the
message; the run goes on. A progress bar counts committed clips; the run ends with a summary (also appended to
``runs``).
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.config import RayConfig
from curation.jobconfig import Strict
from curation.lake.schemas import STATUS_ERROR, STATUS_OK, schema_for
from curation.lake.tables import Lake

log = logging.getLogger(__name__)

STAGE = "caption"
DECODED = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("media_type", pa.string()),
    pa.field("instruction", pa.string()),
    pa.field("template", pa.string()),
    pa.field("frames", pa.large_binary()),  # raw RGB uint8: (H, W, 3) image or (T, H, W, 3) sampled frames
    pa.field("shape", pa.list_(pa.int32())),
    pa.field("error", pa.string()),
])
"""What ``FrameSampler`` hands to ``ClipCaptioner``: one row per clip."""


# ------------------------------------------------------------------------------------------------- config
class Resources(Strict):
    """One actor pool: how many actors and what each holds."""

    concurrency: int = Field(default=1, ge=1, le=4096)
    num_cpus: float = Field(default=1.0, gt=0, le=256)
    num_gpus: float = Field(default=0.0, ge=0, le=16)


class EngineConfig(Strict):
    """vLLM engine settings (``captioner.backends.vllm_backend.EngineOptions``); null = decided per machine."""

    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    max_model_len: int = Field(default=8192, ge=512, le=131072)
    max_num_seqs: int = Field(default=32, ge=1, le=1024)
    memory_fraction: float | None = Field(default=None, gt=0, le=0.98)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    enforce_eager: bool = False  # true skips torch.compile: faster start, much slower decoding
    inline: bool | None = None


class CaptionJobConfig(Strict):
    """The caption job (see ``jobs/configs/caption_tiny.yaml``)."""

    lake: str
    model: str  # a saved captioner folder (config.json, model.safetensors, tokenizer)
    model_id: str | None = None  # written to every row; default: the folder's name
    backend: Literal["vllm", "hf"] = "vllm"
    max_new_tokens: int = Field(default=128, ge=1, le=4096)
    batch_size: int = Field(default=16, ge=1, le=4096)  # clips per engine call
    image_source: Literal["keyframe", "file"] = "keyframe"  # an image clip's stored keyframe, or its file
    video_max_side: int = Field(default=512, ge=32, le=4096)  # decode size; each frame then becomes one ViT view
    use_ocr: bool = True  # OCR-prior instruction when stages/ocr has text for the clip
    retry_errors: bool = False  # delete earlier error rows first, so those clips are tried again
    limit: int | None = Field(default=None, ge=1)  # caption at most this many pending clips (trial runs)
    commit_every: int = Field(default=32, ge=1, le=100_000)
    execution: Literal["ray", "local"] = "ray"  # local: the same actors in this process (tests, profiling)
    decode: Resources = Field(default_factory=lambda: Resources(concurrency=1))
    caption: Resources = Field(default_factory=Resources)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    def resolved_model_id(self) -> str:
        return self.model_id or Path(self.model).name


def load_caption_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CaptionJobConfig:
    """Read and validate a caption job YAML (``overrides``: dotted keys -> values); a bad key or value is a
    ``ConfigError`` naming it, raised before any work starts."""
    from curation.jobconfig import load_yaml_config

    return load_yaml_config(path, CaptionJobConfig, overrides)


# -------------------------------------------------------------------------------------------- work items
def pending_work(lake: Lake, cfg: CaptionJobConfig, done: set[str]) -> tuple[list[dict[str, Any]], int, int | None]:
    """Work items (one per source file, with its pending clips), the clip count, and the pinned ``clips`` version.

    A clip is pending when ``curated.keep`` is true, its ``clips`` row is ``ok`` and ``captions`` has no row.
    """
    from captioner.templates import instruction_for

    curated = lake.read("curated", columns=["clip_id", "keep"])
    keep = {c for c, k in zip(curated.column("clip_id").to_pylist(), curated.column("keep").to_pylist())
            if k and c not in done}
    clips_ds = lake.dataset("clips")
    if not keep or clips_ds is None:
        return [], 0, None
    texts: dict[str, list[str]] = {}
    if cfg.use_ocr and lake.exists("stages/ocr"):
        ocr = lake.read("stages/ocr", columns=["clip_id", "texts", "status"])
        for cid, t, st in zip(*(ocr.column(c).to_pylist() for c in ("clip_id", "texts", "status"))):
            if st == STATUS_OK and t:
                texts[cid] = t
    cols = ["clip_id", "uri", "media_type", "start_frame", "end_frame", "fps", "status"]
    clips = clips_ds.to_table(columns=cols)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    media: dict[str, tuple[str, float]] = {}
    count = 0
    for position, row in enumerate(clips.to_pylist()):
        cid = row["clip_id"]
        if cid not in keep or row["status"] != STATUS_OK:
            continue
        keep.discard(cid)  # one row per clip even if clips held it twice
        if cfg.limit is not None and count >= cfg.limit:
            break
        kind = row["media_type"] or "video"
        ocr_texts = texts.get(cid)
        groups[row["uri"]].append({
            "clip_id": cid, "position": position, "start_frame": int(row["start_frame"] or 0),
            "end_frame": int(row["end_frame"] or 1), "instruction": instruction_for(kind, ocr_texts),
            "template": f"{kind}_ocr" if ocr_texts else kind})
        media[row["uri"]] = (kind, float(row["fps"] or 0.0))
        count += 1
    items = [{"uri": uri, "media_type": media[uri][0], "fps": media[uri][1], "clips": group}
             for uri, group in groups.items()]
    return items, count, clips_ds.version


# ------------------------------------------------------------------------------------------- CPU: frames
@dataclass(frozen=True)
class SamplerSettings:
    """What ``FrameSampler`` needs (picklable): where clips live and the model's sampling rule."""

    clips_uri: str
    clips_version: int
    storage_options: dict[str, str] | None
    image_source: str
    video_max_side: int
    sample_fps: float
    max_frames: int


def _error_row(clip: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
    return {"clip_id": clip["clip_id"], "media_type": kind, "instruction": clip["instruction"],
            "template": clip["template"], "error": message}


def _frames_row(clip: dict[str, Any], kind: str, frames: np.ndarray) -> dict[str, Any]:
    frames = np.ascontiguousarray(frames, np.uint8)
    return {**_error_row(clip, kind, None), "frames": frames.tobytes(), "shape": list(frames.shape)}


class FrameSampler:
    """CPU actor: one source file per row in, one row per clip out (frames, or the reason there are none)."""

    def __init__(self, settings: SamplerSettings) -> None:
        import lance

        self.settings = settings
        self.clips = lance.dataset(settings.clips_uri, version=settings.clips_version,
                                   storage_options=settings.storage_options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for item in batch.to_pylist():
            rows.extend(self.sample(item))
        return pa.Table.from_pylist(rows, schema=DECODED)

    def sample(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        kind = item["media_type"]
        try:
            if kind == "image":
                return [self._image(item, clip) for clip in item["clips"]]
            return self._video(item)
        except Exception as e:  # noqa: BLE001 - a file that fails is recorded for each of its clips
            return [_error_row(clip, kind, f"decode: {type(e).__name__}: {e}") for clip in item["clips"]]

    def _image(self, item: dict[str, Any], clip: dict[str, Any]) -> dict[str, Any]:
        from captioner.processor import decode_image

        try:
            if self.settings.image_source == "file":
                rgb = decode_image(item["uri"])
            else:
                keyframes = self.clips.take([clip["position"]], columns=["keyframes"]).column(0)[0].as_py() or []
                if not keyframes:
                    raise ValueError("clip has no keyframe")
                rgb = decode_image(keyframes[0])
        except Exception as e:  # noqa: BLE001 - bad input is data
            return _error_row(clip, "image", f"decode: {type(e).__name__}: {e}")
        return _frames_row(clip, "image", rgb)

    def _video(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Decode the file once from its first frame (frame numbering as the shot pass counts it)."""
        from captioner.processor import sample_frame_indices
        from curation.media.decode import decode_video
        from curation.media.probe import MediaError

        fps = item["fps"]
        wanted: dict[int, list[tuple[str, int]]] = defaultdict(list)  # frame index -> (clip, slot)
        frames: dict[str, list[np.ndarray | None]] = {}
        by_id = {c["clip_id"]: c for c in item["clips"]}
        rows, bad = [], {}
        for clip in item["clips"]:
            try:
                picks = sample_frame_indices(clip["end_frame"] - clip["start_frame"], fps, self.settings.sample_fps,
                                             self.settings.max_frames)
            except ValueError as e:
                bad[clip["clip_id"]] = f"sampling: {e}"
                continue
            frames[clip["clip_id"]] = [None] * len(picks)
            for slot, offset in enumerate(picks):
                wanted[clip["start_frame"] + offset].append((clip["clip_id"], slot))
        stream_error = None
        if wanted:
            try:
                for f in decode_video(item["uri"], max(wanted) + 1):
                    for cid, slot in wanted.get(f.index, ()):
                        frames[cid][slot] = f.bgr(self.settings.video_max_side)[..., ::-1]  # BGR -> RGB
            except MediaError as e:
                stream_error = str(e)
        for cid, clip in by_id.items():
            if cid in bad:
                rows.append(_error_row(clip, "video", bad[cid]))
            elif any(fr is None for fr in frames[cid]):
                got = sum(fr is not None for fr in frames[cid])
                why = stream_error or "the stream ended early"
                rows.append(_error_row(clip, "video", f"decode: {got} of {len(frames[cid])} sampled frames ({why})"))
            else:
                rows.append(_frames_row(clip, "video", np.stack(frames[cid])))
        return rows


# -------------------------------------------------------------------------------------------- GPU: captions
@dataclass(frozen=True)
class CaptionerSettings:
    """What ``ClipCaptioner`` needs (picklable)."""

    model: str
    model_id: str
    backend: str
    max_new_tokens: int
    engine: dict[str, Any]
    on_gpu: bool


def make_backend(settings: CaptionerSettings) -> Any:
    """The configured backend; vLLM runs in-process where importable, else in the vLLM environment's worker."""
    if settings.backend == "vllm":
        from captioner.backends.vllm_backend import EngineOptions, VLLMBackend

        return VLLMBackend(settings.model, options=EngineOptions(**settings.engine))
    from captioner.backends.hf import HFBackend

    return HFBackend(settings.model, device="cuda" if settings.on_gpu else "cpu")


class ClipCaptioner:
    """GPU (or CPU) actor: loads the engine once, captions batches of decoded clips into ``captions`` rows."""

    def __init__(self, settings: CaptionerSettings) -> None:
        self.settings = settings
        self.backend = make_backend(settings)
        from captioner.model import load_config

        self.sample_fps = load_config(settings.model).sample_fps

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(self.caption_rows(batch.to_pylist()), schema=schema_for("captions"))

    def caption_rows(self, decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from captioner.processor import ImageInput, VideoInput
        from captioner.templates import PROMPT_VERSION

        now = dt.datetime.now(dt.UTC)
        base = {"model_id": self.settings.model_id, "prompt_version": PROMPT_VERSION,
                "backend": self.settings.backend, "captioned_at": now}
        out, media, instructions, where = [], [], [], []
        for row in decoded:
            entry = {"clip_id": row["clip_id"], "media_type": row["media_type"], "template": row["template"], **base}
            out.append(entry)
            if row["error"] is not None:
                entry.update(status=STATUS_ERROR, error=row["error"])
                continue
            pixels = np.frombuffer(row["frames"], np.uint8).reshape(row["shape"])
            entry["num_frames"] = 1 if row["media_type"] == "image" else int(pixels.shape[0])
            # Video frames arrive sampled by the processor's rule: spaced one sampling step apart, all kept.
            media.append(ImageInput(pixels) if row["media_type"] == "image"
                         else VideoInput(pixels, fps=self.sample_fps))
            instructions.append(row["instruction"])
            where.append(len(out) - 1)
        if media:
            try:
                results = self.backend.caption(media, instructions, max_new_tokens=self.settings.max_new_tokens)
            except Exception as e:
                log.exception("caption batch failed")
                results = [None] * len(media)
                for i in where:
                    out[i].update(status=STATUS_ERROR, error=f"engine: {type(e).__name__}: {e}")
            for i, res in zip(where, results):
                if res is None:
                    continue
                if res.error is not None:
                    out[i].update(status=STATUS_ERROR, error=f"caption: {res.error}")
                else:
                    out[i].update(status=STATUS_OK, caption=res.text, num_visual_tokens=res.num_visual_tokens)
        return out


# --------------------------------------------------------------------------------------------------- driver
@dataclass
class CaptionSummary:
    """Counts and speed of one run."""

    pending: int = 0
    written: int = 0
    ok: int = 0
    failed: int = 0
    visual_tokens: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)  # a few messages, for the summary

    def text(self) -> str:
        rate = self.written / self.wall_s if self.wall_s > 0 else 0.0
        lines = [(f"caption: {self.pending} clips pending, {self.written} written ({self.ok} ok, {self.failed} "
                  f"failed) in {self.wall_s:.1f}s ({rate:.2f} clips/s, {self.visual_tokens} visual tokens)")]
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


def _batches(items: list[dict[str, Any]], cfg: CaptionJobConfig, sampler: SamplerSettings,
             captioner: CaptionerSettings) -> Iterator[pa.Table]:
    if cfg.execution == "local":
        frames, model = FrameSampler(sampler), ClipCaptioner(captioner)
        decoded: list[dict[str, Any]] = []
        for item in items:
            decoded.extend(frames.sample(item))
            while len(decoded) >= cfg.batch_size:
                yield model(pa.Table.from_pylist(decoded[:cfg.batch_size], schema=DECODED))
                decoded = decoded[cfg.batch_size:]
        if decoded:
            yield model(pa.Table.from_pylist(decoded, schema=DECODED))
        return
    import ray
    import ray.data

    from curation.ray_runtime import ensure_ray

    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    if cfg.caption.num_gpus > 0 and ray.cluster_resources().get("GPU", 0.0) < cfg.caption.num_gpus:
        raise RuntimeError(f"caption.num_gpus={cfg.caption.num_gpus} but the Ray cluster has "
                           f"{ray.cluster_resources().get('GPU', 0.0)} GPU(s); set caption.num_gpus: 0 for CPUs")
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 2000)))
    ds = ds.map_batches(FrameSampler, fn_constructor_args=(sampler,), batch_size=1, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=min(cfg.decode.concurrency, len(items))),
                        num_cpus=cfg.decode.num_cpus)
    ds = ds.map_batches(ClipCaptioner, fn_constructor_args=(captioner,), batch_size=cfg.batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.caption.concurrency),
                        num_cpus=cfg.caption.num_cpus, num_gpus=cfg.caption.num_gpus or None)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


def run_caption_job(cfg: CaptionJobConfig, progress: bool = True) -> CaptionSummary:
    """Caption every pending curated clip (see module docs); returns the run's counts."""
    from tqdm import tqdm

    from captioner.model import load_config
    from curation.lake.driver import LakeJob
    from curation.stages.registry import MissingInputError

    model_config = load_config(cfg.model)  # a missing model folder fails here, before any work
    lake = Lake(cfg.lake)
    if not lake.exists("curated"):
        raise MissingInputError(f"the caption job reads the table 'curated', which is not in the lake {lake.root}: "
                                "run the curation's 'select' stage first")
    if cfg.retry_errors and lake.exists("captions"):
        lake.dataset("captions").delete(f"status = '{STATUS_ERROR}'")
    bar = tqdm(desc="captioned", unit="clip", disable=not progress)
    tokens = [0]

    def count_tokens(_: str, rows: pa.Table) -> None:
        tokens[0] += sum(int(t or 0) for t in rows.column("num_visual_tokens").to_pylist())

    job = LakeJob(lake, STAGE, ["captions"], commit_every=cfg.commit_every,
                  progress=lambda n: bar.update(n - bar.n), on_rows=count_tokens)
    items, count, version = pending_work(lake, cfg, job.done())
    bar.total = count
    if items:
        sampler = SamplerSettings(lake.uri("clips"), version, lake.storage_options, cfg.image_source,
                                  cfg.video_max_side, model_config.sample_fps, model_config.max_frames)
        captioner = CaptionerSettings(cfg.model, cfg.resolved_model_id(), cfg.backend, cfg.max_new_tokens,
                                      cfg.engine.model_dump(), cfg.caption.num_gpus > 0)
        log.info("caption: %d clips in %d files (%s backend, %s)", count, len(items), cfg.backend, cfg.execution)
        job.consume(_batches(items, cfg, sampler, captioner))
    bar.close()
    res = job.finish(count, config=cfg, inputs={"clips": version, "curated": lake.version("curated")},
                     counts={"kept": job.result.status.get("captions", {}).get(STATUS_OK, 0)})
    return _summary(res, tokens[0], job.errors)


def _summary(res: Any, visual_tokens: int, errors: list[str]) -> CaptionSummary:
    counts = res.counts
    return CaptionSummary(pending=res.count_in, written=res.written.get("captions", 0), ok=counts["ok"],
                          failed=counts["failed"], visual_tokens=visual_tokens, wall_s=res.wall_s,
                          errors=[e.removeprefix("captions: ") for e in errors])
