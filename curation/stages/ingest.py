"""Stage 1, ingest: find media files, hash and probe them, and flag exact duplicates into ``videos``.

One row per input file (keyed by ``uri``). ``video_id`` is the content hash; the first file with a given hash is
``ok``, later ones are ``duplicate`` with ``duplicate_of`` naming it. Unreadable files are ``error`` rows.
"""
from __future__ import annotations

import datetime as dt
import functools
import os
from typing import Any

import pyarrow as pa

from curation.config import IngestConfig, InputConfig
from curation.lake.schemas import STATUS_DUPLICATE, STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake
from curation.media.probe import MEDIA_EXTENSIONS, MediaError, check_exists, content_hash, probe
from curation.media.remote import is_remote, list_files, local_copy
from curation.stages.runner import Rows, StageResult, run_items

STAGE = "ingest"


def list_inputs(cfg: InputConfig) -> list[str]:
    """Absolute paths of the media to ingest: folders walked for media extensions, files taken as named,
    URI lists read line by line. Sorted, without repeats. A path that does not exist is an error."""
    found: list[str] = []

    def local(p: str, base: str = "") -> str:
        if is_remote(p):  # an object-store URI (s3://bucket/key) is taken as it is
            return p
        path = p[len("file://"):] if p.startswith("file://") else p
        if "://" in path:
            raise ValueError(f"input {p!r}: only local paths and file:// URIs are supported by ingest")
        return os.path.join(base, path)  # relative entries of a URI list resolve against the list's folder

    for p in cfg.paths:
        path = local(p)
        if is_remote(path):
            found += list_files(path, MEDIA_EXTENSIONS, cfg.recursive)
            continue
        if os.path.isdir(path):
            walker = os.walk(path) if cfg.recursive else [(path, [], os.listdir(path))]
            for dirpath, _, files in walker:
                found += [os.path.join(dirpath, f) for f in files
                          if os.path.splitext(f)[1].lower() in MEDIA_EXTENSIONS]
        elif os.path.exists(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"input path does not exist: {p}")
    for listing in cfg.uri_lists:
        base = os.path.dirname(os.path.abspath(listing))
        with open(listing) as f:
            found += [local(line.strip(), base) for line in f if line.strip() and not line.startswith("#")]
    return sorted({p if is_remote(p) else os.path.abspath(p) for p in found})


def ingest_one(item: dict[str, Any], cfg: IngestConfig) -> Rows:
    """Hash and probe one file into a ``videos`` row (``ok`` or ``error``)."""
    uri = item["uri"]
    row: dict[str, Any] = {"uri": uri, "ingested_at": dt.datetime.now(dt.timezone.utc)}
    try:
        with local_copy(uri) as path:  # an object-store URI: one temporary copy, hashed and probed
            check_exists(path)
            row["size_bytes"] = os.path.getsize(path)
            row["video_id"] = content_hash(path, cfg.hash_chunk_mb << 20)
            info = probe(path, min_side=cfg.min_side)
    except (MediaError, OSError) as e:
        row.setdefault("video_id", "unreadable:" + uri)
        return {"videos": [{**row, "status": STATUS_ERROR, "error": str(e)}]}
    row.update(
        media_type=info.media_type, container=info.container, codec=info.codec, fps=info.fps, width=info.width,
        height=info.height, num_frames=info.num_frames, duration_s=info.duration_s, rotation=info.rotation,
        status=STATUS_OK,
    )
    return {"videos": [row]}


def _on_error(item: dict[str, Any], message: str) -> Rows:
    return {"videos": [{"uri": item["uri"], "video_id": "unreadable:" + item["uri"], "status": STATUS_ERROR,
                        "error": message, "ingested_at": dt.datetime.now(dt.timezone.utc)}]}


class _ExactDuplicates:
    """Marks rows whose content hash was already committed as ``duplicate`` (decided on the driver, in commit
    order, so concurrent workers cannot both claim a hash)."""

    def __init__(self, lake: Lake) -> None:
        seen = lake.read("videos", columns=["uri", "video_id", "status"], filter="status = 'ok'")
        self.first_uri = dict(zip(seen.column("video_id").to_pylist(), seen.column("uri").to_pylist()))

    def __call__(self, table: str, rows: pa.Table) -> pa.Table:
        status = rows.column("status").to_pylist()
        dup_of = rows.column("duplicate_of").to_pylist()
        for i, (vid, uri) in enumerate(zip(rows.column("video_id").to_pylist(), rows.column("uri").to_pylist())):
            if status[i] != STATUS_OK:
                continue
            first = self.first_uri.setdefault(vid, uri)
            if first != uri:
                status[i], dup_of[i] = STATUS_DUPLICATE, first
        rows = rows.set_column(rows.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
        return rows.set_column(rows.schema.get_field_index("duplicate_of"), "duplicate_of",
                               pa.array(dup_of, pa.string()))


def run_ingest(lake: Lake, input_cfg: InputConfig, cfg: IngestConfig, **exec_kwargs: Any) -> StageResult:
    """Ingest every listed file not yet in ``videos``."""
    uris = list_inputs(input_cfg)
    done = lake.keys("videos")
    todo = [u for u in uris if u not in done]
    items = pa.table({"uri": pa.array(todo, pa.string())})
    return run_items(STAGE, items, functools.partial(ingest_one, cfg=cfg), _on_error, lake, ["videos"],
                     prepare=_ExactDuplicates(lake), **exec_kwargs)

