"""Stage 8, select: join every stage's stored scores per clip, apply the YAML thresholds, write ``curated``.

Nothing is recomputed here: changing a threshold means re-running ``select`` alone (seconds), as Data-Juicer's
compute-stats / process split allows. The scorers store statistics only; the motion tier and the watermark flag are
decided here too (``curation.stages.decisions``, thresholds in ``select.motion_tiers`` and
``select.watermark_min_score``). Each rejected clip lists every reason, not just the first, and every clip lists
the decisions that sat near a threshold (``near_threshold``).
"""
from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa

from curation.config import SelectConfig
from curation.lake.schemas import CURATED, STAGE_FIELDS, STATUS_OK
from curation.lake.tables import Lake
from curation.stages import decisions as dec

STAGE = "select"
_CLIP_COLUMNS = ["clip_id", "video_id", "uri", "media_type", "start_frame", "end_frame", "duration_s", "width",
                 "height", "status", "error"]
_LINEAGE = ("start_s", "end_s", "rotation")  # copied from clips into curated


def joined_scores(lake: Lake, stages: list[str]) -> pa.Table:
    """``clips`` left-joined with each present ``stages/<name>`` table; stage columns are prefixed
    ``<name>.`` (including ``<name>.status``)."""
    wide = lake.read("clips", columns=_CLIP_COLUMNS + list(_LINEAGE))
    for name in stages:
        if not lake.exists(f"stages/{name}"):
            continue
        scalar = [f.name for f in STAGE_FIELDS[name] if not pa.types.is_list(f.type)]  # joins take no lists
        cols = ["clip_id", *scalar, "status", "error"]
        t = lake.read(f"stages/{name}", columns=cols)
        t = t.rename_columns(["clip_id", *[f"{name}.{c}" for c in cols[1:]]])
        if name == "experts":
            t = _with_expert_columns(lake, t)
        wide = wide.join(t, "clip_id", join_type="left outer")
    return wide.sort_by("clip_id")


def _with_expert_columns(lake: Lake, t: pa.Table) -> pa.Table:
    """One ``experts.<name>`` column per expert head (the stage stores names and scores as lists)."""
    lists = lake.read("stages/experts", columns=["clip_id", "expert_names", "expert_scores"])
    by_clip = {c: dict(zip(n or [], s or [])) for c, n, s in zip(*(lists.column(k).to_pylist()
                                                                   for k in lists.column_names))}
    names = sorted({n for scores in by_clip.values() for n in scores})
    ids = t.column("clip_id").to_pylist()
    for n in names:
        t = t.append_column(f"experts.{n}", pa.array([by_clip.get(c, {}).get(n) for c in ids], pa.float32()))
    return t


def crop_excluding(crop: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Largest sub-rectangle of ``crop`` that leaves out ``box`` by cutting one side (the cheapest one)."""
    x0, y0, x1, y1 = crop
    bx0, by0, bx1, by1 = box
    if bx1 <= x0 or bx0 >= x1 or by1 <= y0 or by0 >= y1:
        return crop
    options = [(x0, y0, x1, max(y0, by0)), (x0, min(y1, by1), x1, y1),  # cut above / below the box
               (x0, y0, max(x0, bx0), y1), (min(x1, bx1), y0, x1, y1)]  # cut left / right of it
    return max(options, key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _stage(row: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """A stage's values of a joined row: those of an ``ok`` row, or (hand-made rows without a status) as given."""
    if f"{stage}.status" not in row:
        return {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith(f"{stage}.")}
    return dec.stage_values(row, stage)


def decide(row: dict[str, Any], stages: list[str], cfg: SelectConfig) -> tuple[list[str], tuple[int, int, int, int]]:
    """Reject reasons and crop box of one joined row. ``stages`` are the stage tables a clip must have a row in.

    Duration and resolution come from the clip itself, so they hold whether or not the ``duration_resolution``
    stage ran; resolution is judged on the crop box (black bars and a watermark strip removed)."""
    reasons: list[str] = []
    if row["status"] != STATUS_OK:
        return [f"error:clips: {row['error']}"], (0, 0, 0, 0)
    for s in stages:
        st = row.get(f"{s}.status")
        if st is None:
            reasons.append(f"missing:{s}")
        elif st != STATUS_OK:
            reasons.append(f"error:{s}")
    g = lambda key: _num(row.get(key))  # noqa: E731
    dur = _num(row["duration_s"])
    if dur is not None and not (row["media_type"] == "image" and cfg.images_skip_duration):
        if dur <= cfg.min_duration_s:
            reasons.append("too_short")
        if cfg.max_duration_s is not None and dur > cfg.max_duration_s:
            reasons.append("too_long")
    if dec.has_too_much_border(_stage(row, "borders"), cfg):
        reasons.append("border")
    if dec.is_overexposed(_stage(row, "exposure"), cfg):
        reasons.append("overexposed")
    if dec.is_blurry(_stage(row, "blur"), cfg):
        reasons.append("blurry")
    tier = dec.motion_tier(dec.stage_values(row, "motion"), cfg)
    if tier is not None and tier in cfg.exclude_tiers:
        reasons.append(f"motion:{tier}")
    watermark = dec.has_watermark(dec.stage_values(row, "watermark"), cfg)
    if watermark and cfg.reject_watermark:
        reasons.append("watermark")
    if row.get("dedup.is_duplicate") and cfg.reject_near_duplicates:
        reasons.append("near_duplicate")
    if cfg.max_text_coverage is not None and (v := g("ocr.text_coverage_max")) is not None \
            and v > cfg.max_text_coverage:
        reasons.append("text")
    if cfg.min_aesthetic is not None and (v := g("aesthetic.aesthetic_score")) is not None and v < cfg.min_aesthetic:
        reasons.append("low_aesthetic")
    if cfg.max_nsfw is not None and (v := g("nsfw.nsfw_score")) is not None and v > cfg.max_nsfw:
        reasons.append("nsfw")
    for expert, limit in sorted(cfg.max_expert_score.items()):
        if (v := g(f"experts.{expert}")) is not None and v > limit:
            reasons.append(f"expert:{expert}")
    crop = (0, 0, int(row["width"]), int(row["height"]))
    if g("borders.crop_x1") is not None and row.get("borders.status") == STATUS_OK:
        crop = (int(row["borders.crop_x0"]), int(row["borders.crop_y0"]), int(row["borders.crop_x1"]),
                int(row["borders.crop_y1"]))
    wm_x0 = g("watermark.wm_x0")
    if watermark and wm_x0 is not None and wm_x0 >= 0:
        crop = crop_excluding(crop, (int(row["watermark.wm_x0"]), int(row["watermark.wm_y0"]),
                                     int(row["watermark.wm_x1"]), int(row["watermark.wm_y1"])))
    if min(crop[2] - crop[0], crop[3] - crop[1]) < cfg.min_short_side[cfg.train_stage]:
        reasons.append("low_resolution")
    return reasons, crop


def select_rows(wide: pa.Table, stages: list[str], cfg: SelectConfig) -> list[dict[str, Any]]:
    """``curated`` rows for a joined table."""
    out = []
    score_cols = [c for c in wide.column_names if "." in c and not c.endswith((".status", ".error"))]
    for row in wide.to_pylist():
        reasons, crop = decide(row, stages, cfg)
        scores = {c: row[c] for c in score_cols if row[c] is not None}
        out.append({
            **{k: row[k] for k in ("clip_id", "video_id", "uri", "media_type", "start_frame", "end_frame",
                                   "duration_s", "width", "height")},
            **{k: row.get(k) for k in _LINEAGE},
            "crop_x0": crop[0], "crop_y0": crop[1], "crop_x1": crop[2], "crop_y1": crop[3],
            "motion_tier": dec.motion_tier(dec.stage_values(row, "motion"), cfg), "keep": not reasons,
            "reject_reasons": reasons, "near_threshold": dec.near_thresholds(row, cfg),
            "scores_json": json.dumps(scores, sort_keys=True, default=float),
            "split": "pretrain" if not reasons else None,
        })
    return out


def run_select(lake: Lake, stages: list[str], cfg: SelectConfig) -> dict[str, int]:
    """Rewrite ``curated`` from the stored scores of ``stages`` (every clip must have a row in each of them
    that exists in the lake); returns ``{"in", "kept", "rejected", "failed"}``."""
    stages = [s for s in stages if lake.exists(f"stages/{s}")]
    wide = joined_scores(lake, stages)
    rows = select_rows(wide, stages, cfg)
    lake.overwrite("curated", pa.Table.from_pylist(rows, schema=CURATED))
    kept = sum(r["keep"] for r in rows)
    failed = sum(any(x.startswith("error:") for x in r["reject_reasons"]) for r in rows)
    return {"in": len(rows), "kept": kept, "rejected": len(rows) - kept, "failed": failed}
