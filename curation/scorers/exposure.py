"""Tonal distribution of a clip: mean luma, clipped highlights/shadows and a smooth overexposure score.

All sampled frames are pooled into one 256-bin luma histogram (no crop is applied: black bars count as shadows).

``overexposure_score`` is a logistic of the *highlight mass*
``x = clipped_high + tail_weight * (fraction >= tail_level - clipped_high)``, i.e. saturated pixels count fully
and near-saturated ones (``tail_level <= luma < clip_high_level``) partly, rescaled so that ``x = 0`` gives
exactly 0 and large ``x`` tends to 1. With the defaults, ordinary textured content (< 2 % saturated) scores
< 0.05 and heavily overexposed content (> 30 % at >= 250) scores > 0.95.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames

STAGE = "exposure"
VERSION = "1"


class ExposureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_high_level: int = Field(250, ge=128, le=255, description="luma >= this counts as clipped highlight")
    clip_low_level: int = Field(5, ge=0, le=127, description="luma <= this counts as clipped shadow")
    tail_level: int = Field(235, ge=128, le=255, description="start of the near-saturated upper tail")
    tail_weight: float = Field(0.5, ge=0.0, le=1.0, description="weight of the near-saturated tail mass")
    score_center: float = Field(0.15, gt=0.0, lt=1.0, description="highlight mass at which the logistic is 0.5")
    score_width: float = Field(0.04, gt=0.0, le=0.5, description="logistic scale of the highlight mass")


def _logistic(x: float, center: float, width: float) -> float:
    z = (x - center) / width
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def overexposure(clipped_high: float, tail: float, cfg: ExposureConfig) -> float:
    """Score in [0, 1] from the clipped fraction and the upper-tail fraction (``>= tail_level``)."""
    x = clipped_high + cfg.tail_weight * max(tail - clipped_high, 0.0)
    l0 = _logistic(0.0, cfg.score_center, cfg.score_width)
    s = (_logistic(x, cfg.score_center, cfg.score_width) - l0) / (1.0 - l0)
    return float(min(max(s, 0.0), 1.0))


def score(clip: ClipFrames, cfg: ExposureConfig) -> dict[str, object]:
    """Pooled luma statistics of all sampled frames."""
    n, h, w = clip.gray().shape
    g = clip.gray().reshape(n * h, w)
    hist = cv2.calcHist([g], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    total = float(hist.sum())
    mean = float(hist @ np.arange(256, dtype=np.float64)) / total
    high = float(hist[cfg.clip_high_level :].sum()) / total
    low = float(hist[: cfg.clip_low_level + 1].sum()) / total
    tail = float(hist[cfg.tail_level :].sum()) / total
    return {
        "mean_luma": mean,
        "clipped_high_fraction": high,
        "clipped_low_fraction": low,
        "overexposure_score": overexposure(high, tail, cfg),
    }
