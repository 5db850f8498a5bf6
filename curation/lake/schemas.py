"""Schemas of every Lance table in the lake. Every stage and package refers to these; none re-declares columns.

Conventions: keys are strings; every stage table carries ``status`` ("ok" | "error"), ``error`` (message or
null) and ``stage_version``; boxes are in source pixels as ``x0, y0, x1, y1`` with exclusive ends.
"""
from __future__ import annotations

import pyarrow as pa

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_DUPLICATE = "duplicate"

_STATUS = [
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
]

VIDEOS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),  # write key: one row per input file
        pa.field("video_id", pa.string(), nullable=False),  # content hash; unique among status "ok"
        pa.field("media_type", pa.string()),  # "video" | "image"
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("duplicate_of", pa.string()),  # uri of the first file with the same content
        *_STATUS,
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

CLIPS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # f"{video_id}:{start_frame:06d}-{end_frame:06d}"
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),  # exclusive
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float64()),
        pa.field("keyframes", pa.list_(pa.binary())),  # small JPEGs: first, middle, last
        pa.field("keyframe_indices", pa.list_(pa.int64())),
        *_STATUS,
    ]
)

# One schema per classical stage: stage-specific score columns. Common columns are added by ``stage_schema``.
STAGE_FIELDS: dict[str, list[pa.Field]] = {
    "duration_resolution": [
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("short_side", pa.int32()),
    ],
    "borders": [
        pa.field("has_border", pa.bool_()),
        pa.field("crop_x0", pa.int32()),
        pa.field("crop_y0", pa.int32()),
        pa.field("crop_x1", pa.int32()),
        pa.field("crop_y1", pa.int32()),
        pa.field("border_fraction", pa.float32()),  # area outside the crop box / frame area
    ],
    "exposure": [
        pa.field("mean_luma", pa.float32()),
        pa.field("clipped_high_fraction", pa.float32()),
        pa.field("clipped_low_fraction", pa.float32()),
        pa.field("overexposure_score", pa.float32()),  # 0..1, higher = more overexposed
    ],
    "blur": [
        pa.field("laplacian_var", pa.float32()),
        pa.field("blur_score", pa.float32()),  # 0..1, higher = blurrier
    ],
    "motion": [
        pa.field("camera_motion", pa.float32()),
        pa.field("subject_motion", pa.float32()),
        pa.field("moving_fraction", pa.float32()),
        pa.field("num_movers", pa.float32()),
        pa.field("shakiness", pa.float32()),
        pa.field("motion_tier", pa.string()),
        pa.field("flow_backend", pa.string()),
    ],
    "watermark": [
        pa.field("has_watermark", pa.bool_()),
        pa.field("watermark_score", pa.float32()),
        pa.field("wm_x0", pa.int32()),
        pa.field("wm_y0", pa.int32()),
        pa.field("wm_x1", pa.int32()),
        pa.field("wm_y1", pa.int32()),
    ],
    "phash": [
        pa.field("phash", pa.int64()),  # 64-bit DCT hash of the middle frame (bit pattern in an int64)
        pa.field("phashes", pa.list_(pa.int64())),  # hashes of the sampled keyframes
    ],
    "dedup": [
        pa.field("dup_group", pa.string()),
        pa.field("duplicate_of", pa.string()),  # clip_id of the kept member, null for the kept one
        pa.field("is_duplicate", pa.bool_()),
    ],
}


def stage_schema(name: str) -> pa.Schema:
    """Schema of ``stages/<name>``: key, the stage's score columns, version and status."""
    if name not in STAGE_FIELDS:
        raise KeyError(f"unknown stage table {name!r}; known: {sorted(STAGE_FIELDS)}")
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            *STAGE_FIELDS[name],
            pa.field("stage_version", pa.string()),
            *_STATUS,
        ]
    )


CURATED = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("crop_x0", pa.int32()),
        pa.field("crop_y0", pa.int32()),
        pa.field("crop_x1", pa.int32()),
        pa.field("crop_y1", pa.int32()),
        pa.field("motion_tier", pa.string()),
        pa.field("keep", pa.bool_()),
        pa.field("reject_reasons", pa.list_(pa.string())),
        pa.field("scores_json", pa.string()),  # every joined score, for reports and later re-thresholding
        pa.field("cluster_id", pa.int32()),
        pa.field("quality", pa.float32()),
        pa.field("split", pa.string()),  # "pretrain" | "post-train" | null
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("stage", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("input_versions", pa.string()),  # JSON {table: version}
        pa.field("count_in", pa.int64()),
        pa.field("count_ok", pa.int64()),
        pa.field("count_kept", pa.int64()),
        pa.field("count_rejected", pa.int64()),
        pa.field("count_failed", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
    ]
)

TABLE_KEYS: dict[str, str] = {"videos": "uri", "clips": "clip_id", "curated": "clip_id", "runs": "run_id"}
TABLE_SCHEMAS: dict[str, pa.Schema] = {"videos": VIDEOS, "clips": CLIPS, "curated": CURATED, "runs": RUNS}


def schema_for(table: str) -> pa.Schema:
    """Schema for a table name such as ``clips`` or ``stages/blur``."""
    if table.startswith("stages/"):
        return stage_schema(table.split("/", 1)[1])
    if table not in TABLE_SCHEMAS:
        raise KeyError(f"unknown table {table!r}")
    return TABLE_SCHEMAS[table]


def key_for(table: str) -> str:
    """Write key of a table: rows whose key is already present are never written twice."""
    return "clip_id" if table.startswith("stages/") else TABLE_KEYS[table]
