"""The in-memory unit every classical scorer works on: one clip's sampled, downscaled frames.

A clip is decoded once (see ``curation.media.decode``); every scorer receives the same ``ClipFrames`` so that
adding a scorer never adds a decode.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


def spread_indices(n: int, k: int) -> np.ndarray:
    """At most ``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


@dataclass(frozen=True)
class ClipFrames:
    """Sampled frames of one clip (or one image) at analysis resolution.

    Attributes:
        clip_id: key of the clip in the ``clips`` table.
        media_type: ``"video"`` or ``"image"``.
        source_fps: frame rate of the source video (0.0 for an image).
        sample_fps: rate at which ``frames`` were sampled (0.0 for an image).
        source_width, source_height: size of the source media in pixels.
        frames: ``(N, H, W, 3)`` uint8, BGR (OpenCV order), downscaled so the long side is at most the
            configured analysis size, aspect ratio kept. ``N == 1`` for an image.
        frame_indices: ``(N,)`` int64, index of each sampled frame in the source video.
        start_frame, end_frame: the clip's span in source frames (end exclusive; 0, 1 for an image).
        start_s, end_s: the span in seconds from the stream's presentation timestamps, when known (right for
            variable frame rate); otherwise the duration is counted in frames at ``source_fps``.
    """

    clip_id: str
    media_type: str
    source_fps: float
    sample_fps: float
    source_width: int
    source_height: int
    frames: np.ndarray
    frame_indices: np.ndarray
    start_frame: int = 0
    end_frame: int = 1
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}")
        if len(self.frame_indices) != len(self.frames):
            raise ValueError("frame_indices and frames differ in length")

    def derived(self, key: str, compute: Callable[[], T]) -> T:
        """A value derived from the frames, computed once per clip and shared by every scorer that asks for it
        under the same ``key`` (for example the black-bar crop that borders, blur and watermark all need)."""
        cache = self._derived
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    @cached_property
    def _derived(self) -> dict[str, Any]:
        return {}

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds (0.0 for an image): from the timestamps when known."""
        if self.start_s is not None and self.end_s is not None:
            return self.end_s - self.start_s
        return (self.end_frame - self.start_frame) / self.source_fps if self.source_fps > 0 else 0.0

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def scale(self) -> float:
        """Analysis pixels per source pixel (<= 1)."""
        return self.frames.shape[2] / float(self.source_width)

    def gray(self) -> np.ndarray:
        """``(N, H, W)`` uint8 luma (BT.601, OpenCV's BGR2GRAY), computed once and shared by every scorer."""
        return self._gray

    @cached_property
    def _gray(self) -> np.ndarray:
        n, h, w, _ = self.frames.shape
        # One cvtColor over the frames stacked as a tall image: no per-frame Python, no float copy.
        gray = cv2.cvtColor(self.frames.reshape(n * h, w, 3), cv2.COLOR_BGR2GRAY).reshape(n, h, w)
        gray.flags.writeable = False
        return gray
