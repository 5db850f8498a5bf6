"""Two small dimensions with known answers, registered into ``bench.dimensions.DIMENSIONS`` on import (the job's
``dimension_modules`` imports this in every actor and in the kill -9 victim), and the tiny media the tests score.

``toy_brightness`` (image_quality): the mean pixel value / 255. ``toy_motion`` (dynamic_quality): the mean absolute
difference of consecutive frames / 255; a single frame is a ``ValueError`` (an error row for that pair only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import bench.dimensions as package
from bench.dimensions.base import BenchVideo, DimensionScore


class ToyBrightness:
    name: ClassVar[str] = "toy_brightness"
    group: ClassVar[str] = "image_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.config = config or {}

    def score(self, video: BenchVideo) -> DimensionScore:
        mean = float(video.frames.mean()) / 255.0
        answer = {"question": "How bright is the video?", "answer": f"brightness of {video.prompt}", "value": mean}
        return DimensionScore(mean, {"mean_pixel": mean * 255.0, "judge": [answer]})  # shaped as the VLM judge's


class ToyMotion:
    name: ClassVar[str] = "toy_motion"
    group: ClassVar[str] = "dynamic_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.config = config or {}

    def score(self, video: BenchVideo) -> DimensionScore:
        if video.frames.shape[0] < 2:
            raise ValueError("toy_motion needs at least 2 frames")
        diff = np.abs(np.diff(video.frames.astype(np.int16), axis=0)).mean() / 255.0
        return DimensionScore(float(diff), {"frames": int(video.frames.shape[0])})


DIMENSIONS: dict[str, Any] = package.__dict__.setdefault("DIMENSIONS", {})
DIMENSIONS.setdefault(ToyBrightness.name, ToyBrightness)
DIMENSIONS.setdefault(ToyMotion.name, ToyMotion)


def gray_video(level: int, frames: int = 6, size: int = 32) -> np.ndarray:
    """A static video of one gray level: brightness level/255, motion 0."""
    return np.full((frames, size, size, 3), level, np.uint8)


def flicker_video(frames: int = 6, size: int = 32) -> np.ndarray:
    """Frames alternating 0 and 255: brightness 0.5 (even count), motion 1."""
    return np.stack([np.full((size, size, 3), 255 * (i % 2), np.uint8) for i in range(frames)])


def write_folder(root: Path, videos: dict[str, np.ndarray], fps: float = 8.0) -> Path:
    """Each video as ``root/<name>.mp4``; a name ending ``.png`` is written as an image."""
    from wanmodel.pipelines.common import write_image, write_mp4

    root.mkdir(parents=True, exist_ok=True)
    for name, video in videos.items():
        if name.endswith(".png"):
            write_image(root / name, video[0])
        else:
            write_mp4(root / f"{name}.mp4", video, fps)
    return root
