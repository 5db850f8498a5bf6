"""Stage 7, near-duplicate detection: group clips whose perceptual hashes are within a Hamming distance.

Global by nature (any clip may duplicate any other), so it rewrites ``stages/dedup`` from ``stages/phash``
whole; banded LSH keeps it near-linear in the number of clips. In each group the largest, longest clip is kept.
"""
from __future__ import annotations

import pyarrow as pa

from curation.config import DedupConfig
from curation.lake.schemas import STATUS_OK, stage_schema
from curation.lake.tables import Lake
from curation.scorers.near_dup import find_near_duplicates

STAGE = "dedup"
VERSION = "1"


def run_dedup(lake: Lake, cfg: DedupConfig) -> dict[str, int]:
    """Rewrite ``stages/dedup``; returns ``{"in", "duplicates", "groups"}``."""
    if not lake.exists("stages/phash"):
        if lake.count("clips", "status = 'ok'") > 0:
            raise RuntimeError("dedup needs the 'phash' stage's table: run stage 'phash' first")
        lake.overwrite("stages/dedup", stage_schema("dedup").empty_table())  # nothing ingested yet
        return {"in": 0, "duplicates": 0, "groups": 0}
    hashes = lake.read("stages/phash", columns=["clip_id", "phashes"], filter=f"status = '{STATUS_OK}'")
    meta = lake.read("clips", columns=["clip_id", "width", "height", "duration_s"])
    size = {c: ((w or 0) * (h or 0), d or 0.0) for c, w, h, d in zip(*(meta.column(n).to_pylist()
                                                                       for n in meta.column_names))}
    hashes = hashes.sort_by("clip_id")
    ids = [c for c in hashes.column("clip_id").to_pylist() if c in size]
    by_id = dict(zip(hashes.column("clip_id").to_pylist(), hashes.column("phashes").to_pylist()))
    groups = find_near_duplicates(ids, [by_id[c] for c in ids], [size[c] for c in ids],
                                  max_distance=cfg.max_distance)
    rows = [{**g, "stage_version": VERSION, "status": STATUS_OK} for g in groups]
    lake.overwrite("stages/dedup", pa.Table.from_pylist(rows, schema=stage_schema("dedup")))
    dups = sum(bool(r["is_duplicate"]) for r in rows)
    return {"in": len(rows), "duplicates": dups, "groups": len({r["dup_group"] for r in rows if r["is_duplicate"]})}
