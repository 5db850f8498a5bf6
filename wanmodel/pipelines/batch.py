"""Batch sampling into the lake's ``samples`` table, as a Ray Data job with one loaded pipeline per actor.

Prompts come from the config (inline list), a text file (one per line), a JSONL file (objects with ``prompt`` and
optional ``seed``, ``negative_prompt``, ``image``) or a Lance table (a column of prompts). Each prompt is sampled
once per configured seed (or with its own seed). A sample's key is a hash of everything that determines it (task,
prompt, negative prompt, seed, condition image, settings, model, rewriting), so a re-run skips what is already in
``samples`` and a changed setting makes new rows instead of overwriting old ones. Rows are committed through the
lake driver (``curation.lake.driver``) every ``commit_every`` samples: a crash loses at most the uncommitted ones,
never duplicates.
A bad input (invalid JSON line, empty prompt, unreadable image) becomes a ``status="error"`` row with the message.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.lake.schemas import SAMPLES, STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake

__all__ = ["ModelPaths", "SampleJobConfig", "SampleSummary", "Sampler", "build_pipeline", "load_sample_config",
           "pending_items", "run_sampling", "sample_items"]

log = logging.getLogger(__name__)

ITEM_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("prompt", pa.string()), ("negative_prompt", pa.string()), ("seed", pa.int64()),
    ("condition_uri", pa.string()), ("input_error", pa.string()),
])
DTYPES = ("float32", "bfloat16", "float16")


class ModelPaths(BaseModel):
    """Where the weights are (local paths), or ``random_tiny: true`` for tiny random models (demos and tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dit: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None  # default: the text_encoder folder
    image_encoder: str | None = None  # i2v: open_clip or official CLIP checkpoint
    random_tiny: bool = False
    tiny_dir: str | None = None  # where the tiny models are built (default: a folder in the temp dir)
    tiny_seed: int = 0

    def identity(self, task: str) -> str:
        """What the ``model`` column records and the sample key includes."""
        if self.random_tiny:
            return f"random-tiny:{self.tiny_seed}"
        parts = {"dit": self.dit, "vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer}
        if task == "i2v":
            parts["image_encoder"] = self.image_encoder
        return json.dumps({k: str(Path(v).expanduser().resolve()) if v else None for k, v in parts.items()},
                          sort_keys=True)


class SampleJobConfig(BaseModel):
    """A batch sampling run; validated (unknown keys, bad values, bad sampling settings) before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lake: str
    task: Literal["t2v", "t2i", "i2v"] = "t2v"
    prompts: list[str] = Field(default_factory=list)  # inline prompts
    prompts_file: str | None = None  # .txt (one per line, '#' comments) or .jsonl
    prompts_table: str | None = None  # a Lance dataset path, or a table name in the lake
    prompt_column: str = "prompt"
    models: ModelPaths = Field(default_factory=ModelPaths)
    sampling: dict[str, Any] = Field(default_factory=dict)  # SamplingSettings fields; the task's defaults otherwise
    seeds: list[int] = Field(default_factory=lambda: [0])  # every prompt is sampled once per seed
    negative_prompt: str | None = None  # default: the released one for the task
    rewrite: dict[str, Any] | None = None  # RewriteSettings fields (backend, model_path, ...); off by default
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(1, ge=1)  # prompts per DiT batch
    num_actors: int = Field(1, ge=1)
    gpus_per_actor: float = Field(0.0, ge=0)
    cpus_per_actor: float = Field(1.0, gt=0)
    torch_threads: int | None = Field(None, ge=1)
    commit_every: int = Field(4, ge=1)
    limit: int | None = Field(None, ge=1)  # at most this many new samples this run
    cache: str | None = None  # diffusion-cache preset (wanmodel.accel.cache); None samples exactly
    speed: dict[str, Any] = Field(default_factory=dict)  # SpeedOptions: fp8, attention, offload (wanmodel.accel)

    @model_validator(mode="after")
    def _check(self) -> SampleJobConfig:
        sources = [bool(self.prompts), self.prompts_file is not None, self.prompts_table is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of prompts (inline list), prompts_file, prompts_table")
        if self.prompts_file is not None and not Path(self.prompts_file).is_file():
            raise ValueError(f"prompts_file: no such file {self.prompts_file}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: need at least one seed, all >= 0; got {self.seeds}")
        self.settings()  # a bad sampling key or value is an error now
        if self.cache is not None:
            from wanmodel.accel.cache_config import cache_preset

            cache_preset(self.cache)  # an unknown preset is an error now
        self.speed_options()  # a bad fp8 / attention / offload value is an error now
        if self.rewrite is not None:
            from wanmodel.text.rewrite import RewriteSettings

            RewriteSettings(**self.rewrite)
        models = self.models
        if not models.random_tiny:
            needed = ["dit", "vae", "text_encoder"] + (["image_encoder"] if self.task == "i2v" else [])
            missing = [name for name in needed if getattr(models, name) is None]
            if missing:
                raise ValueError(f"models: {', '.join(missing)} required (local paths), or set random_tiny: true")
        return self

    def speed_options(self):
        """The validated ``SpeedOptions`` of this run (``wanmodel.accel.options``)."""
        from wanmodel.accel.options import SpeedOptions

        try:
            return SpeedOptions(**self.speed)
        except (TypeError, ValueError) as error:
            raise ValueError(f"speed: {error}") from None

    def settings(self):
        """The validated ``SamplingSettings`` of this run."""
        from wanmodel.pipelines.common import I2V_SETTINGS, SamplingSettings

        base = I2V_SETTINGS if self.task == "i2v" else SamplingSettings()
        sampling = dict(self.sampling)
        if self.task == "t2i" and sampling.setdefault("num_frames", 1) != 1:
            raise ValueError("sampling.num_frames: task t2i makes single frames")
        try:
            return base.updated(**sampling).validate()
        except ValueError as error:
            raise ValueError(f"sampling: {error}") from None


def load_sample_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SampleJobConfig:
    """YAML -> validated config; ``overrides`` are dotted keys (``sampling.num_steps``) applied first."""
    from curation.jobconfig import load_yaml_config

    return load_yaml_config(path, SampleJobConfig, overrides)


# --------------------------------------------------------------------------------------------- items
def _output_changing_speed(cfg: SampleJobConfig) -> dict[str, Any]:
    """The speed options that change what is sampled (FP8, the attention kernel), for the sample id; offload
    moves weights around and samples the same latents."""
    speed = cfg.speed_options()
    return {k: v for k, v in (("fp8", speed.fp8), ("attention", speed.attention)) if v not in ("off", None)}


def _sample_id(cfg: SampleJobConfig, prompt: str, negative: str | None, seed: int, condition: str | None) -> str:
    blob = json.dumps({"task": cfg.task, "prompt": prompt, "negative_prompt": negative, "seed": seed,
                       "condition_uri": condition, "settings": cfg.settings().to_dict(),
                       "model": cfg.models.identity(cfg.task), "rewrite": cfg.rewrite,
                       **({"cache": cfg.cache} if cfg.cache is not None else {}),
                       **_output_changing_speed(cfg)}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _records(cfg: SampleJobConfig, lake: Lake) -> list[dict[str, Any]]:
    """Prompt records: {prompt, seed?, negative_prompt?, image?} or {input_error, raw}."""
    if cfg.prompts:
        return [{"prompt": p} for p in cfg.prompts]
    if cfg.prompts_file is not None:
        path = Path(cfg.prompts_file)
        lines = path.read_text(encoding="utf-8").splitlines()
        if path.suffix.lower() != ".jsonl":
            return [{"prompt": line.strip()} for line in lines if line.strip() and not line.lstrip().startswith("#")]
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                record = {"prompt": line, "input_error": f"{path.name} line {number}: invalid JSON ({error})"}
            if not isinstance(record, dict):
                record = {"prompt": line, "input_error": f"{path.name} line {number}: not a JSON object"}
            records.append(record)
        return records
    import lance

    table_path = cfg.prompts_table
    dataset = lance.dataset(table_path) if table_path.endswith(".lance") or os.path.isdir(table_path) \
        else lake.dataset(table_path)
    if dataset is None:
        raise FileNotFoundError(f"prompts_table: no Lance table {table_path!r} (a .lance path or a table of the lake)")
    if cfg.prompt_column not in dataset.schema.names:
        raise ValueError(f"prompts_table has no column {cfg.prompt_column!r}; columns: {dataset.schema.names}")
    columns = [c for c in (cfg.prompt_column, "seed", "negative_prompt", "image") if c in dataset.schema.names]
    rows = dataset.to_table(columns=columns).to_pylist()
    return [{**row, "prompt": row.pop(cfg.prompt_column)} for row in rows]


def sample_items(cfg: SampleJobConfig, lake: Lake) -> list[dict[str, Any]]:
    """Every sample the config asks for (one per record and seed), with its key; duplicates removed."""
    items, seen = [], set()
    for record in _records(cfg, lake):
        prompt = record.get("prompt")
        error = record.get("input_error")
        if not isinstance(prompt, str):
            error = error or f"record has no prompt string: {json.dumps(record, ensure_ascii=False)[:200]}"
            prompt = json.dumps(record, ensure_ascii=False)
        seed = record.get("seed")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            error = error or f"seed must be an integer >= 0, got {seed!r}"
            seed = None
        negative = record.get("negative_prompt", cfg.negative_prompt)
        if negative is None:  # the released default, recorded explicitly
            from wanmodel.pipelines.common import (
                DEFAULT_NEGATIVE_PROMPT,
                I2V_NEGATIVE_PROMPT,
            )

            negative = I2V_NEGATIVE_PROMPT if cfg.task == "i2v" else DEFAULT_NEGATIVE_PROMPT
        condition = record.get("image")
        if cfg.task == "i2v" and not condition and not error:
            error = "task i2v needs an 'image' (path) for every prompt"
        for s in ([seed] if seed is not None else cfg.seeds):
            sample_id = _sample_id(cfg, prompt, negative, s, condition)
            if sample_id not in seen:
                seen.add(sample_id)
                items.append({"sample_id": sample_id, "prompt": prompt, "negative_prompt": negative, "seed": s,
                              "condition_uri": condition, "input_error": error})
    return items


def pending_items(cfg: SampleJobConfig, lake: Lake, done: set[str]) -> list[dict[str, Any]]:
    """The items whose key is not in ``done``, at most ``cfg.limit``."""
    todo = [item for item in sample_items(cfg, lake) if item["sample_id"] not in done]
    return todo[: cfg.limit] if cfg.limit is not None else todo


# -------------------------------------------------------------------------------------------- sampling
def _tiny_dir(cfg: SampleJobConfig) -> Path:
    return Path(cfg.models.tiny_dir or Path(tempfile.gettempdir()) / f"wan_tiny_models_{cfg.models.tiny_seed}")


def build_pipeline(cfg: SampleJobConfig):
    """The pipeline for ``cfg.task`` with its weights loaded (tiny random ones with ``models.random_tiny``)."""
    import torch

    from wanmodel.pipelines.i2v import WanI2VPipeline
    from wanmodel.pipelines.t2v import WanT2VPipeline
    from wanmodel.text.rewrite import RewriteSettings, build_rewriter

    models = cfg.models
    task = "i2v" if cfg.task == "i2v" else "t2v"
    if models.random_tiny:
        from wanmodel.pipelines.tiny import build_tiny_models

        tiny = build_tiny_models(_tiny_dir(cfg), task, seed=models.tiny_seed)
        paths = {"dit": tiny.dit, "vae": tiny.vae, "text_encoder": tiny.text_encoder, "image_encoder": tiny.clip,
                 "tokenizer": None}
    else:
        paths = {"dit": models.dit, "vae": models.vae, "text_encoder": models.text_encoder,
                 "image_encoder": models.image_encoder, "tokenizer": models.tokenizer}
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    speed = cfg.speed_options()
    common: dict[str, Any] = {
        "tokenizer": paths["tokenizer"], "device": "cpu" if speed.loads_on_cpu else device,
        "text_device": "cpu" if speed.offload == "blocks" else None, "dtype": getattr(torch, cfg.dtype),
        "rewriter": build_rewriter(RewriteSettings(**cfg.rewrite)) if cfg.rewrite else None,
        "defaults": cfg.settings()}
    if cfg.negative_prompt is not None:
        common["negative_prompt"] = cfg.negative_prompt
    if task == "i2v":
        pipeline = WanI2VPipeline.from_pretrained(paths["dit"], paths["vae"], paths["text_encoder"],
                                                  image_encoder=paths["image_encoder"], **common)
    else:
        pipeline = WanT2VPipeline.from_pretrained(paths["dit"], paths["vae"], paths["text_encoder"], **common)
    pipeline.device = torch.device(device)
    from wanmodel.accel.options import apply_speed_options

    apply_speed_options(pipeline, speed)
    return pipeline


def _read_image(uri: str):
    import cv2

    image = cv2.imread(uri, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read condition image {uri}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _encode(cfg: SampleJobConfig, video, fps: float) -> bytes:
    from wanmodel.pipelines.common import mp4_bytes

    if cfg.task == "t2i":
        import cv2

        ok, png = cv2.imencode(".png", cv2.cvtColor(video[0], cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("PNG encoding failed")
        return png.tobytes()
    return mp4_bytes(video, fps)


def _row(cfg: SampleJobConfig, item: dict[str, Any], **values: Any) -> dict[str, Any]:
    settings = cfg.settings()
    return {"sample_id": item["sample_id"], "task": cfg.task, "prompt": item["prompt"],
            "negative_prompt": item["negative_prompt"], "seed": item["seed"], "condition_uri": item["condition_uri"],
            "settings_json": json.dumps(settings.to_dict(), sort_keys=True), "model": cfg.models.identity(cfg.task),
            "media_format": "png" if cfg.task == "t2i" else "mp4", "num_frames": settings.num_frames,
            "height": settings.height, "width": settings.width, "fps": float(settings.fps),
            "created_at": dt.datetime.now(dt.UTC), **values}


def _generate(pipeline, cfg: SampleJobConfig, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One batched ``generate`` over ``items``; ok rows (raises on any failure)."""
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"seed": [item["seed"] for item in items],
                              "negative_prompt": [item["negative_prompt"] for item in items]}
    if cfg.task == "i2v":
        kwargs["images"] = [_read_image(item["condition_uri"]) for item in items]
    if cfg.cache is not None:
        kwargs["cache"] = cfg.cache
    result = pipeline.generate([item["prompt"] for item in items], **kwargs)
    wall = (time.perf_counter() - start) / len(items)
    fps = result.settings.fps
    return [_row(cfg, item, used_prompt=used, video=_encode(cfg, video, fps), wall_s=wall, status=STATUS_OK)
            for item, used, video in zip(items, result.used_prompts, result.videos)]


def sample_rows(pipeline, cfg: SampleJobConfig, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``samples`` rows for ``items``: one batched call, and on failure one call per item so that a bad item
    becomes an error row without taking the others with it."""
    rows = [_row(cfg, item, status=STATUS_ERROR, error=item["input_error"]) for item in items if item["input_error"]]
    good = [item for item in items if not item["input_error"]]
    if not good:
        return rows
    try:
        return rows + _generate(pipeline, cfg, good)
    except Exception as error:  # noqa: BLE001 - isolate the failing item below
        if len(good) == 1:
            log.debug("sample %s failed: %s", good[0]["sample_id"], error)
            return rows + [_row(cfg, good[0], status=STATUS_ERROR, error=f"{type(error).__name__}: {error}")]
    for item in good:
        rows += sample_rows(pipeline, cfg, [item])
    return rows


class Sampler:
    """Ray Data actor: loads the pipeline once, turns batches of items into ``samples`` rows."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch

        self.cfg = SampleJobConfig(**config)
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        self.pipeline = build_pipeline(self.cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = sample_rows(self.pipeline, self.cfg, batch.to_pylist())
        return pa.Table.from_pylist(rows, schema=SAMPLES)


# --------------------------------------------------------------------------------------------- driver
@dataclass
class SampleSummary:
    """Counts of one run."""

    requested: int = 0
    already_done: int = 0
    attempted: int = 0
    written: int = 0
    status: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def text(self) -> str:
        return (f"samples: {self.requested} requested, {self.already_done} already in the table, "
                f"{self.attempted} sampled this run, {self.written} written {self.status}, {self.wall_s:.1f} s")


def run_sampling(cfg: SampleJobConfig, *, backend: Literal["ray", "local"] = "ray") -> SampleSummary:
    """Sample every pending item of ``cfg`` into ``<lake>/samples`` through the lake driver and record the run in
    ``runs``.

    ``backend="ray"``: Ray Data ``map_batches`` over ``num_actors`` ``Sampler`` actors (``gpus_per_actor`` GPUs
    each) on the current Ray (the embedded local one when none is running); ``"local"``: in this process.
    """
    from curation.lake.driver import LakeJob

    lake = Lake(cfg.lake)
    job = LakeJob(lake, f"sample/{cfg.task}", ["samples"], commit_every=cfg.commit_every)
    everything = sample_items(cfg, lake)
    todo = pending_items(cfg, lake, job.done())
    already = sum(item["sample_id"] in job.done() for item in everything)
    if cfg.models.random_tiny:  # build once here, so actors only load (they would race to write the folder)
        from wanmodel.pipelines.tiny import build_tiny_models

        build_tiny_models(_tiny_dir(cfg), "i2v" if cfg.task == "i2v" else "t2v", seed=cfg.models.tiny_seed)
    job.consume(_iterate(cfg, todo, backend))
    res = job.finish(len(todo), config=cfg, inputs=["samples"],
                     counts={"kept": job.result.written.get("samples", 0)})
    return SampleSummary(requested=len(everything), already_done=already, attempted=len(todo),
                         written=res.written.get("samples", 0), status=res.status["samples"], wall_s=res.wall_s)


def _iterate(cfg: SampleJobConfig, todo: list[dict[str, Any]], backend: str):
    if not todo:
        return
    items = pa.Table.from_pylist(todo, schema=ITEM_SCHEMA)
    if backend == "local":
        sampler = Sampler(cfg.model_dump())
        for start in range(0, items.num_rows, cfg.batch_size):
            yield sampler(items.slice(start, cfg.batch_size))
        return
    if backend != "ray":
        raise ValueError(f"backend must be 'ray' or 'local', got {backend!r}")
    import ray.data

    from curation.ray_runtime import ensure_ray

    ensure_ray()
    blocks = -(-items.num_rows // cfg.batch_size)  # one block per batch, so every actor gets work
    dataset = ray.data.from_arrow(items).repartition(blocks)
    dataset = dataset.map_batches(
        Sampler, fn_constructor_kwargs={"config": cfg.model_dump()}, batch_size=cfg.batch_size,
        batch_format="pyarrow", concurrency=cfg.num_actors, num_gpus=cfg.gpus_per_actor or None,
        num_cpus=cfg.cpus_per_actor)
    yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
