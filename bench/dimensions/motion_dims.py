"""Large motion and pixel-level stability: both from the motion scorer's dense optical flow
(``curation.scorers.motion``: its luma views, frame pairs and ``pair_flows``; DIS by default).

- ``large_motion``: the mean flow magnitude over all pixels and pairs, in frame widths per second, divided by
  ``saturation`` (the speed that scores 1) and clipped to [0, 1]. A still video scores 0.
- ``pixel_stability``: static pixels are those whose flow stays below ``static_px`` in every pair; inside them the
  mean absolute gray-level difference of consecutive frames (at the video's resolution) is ``d`` and the score is
  ``exp(-d / diff_scale)``: 1 for a perfectly still region, lower for flicker or per-frame noise. When fewer than
  ``min_static_fraction`` of the pixels are static the least-moving ``min_static_fraction`` are used (evidence says).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.common import clip_frames, need_frames, parse_section, unit
from curation.jobconfig import Strict


class FlowSection(Strict):
    flow_backend: str = "dis"  # dis | farneback | raft (the motion scorer's backends)
    raft_weights: str | None = None
    flow_width: int = Field(default=160, ge=32, le=1024)
    max_pairs: int = Field(default=16, ge=1, le=256)


@dataclass
class Flows:
    gray: np.ndarray  # (N, h, w) uint8 luma at flow resolution
    pairs: list[tuple[int, int]]
    dts: np.ndarray  # seconds per pair
    flows: list[np.ndarray]  # (h, w, 2) px per pair


def video_flows(video: BenchVideo, sec: FlowSection, max_frames: int = 64) -> Flows:
    """The motion scorer's flow of the video's consecutive (sampled) frames."""
    from curation.scorers import motion

    cfg = motion.MotionConfig(flow_backend=sec.flow_backend, raft_weights=sec.raft_weights,
                              flow_width=sec.flow_width, max_pairs=sec.max_pairs)
    clip = clip_frames(video, max_frames)
    views = motion._views(clip, cfg)
    _, pairs, dts = motion._frame_pairs(clip, cfg.max_pairs)
    return Flows(views.gray, pairs, dts, motion.pair_flows(views.gray, pairs, cfg))


class LargeMotionSection(FlowSection):
    saturation: float = Field(default=0.25, gt=0)  # frame widths per second that score 1


class LargeMotion:
    name: ClassVar[str] = "large_motion"
    group: ClassVar[str] = "dynamic_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps"})

    def __init__(self, section: Any = None) -> None:
        self.cfg = parse_section(LargeMotionSection, section)

    def score(self, video: BenchVideo) -> DimensionScore:
        need_frames(video, 2, self.name)
        f = video_flows(video, self.cfg)
        w = float(f.gray.shape[2])
        speeds = [float(np.linalg.norm(fl, axis=2).mean()) / w / dt for fl, dt in zip(f.flows, f.dts)]
        speed = float(np.mean(speeds))
        return DimensionScore(unit(speed / self.cfg.saturation),
                              {"flow_speed_widths_per_s": speed, "num_pairs": len(f.pairs),
                               "saturation": self.cfg.saturation})


class PixelStabilitySection(FlowSection):
    static_px: float = Field(default=0.5, gt=0)  # flow below this (px at flow width) in every pair: static
    diff_scale: float = Field(default=3.0, gt=0)  # gray levels of mean difference that score exp(-1)
    min_static_fraction: float = Field(default=0.1, gt=0, le=1)


class PixelStability:
    name: ClassVar[str] = "pixel_stability"
    group: ClassVar[str] = "dynamic_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps"})

    def __init__(self, section: Any = None) -> None:
        self.cfg = parse_section(PixelStabilitySection, section)

    def _static_mask(self, f: Flows) -> tuple[np.ndarray, bool]:
        peak = np.max(np.stack([np.linalg.norm(fl, axis=2) for fl in f.flows]), axis=0)
        mask = peak < self.cfg.static_px
        if mask.mean() >= self.cfg.min_static_fraction:
            return mask, False
        return peak <= np.quantile(peak, self.cfg.min_static_fraction), True

    def score(self, video: BenchVideo) -> DimensionScore:
        need_frames(video, 2, self.name)
        f = video_flows(video, self.cfg)
        mask, fallback = self._static_mask(f)
        clip = clip_frames(video, 64)
        gray = clip.gray().astype(np.float32)
        full = cv2.resize(mask.astype(np.uint8), (gray.shape[2], gray.shape[1]), interpolation=cv2.INTER_NEAREST) > 0
        diffs = [float(np.abs(gray[b] - gray[a])[full].mean()) for a, b in f.pairs]
        d = float(np.mean(diffs))
        return DimensionScore(unit(np.exp(-d / self.cfg.diff_scale)),
                              {"static_fraction": float(mask.mean()), "static_fallback": fallback,
                               "mean_abs_diff": d, "num_pairs": len(f.pairs)})
