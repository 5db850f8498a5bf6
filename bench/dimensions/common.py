"""Helpers every dimension shares: its config section, frame sampling, the motion scorer's views of a video."""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from bench.dimensions.base import BenchVideo
from curation.jobconfig import Strict, validate

S = TypeVar("S", bound=Strict)


def parse_section(model: type[S], section: Any) -> S:
    """The dimension's config: defaults for ``None``, else validated (an unknown key is a ``ConfigError``)."""
    if section is None:
        return model()
    if isinstance(section, model):
        return section
    return validate(model, dict(section))


def spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)``."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def sample_frames(video: BenchVideo, k: int) -> np.ndarray:
    """At most ``k`` frames of the video, evenly spread (RGB)."""
    return video.frames[spread(len(video.frames), k)]


def need_frames(video: BenchVideo, n: int, dimension: str) -> None:
    if len(video.frames) < n:
        raise ValueError(f"{dimension} needs at least {n} frames, the video has {len(video.frames)}")


def need_meta(video: BenchVideo, key: str, dimension: str) -> Any:
    value = video.meta.get(key)
    if value in (None, "", []):
        raise ValueError(f"{dimension} needs prompt metadata '{key}' (prompt suite), absent for '{video.sample_id}'")
    return value


def clip_frames(video: BenchVideo, max_frames: int) -> Any:
    """The video as the motion scorer's ``ClipFrames`` (BGR, at most ``max_frames`` evenly spread frames)."""
    from curation.media.frames import ClipFrames

    idx = spread(len(video.frames), max_frames)
    fps = float(video.fps) if video.fps > 0 else 8.0
    frames = np.ascontiguousarray(video.frames[idx][..., ::-1])
    h, w = frames.shape[1:3]
    return ClipFrames(video.sample_id or "bench", "video", fps, fps, w, h, frames, idx.astype(np.int64),
                      0, len(video.frames))


def unit(x: float) -> float:
    """``x`` clipped into [0, 1] (NaN -> 0)."""
    return float(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0))
