"""Sharpness: variance of the Laplacian of the luma, at a fixed working width.

Each sampled frame is converted to luma, black bars are cut off (``borders.clip_analysis_crop``: the hard bar edge is
the sharpest thing in a blurred letterboxed clip), and the frame is resized (area interpolation) by
``working_width / frame width`` when wider, so that the statistic is comparable across source resolutions.
``cv2.Laplacian`` (3x3 aperture) is then pooled over tiles of about ``tile_size`` px: the frame's value is the
``tile_quantile`` quantile of the per-tile Laplacian variances (robust to sharp overlays such as captions or a logo
drawn over blurred content, and to flat areas); ``tile_size = 0`` gives the classic whole-frame variance.
In a blown-out frame (more than ``overexposed_fraction`` of the luma at 250 or above) the
``overexposed_quantile`` of the tiles is used instead: its flat white tiles say nothing about focus.
``laplacian_var`` is the median over frames. ``blur_score`` (1 = blurry) is a decreasing logistic in
``log(laplacian_var)``: ``1 / (1 + (laplacian_var / reference_var) ** slope)``, which is 0.5 at the reference.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames, spread_indices
from curation.scorers.borders import clip_analysis_crop

STAGE = "blur"
VERSION = "3"  # 3: at 240 px wide (codecs smooth the finest scale); blown-out frames judged on textured tiles


class BlurConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    working_width: int = Field(240, ge=32, le=4096, description="frames wider than this are resized to it")
    reference_var: float = Field(
        24.0, gt=0.0, le=1e6, description="Laplacian variance at which blur_score is 0.5"
    )
    slope: float = Field(2.0, gt=0.0, le=20.0, description="steepness of the logistic in log(laplacian_var)")
    max_frames: int = Field(64, ge=1, le=10_000, description="frames sampled uniformly for the analysis")
    tile_size: int = Field(30, ge=0, le=1024, description="tile side (working px); 0: whole-frame variance")
    tile_quantile: float = Field(0.5, ge=0.0, le=1.0, description="quantile of the per-tile variances")
    crop_borders: bool = Field(True, description="exclude black bars (borders.clip_analysis_crop) from the statistic")
    overexposed_fraction: float = Field(0.3, ge=0.0, le=1.0, description="frames with more luma >= 250 are blown out")
    overexposed_quantile: float = Field(
        0.8, ge=0.0, le=1.0, description="tile quantile of a blown-out frame (its flat white tiles say nothing)"
    )


def laplacian_variance(
    gray: np.ndarray, working_width: int, tile_size: int = 0, tile_quantile: float = 0.5, full_width: int | None = None
) -> float:
    """Laplacian variance of one gray (or BGR) frame at ``working_width`` (see the module docstring).

    ``full_width``: width of the uncropped frame, which sets the resize factor when ``gray`` is a crop.
    """
    g = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY) if gray.ndim == 3 else gray
    h, w = g.shape
    fw = full_width or w
    if fw > working_width:
        f = working_width / fw
        g = cv2.resize(g, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    lh, lw = lap.shape
    if tile_size <= 0 or (lh < 2 * tile_size and lw < 2 * tile_size):
        _, std = cv2.meanStdDev(lap)
        return float(std[0, 0]) ** 2
    size = (max(1, int(round(lw / tile_size))), max(1, int(round(lh / tile_size))))
    m1 = cv2.resize(lap, size, interpolation=cv2.INTER_AREA)
    m2 = cv2.resize(lap * lap, size, interpolation=cv2.INTER_AREA)
    var = np.maximum(m2 - m1 * m1, 0.0)
    return float(np.quantile(var, tile_quantile))


def blur_score(laplacian_var: float, cfg: BlurConfig) -> float:
    """0..1, higher = blurrier; 0.5 at ``cfg.reference_var``."""
    z = cfg.slope * (math.log(max(laplacian_var, 1e-9)) - math.log(cfg.reference_var))
    if z > 700:
        return 0.0
    return float(1.0 / (1.0 + math.exp(z)))


def _quantile(g: np.ndarray, cfg: BlurConfig) -> float:
    """The tile quantile for one frame: in a blown-out frame most tiles are flat white whatever the focus, and
    the median tile then measures how a codec treated near-white detail; its textured part is judged instead."""
    if cfg.overexposed_fraction < 1.0 and float((g >= 250).mean()) > cfg.overexposed_fraction:
        return cfg.overexposed_quantile
    return cfg.tile_quantile


def score(clip: ClipFrames, cfg: BlurConfig) -> dict[str, object]:
    """Median Laplacian variance over the sampled frames and the derived blur score."""
    gray = clip.gray()[spread_indices(clip.num_frames, cfg.max_frames)]
    n, h, w = gray.shape
    x0, y0, x1, y1 = clip_analysis_crop(clip) if cfg.crop_borders else (0, 0, w, h)
    values = [
        laplacian_variance(g[y0:y1, x0:x1], cfg.working_width, cfg.tile_size, _quantile(g[y0:y1, x0:x1], cfg),
                           full_width=w)
        for g in gray
    ]
    lv = float(np.median(values))
    return {"laplacian_var": lv, "blur_score": blur_score(lv, cfg)}
