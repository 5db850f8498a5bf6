"""The lake: a directory or object-store URI of Lance tables, with exactly-once appends by key.

Every stage writes through ``KeyedWriter``: it loads the table's key column once, drops incoming rows whose key
is already present, and appends the rest as one Lance commit. A stage killed at any point (kill -9 included)
leaves only whole commits behind, and its re-run skips the keys that made it, so no row is lost or duplicated.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import lance
import pyarrow as pa
import pyarrow.compute as pc

from curation.lake.schemas import key_for, schema_for


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class LakeAccessError(OSError):
    """A lake table exists or may exist but cannot be read (store unreachable, credentials refused)."""


def _not_found(error: Exception) -> bool:
    """Whether Lance's error says the dataset does not exist (as opposed to the store failing)."""
    text = str(error)
    return "was not found" in text or isinstance(error, FileNotFoundError)


def _strip_file_scheme(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


@dataclass
class Lake:
    """A set of Lance tables under one root (local path, ``file://``, ``s3://``, ``gs://``)."""

    root: str
    storage_options: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.root = _strip_file_scheme(self.root).rstrip("/")
        if _is_local(self.root):
            os.makedirs(self.root, exist_ok=True)

    @property
    def is_local(self) -> bool:
        return _is_local(self.root)

    def uri(self, table: str) -> str:
        """Location of ``table`` (``clips``, ``stages/blur``...)."""
        return f"{self.root}/{table}.lance"

    def dataset(self, table: str) -> lance.LanceDataset | None:
        """The Lance dataset, or None when the table has not been written yet."""
        uri = self.uri(table)
        if _is_local(uri) and not os.path.exists(uri):
            return None
        try:
            return lance.dataset(uri, storage_options=self.storage_options)
        except (ValueError, FileNotFoundError, OSError) as error:
            if _is_local(uri) or _not_found(error):
                return None
            # An unreachable store or refused credentials must not look like an empty lake (a silent empty run).
            raise LakeAccessError(f"lake {self.root}: cannot read table {table!r}: {error}") from error

    def exists(self, table: str) -> bool:
        return self.dataset(table) is not None

    def read(self, table: str, columns: list[str] | None = None, filter: str | None = None) -> pa.Table:
        """Whole table (or some columns/rows); an empty table with the schema when it does not exist."""
        ds = self.dataset(table)
        if ds is None:
            schema = schema_for(table)
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return schema.empty_table()
        return ds.to_table(columns=columns, filter=filter)

    def count(self, table: str, filter: str | None = None) -> int:
        ds = self.dataset(table)
        return 0 if ds is None else ds.count_rows(filter=filter)

    def keys(self, table: str) -> set[str]:
        """All keys present in ``table``."""
        key = key_for(table)
        return set(self.read(table, columns=[key]).column(key).to_pylist())

    def version(self, table: str) -> int | None:
        ds = self.dataset(table)
        return None if ds is None else ds.version

    def versions(self, tables: Iterable[str]) -> dict[str, int | None]:
        return {t: self.version(t) for t in tables}

    def overwrite(self, table: str, rows: pa.Table) -> None:
        """Replace a derived table whole (used by ``select`` and ``dedup``, which are global)."""
        rows = conform(rows, schema_for(table))
        mode = "overwrite" if self.exists(table) else "create"
        lance.write_dataset(rows, self.uri(table), schema=rows.schema, mode=mode,
                            storage_options=self.storage_options)

    def create_empty(self, table: str, schema: pa.Schema | None = None) -> None:
        """Create ``table`` with no rows (a job that ran over nothing), unless it exists."""
        if not self.exists(table):
            schema = schema if schema is not None else schema_for(table)
            lance.write_dataset(schema.empty_table(), self.uri(table), schema=schema, mode="create",
                                storage_options=self.storage_options)

    def tables(self) -> list[str]:
        """Names of the tables present (``clips``, ``stages/blur``...), on disk or in an object store."""
        if not _is_local(self.root):
            return _remote_tables(self.root)
        found = []
        for dirpath, dirnames, _ in os.walk(self.root):
            for d in list(dirnames):
                if d.endswith(".lance"):
                    rel = os.path.relpath(os.path.join(dirpath, d), self.root)
                    found.append(rel[: -len(".lance")])
                    dirnames.remove(d)
        return sorted(found)


def _remote_tables(root: str, prefix: str = "") -> list[str]:
    """Tables under an object-store lake: folders named ``*.lance``, found level by level (not object by object)."""
    from curation.media.remote import list_dirs

    found = []
    for name in list_dirs(f"{root}/{prefix}".rstrip("/")):
        if name.endswith(".lance"):
            found.append(prefix + name[: -len(".lance")])
        else:
            found += _remote_tables(root, f"{prefix}{name}/")
    return sorted(found)


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``rows`` to ``schema``: reorder, cast, add missing nullable columns, reject unknown ones."""
    extra = set(rows.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"columns not in the table schema: {sorted(extra)}")
    arrays = []
    for f in schema:
        if f.name in rows.column_names:
            arrays.append(rows.column(f.name).cast(f.type))
        else:
            if not f.nullable:
                raise ValueError(f"required column {f.name!r} missing")
            arrays.append(pa.nulls(len(rows), f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass
class KeyedWriter:
    """Appends rows to one table, at most once per key, across crashes and re-runs."""

    lake: Lake
    table: str
    written: int = 0
    skipped: int = 0
    status_written: dict[str, int] = field(default_factory=dict)
    _keys: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.schema = schema_for(self.table)
        self.key = key_for(self.table)
        self._keys = self.lake.keys(self.table)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    @property
    def keys(self) -> set[str]:
        return self._keys

    def append(self, rows: pa.Table | list[dict]) -> int:
        """Append the rows whose key is new; returns how many were written."""
        if isinstance(rows, list):
            rows = pa.Table.from_pylist(rows, schema=self.schema) if rows else self.schema.empty_table()
        rows = conform(rows, self.schema)
        if rows.num_rows == 0:
            return 0
        keys = rows.column(self.key).to_pylist()
        keep, seen = [], set()
        for i, k in enumerate(keys):
            if k not in self._keys and k not in seen:
                keep.append(i)
                seen.add(k)
        self.skipped += rows.num_rows - len(keep)
        if not keep:
            return 0
        rows = rows.take(pa.array(keep, pa.int64()))
        mode = "append" if self.lake.exists(self.table) else "create"
        lance.write_dataset(rows, self.lake.uri(self.table), schema=self.schema, mode=mode,
                            storage_options=self.lake.storage_options)
        self._keys.update(seen)
        self.written += len(keep)
        if "status" in rows.column_names:
            for st, n in status_counts(rows).items():
                self.status_written[st] = self.status_written.get(st, 0) + n
        return len(keep)


def status_counts(table: pa.Table) -> dict[str, int]:
    """``{status: count}`` of a table with a ``status`` column."""
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column("status"))
    return {d["values"]: d["counts"] for d in vc.to_pylist()}
