"""The classical scorers over one clip's frames, and the per-clip pass that (re)scores existing clips.

``score_clip`` is the one place every classical scorer runs: the shot pass calls it on the frames it already
decoded, and ``run_scorers`` decodes each file once for its clips that lack some scorer's row (a scorer added
after the clips were cut, or one whose config changed). Both count and sample frames the same way, so both give
the same scores.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from curation.config import config_hash
from curation.lake.schemas import STATUS_ERROR, STATUS_OK, stage_schema
from curation.lake.tables import Lake
from curation.media.decode import decode_video, image_analysis_frame, is_sampled
from curation.media.frames import ClipFrames
from curation.media.probe import MediaError, read_image
from curation.scorers.registry import SCORERS
from curation.stages.runner import Rows, StageResult, run_items


@dataclass(frozen=True)
class AnalysisSettings:
    """What the scorers need from a decode, and their configs (picklable: sent to every worker)."""

    scorers: tuple[str, ...]
    configs: dict[str, BaseModel]
    analysis_max_side: int = 384
    sample_fps: float = 6.0
    decode_threads: int = 1


def _finite(values: dict[str, object]) -> str | None:
    for k, v in values.items():
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            return k
    return None


def score_clip(clip: ClipFrames, settings: AnalysisSettings) -> Rows:
    """Rows for ``stages/<name>`` of every configured scorer; a scorer that raises or returns NaN gives an
    ``error`` row for its own table only."""
    rows: Rows = {}
    for name in settings.scorers:
        scorer = SCORERS[name]
        base = {"clip_id": clip.clip_id, "stage_version": stage_version(name, settings.configs[name])}
        try:
            values = scorer.score(clip, settings.configs[name])
            bad = _finite(values)
            if bad is not None:
                raise ValueError(f"non-finite score {bad}={values[bad]}")
            row = {**base, **values, "status": STATUS_OK}
        except Exception as e:  # noqa: BLE001 - a scorer failing on one clip is recorded, not fatal
            row = {**base, "status": STATUS_ERROR, "error": f"{name}: {type(e).__name__}: {e}"}
        rows[f"stages/{name}"] = [row]
    return rows


def stage_version(name: str, cfg: BaseModel) -> str:
    """``<module VERSION>-<config hash>``: rows scored under another version or config are recomputed."""
    return f"{SCORERS[name].version}-{config_hash(cfg)[:8]}"


def clips_frames_from_video(video: dict[str, Any], clips: list[dict[str, Any]],
                            settings: AnalysisSettings) -> Iterator[ClipFrames]:
    """``ClipFrames`` of several clips of one file, decoding the file once from its first frame.

    Frames are counted from the start exactly as the shot pass counts them (never from a seek's timestamps,
    which MPEG-TS/PS and variable-frame-rate files make unreliable), so both passes see the same frames.
    """
    if video["media_type"] == "image":
        image = image_analysis_frame(read_image(video["uri"]), settings.analysis_max_side)
        for c in clips:
            yield ClipFrames(c["clip_id"], "image", 0.0, 0.0, int(video["width"]), int(video["height"]),
                             image[None], np.zeros(1, np.int64), 0, 1)
        return
    fps = float(video["fps"])
    todo = sorted(clips, key=lambda c: c["start_frame"])
    last_end = max(int(c["end_frame"]) for c in todo)
    frames: dict[str, list[np.ndarray]] = {c["clip_id"]: [] for c in todo}
    indices: dict[str, list[int]] = {c["clip_id"]: [] for c in todo}
    k = 0  # first clip that may still receive frames
    for f in decode_video(video["uri"], last_end, threads=settings.decode_threads):
        while k < len(todo) and f.index >= todo[k]["end_frame"]:
            yield _finish(todo[k], frames, indices, fps, video, settings)
            k += 1
        for c in todo[k:]:
            if c["start_frame"] > f.index:
                break
            if is_sampled(f.index, fps, settings.sample_fps, int(c["start_frame"])):
                frames[c["clip_id"]].append(f.bgr(settings.analysis_max_side))
                indices[c["clip_id"]].append(f.index)
    for c in todo[k:]:
        yield _finish(c, frames, indices, fps, video, settings)


def _finish(clip: dict[str, Any], frames: dict[str, list[np.ndarray]], indices: dict[str, list[int]], fps: float,
            video: dict[str, Any], settings: AnalysisSettings) -> ClipFrames:
    cid = clip["clip_id"]
    got = frames.pop(cid)
    if not got:
        raise MediaError(f"no frame decoded in [{clip['start_frame']}, {clip['end_frame']})")
    return ClipFrames(cid, "video", fps, min(settings.sample_fps, fps), int(video["width"]), int(video["height"]),
                      np.stack(got), np.asarray(indices.pop(cid), np.int64), int(clip["start_frame"]),
                      int(clip["end_frame"]), clip.get("start_s"), clip.get("end_s"))


def rescore_video(item: dict[str, Any], settings: AnalysisSettings) -> Rows:
    """Scorer rows for the listed clips of one file; a clip that fails becomes error rows, the others go on."""
    clips = [{"clip_id": c, "start_frame": s, "end_frame": e, "start_s": ts, "end_s": te}
             for c, s, e, ts, te in zip(item["clip_ids"], item["starts"], item["ends"],
                                        item.get("starts_s") or [None] * len(item["clip_ids"]),
                                        item.get("ends_s") or [None] * len(item["clip_ids"]))]
    rows: Rows = {f"stages/{n}": [] for n in settings.scorers}
    done: set[str] = set()
    try:
        for clip_frames in clips_frames_from_video(item, clips, settings):
            for table, table_rows in score_clip(clip_frames, settings).items():
                rows[table].extend(table_rows)
            done.add(clip_frames.clip_id)
    except MediaError as e:
        for table, table_rows in _error_rows(settings, [c["clip_id"] for c in clips if c["clip_id"] not in done],
                                             str(e)).items():
            rows[table].extend(table_rows)
    return rows


def _error_rows(settings: AnalysisSettings, clip_ids: list[str], message: str) -> Rows:
    """An ``error`` row in every scorer's table for each clip."""
    return {f"stages/{n}": [{"clip_id": cid, "stage_version": stage_version(n, settings.configs[n]),
                             "status": STATUS_ERROR, "error": message} for cid in clip_ids]
            for n in settings.scorers}


def _rescore_error(settings: AnalysisSettings, item: dict[str, Any], message: str) -> Rows:
    return _error_rows(settings, item["clip_ids"], message)


def drop_stale_rows(lake: Lake, settings: AnalysisSettings) -> dict[str, int]:
    """Delete scorer rows computed under another scorer version or config, so they are scored again. A table
    whose columns are not the stage's current ones (written by an older scorer version) is emptied with the new
    columns, since new rows could not be appended to it."""
    dropped = {}
    for name in settings.scorers:
        ds = lake.dataset(f"stages/{name}")
        if ds is None:
            continue
        schema = stage_schema(name)
        if set(ds.schema.names) != set(schema.names):
            dropped[name] = ds.count_rows()
            lake.overwrite(f"stages/{name}", schema.empty_table())
            continue
        current = stage_version(name, settings.configs[name])
        stale = f"stage_version IS NULL OR stage_version != '{current}'"
        n = ds.count_rows(filter=stale)
        if n:
            ds.delete(stale)
            dropped[name] = n
    return dropped


def run_scorers(lake: Lake, settings: AnalysisSettings, **exec_kwargs: Any) -> StageResult:
    """Score every ``ok`` clip missing from at least one scorer's table (or scored under another config),
    one decode per file for all of its pending clips."""
    tables = [f"stages/{n}" for n in settings.scorers]
    drop_stale_rows(lake, settings)
    clips = lake.read("clips", columns=["clip_id", "uri", "media_type", "start_frame", "end_frame", "fps",
                                        "width", "height", "start_s", "end_s"], filter="status = 'ok'")
    have = [lake.keys(t) for t in tables]
    by_file: dict[str, dict[str, Any]] = {}
    for c in clips.to_pylist():
        if all(c["clip_id"] in h for h in have):
            continue
        item = by_file.setdefault(c["uri"], {"uri": c["uri"], "media_type": c["media_type"], "fps": c["fps"],
                                             "width": c["width"], "height": c["height"], "clip_ids": [],
                                             "starts": [], "ends": [], "starts_s": [], "ends_s": []})
        item["clip_ids"].append(c["clip_id"])
        item["starts"].append(c["start_frame"])
        item["ends"].append(c["end_frame"])
        item["starts_s"].append(c["start_s"])  # lineage seconds: the duration the shot pass scored
        item["ends_s"].append(c["end_s"])
    items = pa.Table.from_pylist(list(by_file.values())) if by_file else pa.table({"uri": pa.array([], pa.string())})
    return run_items("scorers", items, functools.partial(rescore_video, settings=settings),
                     functools.partial(_rescore_error, settings), lake, tables, **exec_kwargs)
