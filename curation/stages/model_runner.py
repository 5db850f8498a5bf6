"""Runs a model-backed stage over its input table as a Ray Data actor pool and commits ``stages/<name>``.

The model loads once per actor (a callable class: ``__init__`` builds it, ``__call__`` scores a batch), with
``concurrency`` actors of ``num_gpus`` / ``num_cpus`` each and ``batch_size`` clips per call. The driver picks
the pending rows (``ok`` input rows whose key is not yet in the output table, at one pinned input version) and
sends only their positions; each actor reads its rows' columns (keyframe JPEGs, embeddings) from Lance itself.

Every output row is one clip, so the lake driver (``curation.lake.driver``) commits whole rows every ``commit_every``
rows: a crash (kill -9 included) loses at most the uncommitted rows, and a re-run scores exactly the clips
missing from the table. Bad input is data: a row that cannot be prepared (a corrupt JPEG) or scored (a NaN) is
written with ``status="error"`` and its message, and the run goes on. ``backend="local"`` runs the same class
in-process, for tests and per-core benchmarks.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from curation.lake.driver import LakeJob, StageResult, error_message
from curation.lake.schemas import STATUS_ERROR, STATUS_OK, stage_schema
from curation.lake.tables import Lake

log = logging.getLogger(__name__)


class BatchModel(Protocol):
    """What a stage's model offers the runner. ``prepare`` turns one input row into model input (it may raise:
    that row becomes an error row); ``score`` maps a list of prepared inputs to one dict of stage columns each."""

    def prepare(self, row: dict[str, Any]) -> Any: ...

    def score(self, prepared: list[Any]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ModelStageSpec:
    """Everything the runner needs to run one model stage (picklable: it travels to every actor)."""

    name: str  # writes stages/<name>
    version: str  # stage_version of every row; rows of another version are recomputed
    make_model: Callable[[], BatchModel]  # called once per actor
    input_table: str = "clips"
    input_columns: tuple[str, ...] = ("clip_id", "keyframes")
    output_schema: pa.Schema | None = None  # default: stage_schema(name)
    batch_size: int = 16
    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0

    @property
    def table(self) -> str:
        return f"stages/{self.name}"

    def schema(self) -> pa.Schema:
        return self.output_schema if self.output_schema is not None else stage_schema(self.name)


def _error_row(spec: ModelStageSpec, clip_id: str, message: str) -> dict[str, Any]:
    return {"clip_id": clip_id, "stage_version": spec.version, "status": STATUS_ERROR,
            "error": f"{spec.name}: {message}"}


def _non_finite(values: dict[str, Any]) -> str | None:
    for k, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            return k
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all():
            return k
        if isinstance(v, list) and any(isinstance(x, float) and not math.isfinite(x) for x in v):
            return k
    return None


def score_rows(spec: ModelStageSpec, model: BatchModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output rows (one per input row, in order): ``ok`` rows with the model's columns, ``error`` rows for
    input that could not be prepared or scored. A batch whose ``score`` raises is retried row by row, so one
    bad row does not take its batch down."""
    out: list[dict[str, Any] | None] = [None] * len(rows)
    prepared, where = [], []
    for i, row in enumerate(rows):
        try:
            prepared.append(model.prepare(row))
            where.append(i)
        except Exception as e:  # noqa: BLE001 - bad input is data
            out[i] = _error_row(spec, row["clip_id"], error_message(e))
    if prepared:
        try:
            results: list[dict[str, Any] | BaseException] = list(model.score(prepared))
            if len(results) != len(prepared):
                raise RuntimeError(f"model returned {len(results)} results for {len(prepared)} inputs")
        except Exception:  # noqa: BLE001 - isolate the failing row
            results = []
            for p in prepared:
                try:
                    results.append(model.score([p])[0])
                except Exception as e:  # noqa: BLE001
                    results.append(e)
        for i, res in zip(where, results):
            cid = rows[i]["clip_id"]
            if isinstance(res, BaseException):
                out[i] = _error_row(spec, cid, error_message(res))
            elif (bad := _non_finite(res)) is not None:
                out[i] = _error_row(spec, cid, f"non-finite value in {bad}")
            else:
                out[i] = {"clip_id": cid, **res, "stage_version": spec.version, "status": STATUS_OK}
    return [r for r in out if r is not None]


class StageActor:
    """The callable class of the actor pool: loads the model once, then reads and scores batches of positions
    of the pinned input version."""

    def __init__(self, spec: ModelStageSpec, input_uri: str, input_version: int,
                 storage_options: dict[str, str] | None = None) -> None:
        import lance

        self.spec = spec
        self.model = spec.make_model()
        self.input = lance.dataset(input_uri, version=input_version, storage_options=storage_options)
        self.schema = spec.schema()

    def __call__(self, batch: pa.Table) -> pa.Table:
        positions = batch.column("position").to_pylist()
        rows = self.input.take(positions, columns=list(self.spec.input_columns)).to_pylist()
        return pa.Table.from_pylist(score_rows(self.spec, self.model, rows), schema=self.schema)


def pending_positions(lake: Lake, spec: ModelStageSpec, done: set[str]) -> tuple[list[int], int | None]:
    """Positions (at the returned input version) of the ``ok`` input rows not yet in the output table."""
    ds = lake.dataset(spec.input_table)
    if ds is None:
        return [], None
    keys = ds.to_table(columns=["clip_id", "status"])
    ids, status = keys.column("clip_id").to_pylist(), keys.column("status").to_pylist()
    seen: set[str] = set()
    positions = []
    for i, (cid, st) in enumerate(zip(ids, status)):
        if st == STATUS_OK and cid not in done and cid not in seen:
            positions.append(i)
            seen.add(cid)
    return positions, ds.version


def drop_stale_rows(lake: Lake, spec: ModelStageSpec) -> int:
    """Delete rows written under another stage version (other weights or settings), so they are recomputed."""
    ds = lake.dataset(spec.table)
    if ds is None:
        return 0
    stale = f"stage_version IS NULL OR stage_version != '{spec.version}'"
    n = ds.count_rows(filter=stale)
    if n:
        ds.delete(stale)
        log.info("%s: %d rows of another stage version will be recomputed", spec.name, n)
    return n


def _check_gpus(spec: ModelStageSpec) -> None:
    import ray

    have = ray.cluster_resources().get("GPU", 0.0)
    if spec.num_gpus > 0 and have < spec.num_gpus:
        raise RuntimeError(f"stage {spec.name} asks for num_gpus={spec.num_gpus} per actor but the Ray cluster has "
                           f"{have} GPU(s); set {spec.name}.num_gpus: 0 to run on CPUs")


def _batches(spec: ModelStageSpec, lake: Lake, positions: list[int], version: int, backend: str) -> Iterator[pa.Table]:
    chunks = [positions[i:i + spec.batch_size] for i in range(0, len(positions), spec.batch_size)]
    uri = lake.uri(spec.input_table)
    if backend == "local":
        actor = StageActor(spec, uri, version, lake.storage_options)
        for chunk in chunks:
            yield actor(pa.table({"position": pa.array(chunk, pa.int64())}))
        return
    if backend != "ray":
        raise ValueError(f"unknown backend {backend!r}")
    import ray.data

    from curation.ray_runtime import ensure_ray

    ensure_ray()  # a no-op when the pipeline (or a test) already started Ray
    _check_gpus(spec)
    blocks = [pa.table({"position": pa.array(c, pa.int64())}) for c in chunks]
    ds = ray.data.from_arrow(blocks).map_batches(
        StageActor,
        fn_constructor_args=(spec, uri, version, lake.storage_options),
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(spec.concurrency, len(chunks))),
        num_gpus=spec.num_gpus or None,
        num_cpus=spec.num_cpus,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)


def run_model_stage(lake: Lake, spec: ModelStageSpec, *, backend: str = "ray", commit_every: int = 64,
                    config: BaseModel | None = None, record: bool = True) -> StageResult:
    """Score every pending input row with ``spec``'s model and commit the rows to ``stages/<name>`` through the
    lake driver. ``record``: write the ``runs`` row (false when this is one step of a larger stage)."""
    stale = drop_stale_rows(lake, spec)
    job = LakeJob(lake, spec.name, [spec.table], commit_every=commit_every,
                  schemas={spec.table: spec.schema()})  # the embed table's width is only known from the model
    positions, version = pending_positions(lake, spec, job.done())
    if positions:
        log.info("%s: %d rows to score (%s, batch %d, %d actor(s))", spec.name, len(positions), backend,
                 spec.batch_size, spec.concurrency)
        job.consume(_batches(spec, lake, positions, version, backend))
    job.commit()  # the last partial batch too, before "total" is counted
    result = job.finish(len(positions), config=config, inputs={spec.input_table: version}, record=record,
                        counts={"total": lake.count(spec.table)})
    result.extra["stale_dropped"] = stale
    return result
