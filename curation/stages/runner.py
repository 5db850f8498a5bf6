"""Runs a per-item function over pending work on Ray Data and commits its output rows to the lake.

Workers return rows for one or more tables (the shot pass writes ``clips`` and several ``stages/<name>``
tables from one decode). Rows travel back as Arrow IPC inside a two-column Arrow batch (table name, IPC bytes),
so nothing is pickled, and the lake driver (``curation.lake.driver.LakeJob``) commits them every ``commit_every``
items, in ``commit_order``: a table listed last (``clips``) marks its item as done, so a crash between commits only
causes a redo whose rows the writers drop as already present.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from curation.lake.driver import LakeJob, Rows, StageResult, guarded
from curation.lake.schemas import schema_for
from curation.lake.tables import Lake

log = logging.getLogger(__name__)

WorkFn = Callable[[dict[str, Any]], Rows]
ErrorFn = Callable[[dict[str, Any], str], Rows]

_TRANSPORT = pa.schema([("table", pa.string()), ("ipc", pa.binary())])


def _pack(rows: Rows) -> pa.Table:
    tables, blobs = [], []
    for table, table_rows in rows.items():
        if not table_rows:
            continue
        data = pa.Table.from_pylist(table_rows, schema=schema_for(table))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as w:
            w.write_table(data)
        tables.append(table)
        blobs.append(sink.getvalue().to_pybytes())
    return pa.table({"table": pa.array(tables, pa.string()), "ipc": pa.array(blobs, pa.binary())},
                    schema=_TRANSPORT)


def _unpack(batch: pa.Table) -> Iterator[tuple[str, pa.Table | None]]:
    for table, blob in zip(batch.column("table").to_pylist(), batch.column("ipc").to_pylist()):
        yield table, (pa.ipc.open_stream(blob).read_all() if blob else None)


_ITEM_DONE = "__item_done__"
_ITEM_MARK = pa.table({"table": pa.array([_ITEM_DONE]), "ipc": pa.array([b""], pa.binary())}, schema=_TRANSPORT)


def _work_batch(batch: pa.Table, work: WorkFn, on_error: ErrorFn) -> pa.Table:
    parts = []
    for item in batch.to_pylist():
        parts.append(_pack(guarded(item, work, on_error)))
        parts.append(_ITEM_MARK)  # counts finished items on the driver
    return pa.concat_tables(parts) if parts else _TRANSPORT.empty_table()


def run_items(
    stage: str,
    items: pa.Table,
    work: WorkFn,
    on_error: ErrorFn,
    lake: Lake,
    commit_order: Sequence[str],
    *,
    backend: str = "ray",
    items_per_task: int = 2,
    commit_every: int = 16,
    concurrency: int | None = None,
    prepare: Callable[[str, pa.Table], pa.Table] | None = None,
    config: BaseModel | None = None,
    inputs: Sequence[str] = (),
    record: bool = True,
) -> StageResult:
    """Apply ``work`` to every row of ``items`` (in Ray tasks, or in-process with ``backend="local"``) and
    commit its rows to the tables of ``commit_order`` through the lake driver; returns the counts. ``record``:
    write the run's ``runs`` row (with ``config``'s hash and ``inputs``' versions)."""
    job = LakeJob(lake, stage, commit_order, commit_every=commit_every, prepare=prepare)
    # Rows of an item whose done-marker has not arrived yet (Ray may split an output block between batches):
    # they wait here, so a commit never holds part of an item.
    partial: dict[str, list[pa.Table]] = {t: [] for t in commit_order}
    for batch in _iterate(items, work, on_error, backend, items_per_task, concurrency):
        for table, rows in _unpack(batch):
            if table == _ITEM_DONE:
                job.add(partial, items=1)
                partial = {t: [] for t in commit_order}
            elif table not in partial or rows is None:
                raise RuntimeError(f"stage {stage} produced rows for {table!r}, not in {list(commit_order)}")
            else:
                partial[table].append(rows)
    return job.finish(items.num_rows, config=config, inputs=inputs, record=record)


def _iterate(items: pa.Table, work: WorkFn, on_error: ErrorFn, backend: str, items_per_task: int,
             concurrency: int | None) -> Iterator[pa.Table]:
    if items.num_rows == 0:
        return
    if backend == "local":
        for i in range(items.num_rows):
            yield _work_batch(items.slice(i, 1), work, on_error)
        return
    if backend != "ray":
        raise ValueError(f"unknown backend {backend!r}")
    import ray.data

    blocks = [items.slice(i, items_per_task) for i in range(0, items.num_rows, items_per_task)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        functools.partial(_work_batch, work=work, on_error=on_error),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=1,
        concurrency=concurrency,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2)
