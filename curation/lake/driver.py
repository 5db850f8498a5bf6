"""The one driver every job writes the lake through: what is done, batched commits, error rows, the ``runs`` row.

A job (a curation stage, the caption job, the sample job, and the encode, training-data and bench jobs) does three
things with the lake, and does them here so that each does them the same way:

1. **What is done.** ``LakeJob.done(table)`` is the set of keys already written; the job computes only the rest.
2. **Commits.** Workers hand back whole work items as ``{table: rows}``; ``LakeJob.add`` buffers them and every
   ``commit_every`` items commits each table through ``KeyedWriter``, tables in ``tables`` order. The last table
   marks an item done (``clips`` after its ``stages/*`` rows), so a crash between two tables' commits causes only a
   redo whose rows the writers drop as already present. A run killed at any point (kill -9 included) leaves whole
   Lance commits behind; its re-run neither loses nor duplicates a key.
3. **Bad input is data.** ``guarded`` runs one item's work and turns an exception into the job's error rows.
4. **The record.** ``LakeJob.finish`` writes the run's ``runs`` row (stage, config hash, input table versions,
   counts in/ok/kept/rejected/failed, wall time) and returns a ``StageResult``; ``record_run`` does the same for a
   global stage that overwrites its table whole (select, dedup, cluster...).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from curation.jobconfig import config_hash
from curation.lake.schemas import STATUS_DUPLICATE, STATUS_ERROR, STATUS_OK
from curation.lake.tables import KeyedWriter, Lake, conform

log = logging.getLogger(__name__)

Rows = dict[str, list[dict[str, Any]]]
"""Output of one work item as Python rows: table name -> rows."""


@dataclass
class StageResult:
    """What one run of a job did: rows written and their statuses per table, and the counts of its ``runs`` row."""

    stage: str
    count_in: int = 0
    written: dict[str, int] = field(default_factory=dict)
    status: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> {status: rows written}
    wall_s: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)  # what the summary prints (in, ok, failed, kept...)
    extra: dict[str, Any] = field(default_factory=dict)
    started: dt.datetime | None = None

    def table_counts(self, table: str) -> dict[str, int]:
        """``in``, ``written``, ``ok``, ``failed``, ``duplicate`` for rows of ``table`` written by this run."""
        by_status = self.status.get(table, {})
        return {"in": self.count_in, "written": self.written.get(table, 0), "ok": by_status.get(STATUS_OK, 0),
                "failed": by_status.get(STATUS_ERROR, 0), "duplicate": by_status.get(STATUS_DUPLICATE, 0)}


def error_message(e: BaseException) -> str:
    """The message an error row records (the traceback goes to the debug log)."""
    log.debug("work item failed\n%s", traceback.format_exc())
    return f"{type(e).__name__}: {e}"


def guarded(item: Any, work: Callable[[Any], Any], on_error: Callable[[Any, str], Any]) -> Any:
    """``work(item)``, or ``on_error(item, message)`` when it raises: bad input becomes an error row."""
    try:
        return work(item)
    except Exception as e:  # noqa: BLE001 - bad input is data: record it and go on
        return on_error(item, error_message(e))


Part = pa.Table | list[pa.Table] | list[dict[str, Any]]
"""Rows for one table: an Arrow table, several, or Python rows."""


def _as_table(rows: Part, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        return conform(rows, schema)
    if rows and isinstance(rows[0], pa.Table):
        return pa.concat_tables([conform(r, schema) for r in rows])
    return pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()


class LakeJob:
    """One run of one job over the lake (see the module docs)."""

    def __init__(self, lake: Lake, stage: str, tables: Sequence[str], *, commit_every: int = 16,
                 schemas: Mapping[str, pa.Schema] | None = None,
                 prepare: Callable[[str, pa.Table], pa.Table] | None = None,
                 progress: Callable[[int], None] | None = None,
                 on_rows: Callable[[str, pa.Table], None] | None = None) -> None:
        """``tables``: the tables this job appends to, in commit order (the last one marks an item done).
        ``schemas``: a table's schema when it differs from ``curation.lake.schemas`` (the embed table's width is
        known only from the model). ``prepare``: a driver-side step over each table's rows just before they are
        committed (exact duplicates need every committed row). ``progress``: called with the items committed.
        ``on_rows``: called with each table's rows that a commit actually wrote (a job's own tallies); a few error
        messages are kept in ``errors`` for the summary."""
        self.lake, self.stage, self.tables = lake, stage, list(tables)
        self.commit_every = commit_every
        self.prepare, self.progress, self.on_rows = prepare, progress, on_rows
        self.errors: list[str] = []
        self.started = dt.datetime.now(dt.UTC)
        self._t0 = time.perf_counter()
        self.writers = {t: KeyedWriter(lake, t) for t in self.tables}
        for t, schema in (schemas or {}).items():
            self.writers[t].schema = schema
        self.result = StageResult(stage)
        self._pending: dict[str, list[pa.Table]] = {t: [] for t in self.tables}
        self._items_pending = 0
        self.items_committed = 0

    def done(self, table: str | None = None) -> set[str]:
        """Keys already in ``table`` (default: the last table, whose row marks an item done)."""
        return self.writers[table or self.tables[-1]].keys

    def add(self, rows: Mapping[str, Part], items: int = 1) -> None:
        """Buffer the rows of ``items`` whole work items; commits when ``commit_every`` items are buffered."""
        for table, part in rows.items():
            if table not in self._pending:
                raise RuntimeError(f"job {self.stage} produced rows for {table!r}, not in {self.tables}")
            part = _as_table(part, self.writers[table].schema)
            if part.num_rows:
                self._pending[table].append(part)
        self._items_pending += items
        if self._items_pending >= self.commit_every:
            self.commit()

    def consume(self, batches: Iterable[pa.Table], table: str | None = None) -> None:
        """``add`` each batch of rows of one table (default: the only table), one item per row."""
        table = table or self.tables[-1]
        for batch in batches:
            self.add({table: batch}, items=batch.num_rows)

    def commit(self) -> None:
        """Append what is buffered, table by table in commit order."""
        for t in self.tables:
            if not self._pending[t]:
                continue
            rows = pa.concat_tables(self._pending[t])
            self._pending[t] = []
            if self.prepare is not None:
                rows = self.prepare(t, rows)
            writer = self.writers[t]
            fresh = pc.invert(pc.is_in(rows.column(writer.key), pa.array(list(writer.keys), pa.string())))
            n = writer.append(rows)
            self.result.written[t] = self.result.written.get(t, 0) + n
            if n:
                self._tally(t, rows.filter(fresh))
        if self._items_pending:
            self.items_committed += self._items_pending
            self._items_pending = 0
            log.info("%s: %d items committed", self.stage, self.items_committed)
            if self.progress is not None:
                self.progress(self.items_committed)

    def _tally(self, table: str, rows: pa.Table) -> None:
        if "error" in rows.column_names and len(self.errors) < 5:
            self.errors += [f"{table}: {e}" for e in rows.column("error").drop_null().to_pylist()[:5 - len(self.errors)]]
        if self.on_rows is not None:
            self.on_rows(table, rows)

    def finish(self, count_in: int, *, config: BaseModel | None = None,
               inputs: Iterable[str] | Mapping[str, int | None] = (),
               counts: Mapping[str, Any] | None = None, record: bool = True) -> StageResult:
        """Commit what is left, write the ``runs`` row (unless ``record`` is false: a caller that records one row
        per part of the run) and return the result. ``counts`` overrides the counts the ``runs`` row and the
        summary take from the last table's statuses (``in``, ``ok``, ``failed``...)."""
        self.commit()
        for t, writer in self.writers.items():  # a run over nothing still leaves its (empty) tables: a later
            if not self.lake.exists(t):          # stage then reads "no rows", not "never ran"
                self.lake.create_empty(t, writer.schema)
        res = self.result
        res.count_in = count_in
        res.started = self.started
        res.status = {t: dict(w.status_written) for t, w in self.writers.items()}
        res.wall_s = time.perf_counter() - self._t0
        res.counts = {**res.table_counts(self.tables[-1]), **(counts or {})}
        if record:
            record_run(self.lake, self.stage, config, inputs, res.counts, res.wall_s, self.started)
        return res


def record_run(lake: Lake, stage: str, config: BaseModel | None, inputs: Iterable[str] | Mapping[str, int | None],
               counts: Mapping[str, Any], wall_s: float, started: dt.datetime) -> None:
    """Append one ``runs`` row: what ran, on which input versions (table names, or pinned ``{table: version}``),
    with what counts."""
    versions = dict(inputs) if isinstance(inputs, Mapping) else lake.versions(inputs)
    KeyedWriter(lake, "runs").append([{
        "run_id": uuid.uuid4().hex, "stage": stage, "config_hash": config_hash(config) if config else None,
        "input_versions": json.dumps(versions), "count_in": int(counts.get("in", 0)),
        "count_ok": int(counts.get("ok", 0)), "count_kept": int(counts.get("kept", 0)),
        "count_rejected": int(counts.get("rejected", 0)), "count_failed": int(counts.get("failed", 0)),
        "wall_s": float(wall_s), "started_at": started,
    }])

