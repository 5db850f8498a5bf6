"""The Wan-Bench scoring job: a ``samples`` table or a folder of mp4s -> ``bench_scores`` (report section 4.6).

One row per (run, sample, dimension), keyed ``f"{run}@{sample_id}@{dimension}"`` and written through the lake
driver (``curation.lake.driver.LakeJob``), so a re-run (after kill -9 too) scores only the missing pairs and never
one twice. Ray Data runs two actor pools: CPU ``Decoder`` actors decode each sample once (frames subsampled and
resized, a thumbnail for the report), then ``Scorer`` actors, each of which builds every configured dimension once
(its model weights load once per actor), score the decoded videos. A sample that does not decode is an error row for
each of its dimensions; a dimension that raises on a video (``ValueError``: too few frames, metadata absent) is an
error row for that pair only. ``bench_samples`` holds each scored sample's prompt and thumbnail. At the end the run
summary (per-dimension means and the weighted total) is written to ``bench_runs`` (``bench.summary``).
"""
from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from curation.jobconfig import Strict, load_yaml_config
from curation.lake.schemas import BENCH_SAMPLES, BENCH_SCORES, STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake

log = logging.getLogger(__name__)
STAGE = "bench"
TABLES = ("bench_samples", "bench_scores")  # commit order: a sample's scores mark its work done


class PoolConfig(Strict):
    """One Ray Data actor pool."""

    concurrency: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)


class RayConfig(Strict):
    address: str | None = None  # None: the embedded local Ray; "auto" or host:port joins a cluster
    num_cpus: int | None = Field(None, ge=1)


class BenchJobConfig(Strict):
    """A Wan-Bench scoring run; validated before any work."""

    lake: str  # where bench_scores / bench_samples / bench_runs are written (and samples read)
    run: str = Field(min_length=1)  # the run's name: one model's samples scored with one config
    samples_table: str = "samples"  # a table of ``lake``, or a Lance dataset path
    samples_model: str | None = None  # only the samples whose ``model`` column equals this
    videos_dir: str | None = None  # score this folder of mp4s instead of a samples table
    prompts_file: str | None = None  # the prompt suite (JSONL): metadata and the dimensions of each prompt
    dimensions: list[str] = Field(min_length=1)
    dimension_config: dict[str, dict[str, Any]] = Field(default_factory=dict)  # a dimension's config section
    dimension_modules: list[str] = Field(default_factory=list)  # imported first: they add to DIMENSIONS
    weights_file: str | None = None  # fitted weights (JSON {dimension: weight}); uniform when absent
    max_frames: int = Field(32, ge=1)
    max_side: int = Field(256, ge=16)
    execution: Literal["ray", "local"] = "ray"
    decode: PoolConfig = Field(default_factory=PoolConfig)
    score: PoolConfig = Field(default_factory=PoolConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    batch_size: int = Field(1, ge=1)  # decoded videos per Scorer call
    commit_every: int = Field(4, ge=1)  # samples per lake commit
    torch_threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BenchJobConfig:
        if "@" in self.run:
            raise ValueError(f"run: '@' separates key parts and cannot be in a run name ({self.run!r})")
        unknown = sorted(set(self.dimension_config) - set(self.dimensions))
        if unknown:
            raise ValueError(f"dimension_config names dimensions not in dimensions: {unknown}")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"dimensions: listed twice: {self.dimensions}")
        return self


def load_bench_config(path: str, overrides: dict[str, Any] | None = None) -> BenchJobConfig:
    return load_yaml_config(path, BenchJobConfig, overrides)


def registry(modules: list[str]) -> dict[str, Any]:
    """``bench.dimensions.DIMENSIONS`` after importing ``modules`` (which may register more)."""
    import bench.dimensions as package

    for name in modules:
        importlib.import_module(name)
    return getattr(package, "DIMENSIONS", {})


def check_dimensions(cfg: BenchJobConfig) -> dict[str, str]:
    """``{dimension: group}``; an unknown name is an error listing the known ones."""
    known = registry(cfg.dimension_modules)
    missing = [d for d in cfg.dimensions if d not in known]
    if missing:
        raise ValueError(f"unknown dimensions {missing}; known: {sorted(known)}")
    return {d: str(getattr(known[d], "group", "") or "") for d in cfg.dimensions}


# ------------------------------------------------------------------------------------------------ items
ITEM = pa.schema([("sample_id", pa.string()), ("uri", pa.string()), ("prompt", pa.string()),
                  ("meta_json", pa.string()), ("dims", pa.list_(pa.string()))])


def all_items(cfg: BenchJobConfig, lake: Lake) -> list[dict[str, Any]]:
    """Every sample of the run with the dimensions it is scored on (the suite's, else all configured)."""
    from bench.inputs import folder_items, read_suite

    by_prompt, by_file = read_suite(cfg.prompts_file)
    if cfg.videos_dir is not None:
        rows = folder_items(cfg.videos_dir)
    else:
        rows = _sample_rows(cfg, lake)
    items = []
    for row in rows:
        entry = by_file.get(row["sample_id"]) or by_prompt.get(row["prompt"])
        if entry is not None and cfg.videos_dir is not None:
            row["prompt"] = entry.prompt  # a folder video the suite names by file
        wanted = entry.dimensions if entry is not None and entry.dimensions else cfg.dimensions
        dims = [d for d in cfg.dimensions if d in wanted]
        if dims:
            items.append({**row, "meta_json": json.dumps(entry.meta if entry else {}, sort_keys=True),
                          "dims": dims})
    return items


def _samples_dataset(cfg: BenchJobConfig, lake: Lake):
    import lance

    name = cfg.samples_table
    ds = lance.dataset(name) if name.endswith(".lance") else lake.dataset(name)
    if ds is None:
        raise FileNotFoundError(f"samples_table: no table {name!r} in the lake {lake.root} (run `wan bench sample`"
                                " or the sample job first, or set videos_dir)")
    return ds


def _sample_rows(cfg: BenchJobConfig, lake: Lake) -> list[dict[str, Any]]:
    ds = _samples_dataset(cfg, lake)
    where = f"status = '{STATUS_OK}'"
    if cfg.samples_model is not None:
        where += " AND model = '" + cfg.samples_model.replace("'", "''") + "'"
    table = ds.to_table(columns=["sample_id", "prompt"], filter=where)
    uri = f"lance:{ds.uri}#{ds.version}"
    return [{"sample_id": s, "uri": uri, "prompt": p or ""} for s, p in
            zip(table.column("sample_id").to_pylist(), table.column("prompt").to_pylist())]


def check_run_samples(cfg: BenchJobConfig, lake: Lake, items: list[dict[str, Any]], done: set[str]) -> None:
    """Refuse a run name that already holds scores of samples this job does not score (another model's samples, an
    older sample set): the run's summary averages every score under its name, so it would mix the two silently.
    ``done`` is the ``bench_scores`` keys (``run@sample_id@dimension``; run names hold no '@')."""
    prefix = f"{cfg.run}@"
    scored = {key[len(prefix):].rsplit("@", 1)[0] for key in done if key.startswith(prefix)}
    foreign = sorted(scored - {i["sample_id"] for i in items})
    if foreign:
        raise ValueError(f"bench run {cfg.run!r} in the lake {lake.root} already holds scores of {len(foreign)} "
                         f"samples this job does not score (e.g. {foreign[0]!r}: another model's or an older sample "
                         f"set); its total would average both. Score under a new run name.")


def pending(cfg: BenchJobConfig, items: list[dict[str, Any]], done: set[str]) -> list[dict[str, Any]]:
    """The items with at least one (sample, dimension) not yet in ``bench_scores``, with only those dimensions."""
    out = []
    for item in items:
        dims = [d for d in item["dims"] if f"{cfg.run}@{item['sample_id']}@{d}" not in done]
        if dims:
            out.append({**item, "dims": dims})
    return out


# ---------------------------------------------------------------------------------------------- decoding
DECODED = pa.schema([*ITEM, ("frames", pa.large_binary()), ("shape", pa.list_(pa.int32())), ("fps", pa.float64()),
                     ("thumbnail", pa.binary()), ("error", pa.string())])


class Decoder:
    """CPU actor: reads each item's bytes once and decodes them (frames, rate, thumbnail) or records why not."""

    def __init__(self, max_frames: int, max_side: int) -> None:
        self.max_frames, self.max_side = max_frames, max_side
        self._datasets: dict[str, Any] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.decode(item) for item in batch.to_pylist()], schema=DECODED)

    def decode(self, item: dict[str, Any]) -> dict[str, Any]:
        from bench.inputs import decode_bytes, thumbnail_png

        try:
            media = decode_bytes(self._read(item), self.max_frames, self.max_side)
            return {**item, "frames": media.frames.tobytes(), "shape": list(media.frames.shape), "fps": media.fps,
                    "thumbnail": thumbnail_png(media.frames), "error": None}
        except Exception as e:  # noqa: BLE001 - a bad sample is data: error rows for its dimensions
            return {**item, "error": f"decode: {type(e).__name__}: {e}"}

    def _read(self, item: dict[str, Any]) -> bytes:
        uri = item["uri"]
        if not uri.startswith("lance:"):
            with open(uri, "rb") as f:
                return f.read()
        path, version = uri[len("lance:"):].rsplit("#", 1)
        if path not in self._datasets:
            import lance

            self._datasets[path] = lance.dataset(path, version=int(version))
        sid = item["sample_id"].replace("'", "''")
        rows = self._datasets[path].to_table(columns=["video"], filter=f"sample_id = '{sid}'")
        if rows.num_rows == 0 or rows.column("video")[0].as_py() is None:
            raise ValueError(f"sample {item['sample_id']} has no video bytes")
        return rows.column("video")[0].as_py()


# ---------------------------------------------------------------------------------------------- scoring
OUT = pa.schema([("table", pa.string()), *BENCH_SCORES, *(f for f in BENCH_SAMPLES if f.name not in BENCH_SCORES.names)])


class Scorer:
    """Actor: builds every configured dimension once, scores decoded videos into ``bench_scores`` rows (and one
    ``bench_samples`` row per video)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = BenchJobConfig(**config)
        if self.cfg.torch_threads:
            import torch

            torch.set_num_threads(self.cfg.torch_threads)
        known = registry(self.cfg.dimension_modules)
        self.dims = {d: known[d](self.cfg.dimension_config.get(d)) for d in self.cfg.dimensions}
        self.source = f"videos:{self.cfg.videos_dir}" if self.cfg.videos_dir else f"samples:{self.cfg.lake}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [r for item in batch.to_pylist() for r in self.score_item(item)]
        return pa.Table.from_pylist(rows, schema=OUT)

    def score_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        run, sid = self.cfg.run, item["sample_id"]
        now = dt.datetime.now(dt.UTC)
        video, error = self._video(item)
        shape = item.get("shape") or [0]
        rows = [{"table": "bench_samples", "sample_key": f"{run}@{sid}", "run": run, "sample_id": sid,
                 "source": item["uri"] if self.cfg.videos_dir else self.source, "prompt": item["prompt"],
                 "meta_json": item["meta_json"], "thumbnail": item.get("thumbnail"),
                 "num_frames": shape[0] if error is None else None, "fps": item.get("fps"),
                 "status": STATUS_ERROR if error else STATUS_OK, "error": error}]
        for name in item["dims"]:
            dim = self.dims[name]
            row = {"table": "bench_scores", "score_id": f"{run}@{sid}@{name}", "run": run, "sample_id": sid,
                   "dimension": name, "group": getattr(dim, "group", None), "scored_at": now}
            rows.append({**row, **(self._score(dim, video) if video is not None else
                                   {"status": STATUS_ERROR, "error": error})})
        return rows

    def _video(self, item: dict[str, Any]):
        if item.get("error"):
            return None, item["error"]
        from bench.dimensions.base import BenchVideo

        try:
            frames = np.frombuffer(item["frames"], np.uint8).reshape(item["shape"])
            return BenchVideo(frames, float(item["fps"]), item["prompt"], json.loads(item["meta_json"]),
                              item["sample_id"]), None
        except Exception as e:  # noqa: BLE001 - bad input is data
            return None, f"input: {type(e).__name__}: {e}"

    @staticmethod
    def _score(dim: Any, video: Any) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            result = dim.score(video)
            return {"score": float(result.score), "evidence_json": json.dumps(result.evidence, default=_jsonable),
                    "status": STATUS_OK, "error": None, "wall_s": time.perf_counter() - start}
        except Exception as e:
            log.debug("dimension %s failed on %s", getattr(dim, "name", dim), video.sample_id, exc_info=True)
            return {"status": STATUS_ERROR, "error": f"{type(e).__name__}: {e}", "wall_s": time.perf_counter() - start}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def split_tables(batch: pa.Table) -> dict[str, pa.Table]:
    """A Scorer batch -> ``{table: rows}`` with each table's own columns."""
    import pyarrow.compute as pc

    out = {}
    for name, schema in (("bench_samples", BENCH_SAMPLES), ("bench_scores", BENCH_SCORES)):
        part = batch.filter(pc.equal(batch.column("table"), name))
        out[name] = part.select(schema.names)
    return out


# ----------------------------------------------------------------------------------------------- driver
def _batches(cfg: BenchJobConfig, todo: list[dict[str, Any]]) -> Iterator[pa.Table]:
    if cfg.execution == "local":
        decoder, scorer = Decoder(cfg.max_frames, cfg.max_side), Scorer(cfg.model_dump())
        for item in todo:
            yield scorer(pa.Table.from_pylist([decoder.decode(item)], schema=DECODED))
        return
    import ray.data

    from curation.ray_runtime import ensure_ray

    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    # One block per sample, made in the driver (no repartition task: a pool that holds every CPU cannot starve it).
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map_batches(Decoder, fn_constructor_args=(cfg.max_frames, cfg.max_side), batch_size=1,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(
                            size=min(cfg.decode.concurrency, len(todo))), num_cpus=cfg.decode.num_cpus)
    ds = ds.map_batches(Scorer, fn_constructor_kwargs={"config": cfg.model_dump()}, batch_size=cfg.batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.score.concurrency),
                        num_cpus=cfg.score.num_cpus, num_gpus=cfg.score.num_gpus or None)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


def run_bench(cfg: BenchJobConfig) -> dict[str, Any]:
    """Score every pending (sample, dimension) of the run, then write and return its summary (``bench.summary``)."""
    from bench.summary import write_summary
    from curation.lake.driver import LakeJob

    groups = check_dimensions(cfg)
    lake = Lake(cfg.lake)
    job = LakeJob(lake, STAGE, list(TABLES), commit_every=cfg.commit_every)
    items = all_items(cfg, lake)
    done = job.done("bench_scores")
    check_run_samples(cfg, lake, items, done)
    todo = pending(cfg, items, done)
    log.info("bench %s: %d samples, %d with dimensions to score", cfg.run, len(items), len(todo))
    for batch in _batches(cfg, todo) if todo else ():
        parts = split_tables(batch)
        job.add(parts, items=parts["bench_samples"].num_rows)
    inputs = ([] if cfg.videos_dir else [cfg.samples_table]) if not cfg.samples_table.endswith(".lance") else []
    res = job.finish(sum(len(i["dims"]) for i in todo), config=cfg, inputs=inputs)
    summary = write_summary(lake, cfg.run, groups, cfg.weights_file)
    return {"samples": len(items), "pending_samples": len(todo), "written": res.written.get("bench_scores", 0),
            "status": res.status.get("bench_scores", {}), "wall_s": res.wall_s, "errors": job.errors,
            "summary": summary}
