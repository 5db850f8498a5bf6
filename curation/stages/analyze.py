"""The classical scorers over one clip's frames, and the per-clip pass that (re)scores existing clips.

``score_clip`` is the one place every classical scorer runs: the shot pass calls it on the frames it already
decoded, and ``run_scorers`` decodes a clip's span once for clips that lack some scorer's table (for example a
scorer added after the clips were cut). Both sample the same frames, so both give the same scores.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from curation.lake.schemas import STATUS_ERROR, STATUS_OK
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
        if isinstance(v, float) and not math.isfinite(v):
            return k
    return None


def score_clip(clip: ClipFrames, settings: AnalysisSettings) -> Rows:
    """Rows for ``stages/<name>`` of every configured scorer; a scorer that raises or returns NaN gives an
    ``error`` row for its own table only."""
    rows: Rows = {}
    for name in settings.scorers:
        scorer = SCORERS[name]
        base = {"clip_id": clip.clip_id, "stage_version": scorer.version}
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


def clip_frames_from_file(clip: dict[str, Any], settings: AnalysisSettings) -> ClipFrames:
    """Decode one clip's span (or read an image) into ``ClipFrames``."""
    start, end = int(clip["start_frame"]), int(clip["end_frame"])
    if clip["media_type"] == "image":
        image = image_analysis_frame(read_image(clip["uri"]), settings.analysis_max_side)
        return ClipFrames(clip["clip_id"], "image", 0.0, 0.0, int(clip["width"]), int(clip["height"]),
                          image[None], np.zeros(1, np.int64), 0, 1)
    fps = float(clip["fps"])
    frames, indices = [], []
    for f in decode_video(clip["uri"], start, end, threads=settings.decode_threads):
        if is_sampled(f.index, fps, settings.sample_fps, start):
            frames.append(f.bgr(settings.analysis_max_side))
            indices.append(f.index)
    if not frames:
        raise MediaError(f"no frame decoded in [{start}, {end})")
    return ClipFrames(clip["clip_id"], "video", fps, min(settings.sample_fps, fps), int(clip["width"]),
                      int(clip["height"]), np.stack(frames), np.asarray(indices, np.int64), start, end)


def rescore_one(item: dict[str, Any], settings: AnalysisSettings) -> Rows:
    return score_clip(clip_frames_from_file(item, settings), settings)


def _rescore_error(settings: AnalysisSettings, item: dict[str, Any], message: str) -> Rows:
    return {f"stages/{n}": [{"clip_id": item["clip_id"], "stage_version": SCORERS[n].version,
                             "status": STATUS_ERROR, "error": message}] for n in settings.scorers}


def run_scorers(lake: Lake, settings: AnalysisSettings, **exec_kwargs: Any) -> StageResult:
    """Score every ``ok`` clip that is missing from at least one of the scorers' tables."""
    tables = [f"stages/{n}" for n in settings.scorers]
    clips = lake.read("clips", columns=["clip_id", "uri", "media_type", "start_frame", "end_frame", "fps",
                                        "width", "height"], filter="status = 'ok'")
    have = [lake.keys(t) for t in tables]
    todo = [i for i, c in enumerate(clips.column("clip_id").to_pylist()) if any(c not in h for h in have)]
    items = clips.take(pa.array(todo, pa.int64())) if todo else clips.slice(0, 0)
    return run_items("scorers", items, functools.partial(rescore_one, settings=settings),
                     functools.partial(_rescore_error, settings), lake, tables, **exec_kwargs)
