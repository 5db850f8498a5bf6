"""Static-overlay (watermark / logo) detection.

Default backend ``"persistence"``: temporal persistence of edges. A static overlay keeps the same edges on every
frame while the content underneath moves. Per pixel, with ``g_t`` the Sobel gradient vector of sampled frame ``t``:

    persistence = |mean_t g_t| / mean_t |g_t|        (in [0, 1])

which is ~1 where an edge stays put (same position, orientation and polarity) and ~1/sqrt(N) where content moves.
This vector form is the robust version of "fraction of frames where the pixel is an edge": for a semi-transparent
overlay (alpha 0.4-0.7) the overlay's own gradient adds up over time while the moving background's averages out,
even where the background locally hides the overlay's edge on some frames. Gradients are taken of the high-passed
frame ``f - GaussianBlur(f, highpass_sigma)``: only fine structure counts, which must then stay put to sub-pixel
precision; large smooth structures under small motion (camera shake) would otherwise look persistent. A pixel is
*persistent* when
``persistence >= persistence_threshold`` and the mean gradient magnitude ``|mean_t g_t| >= min_gradient``.

Black bars are cut off first (``borders.clip_analysis_crop``, plus a 2 px margin), since a bar's edge is static too. For
each of the four corner regions of the content area (``corner_fraction`` of its width and height) the persistent pixels are closed into
blobs and the largest blob's persistent-pixel density (persistent pixels in the blob / corner area) is compared with
the persistent density of the rest of the frame (outside all four corners). A fully static scene is persistent
everywhere, so its corners are no denser than the rest and it is not flagged (a watermark over a static scene is
therefore not detectable by this backend). The score is

    score = clip((blob - rest) / ref_density, 0, 1) * clip((blob / rest - 1) / (ratio_ref - 1), 0, 1)

over the best corner. The scorer decides nothing: ``select`` flags a watermark when ``watermark_score >=
select.watermark_min_score`` and then crops the box out. The box is the best blob's bounding box (the blob may extend
past the corner region, within that corner's quadrant), grown by ``box_margin`` analysis pixels, in source pixels
(``x0, y0, x1, y1``, exclusive ends), or all ``-1`` when no corner holds a candidate (score 0).

Clips with fewer than ``min_frames`` sampled frames, and images (``N == 1``), cannot show persistence: they get
``watermark_score = 0.0`` and a box of ``-1``.

Backend ``"yolo"``: a detector checkpoint (``yolo_weights``) is run with ``ultralytics`` (imported lazily, only
for this backend) on the middle sampled frame; the top-confidence box whose class name is in ``yolo_classes`` (any
class when the list is empty) gives the score (its confidence; set ``select.watermark_min_score`` to the confidence that
counts, e.g. 0.25) and the box. A missing weights file raises
``FileNotFoundError`` naming the expected path.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames, spread_indices
from curation.scorers.borders import clip_analysis_crop

STAGE = "watermark"
VERSION = "2"  # 2: score and candidate box only (the decision moved to select)


class WatermarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["persistence", "yolo"] = "persistence"
    corner_fraction: float = Field(0.3, gt=0.05, le=0.45, description="corner region, fraction of width/height")
    persistence_threshold: float = Field(0.6, gt=0.0, le=1.0, description="min |mean g| / mean |g| of a pixel")
    highpass_sigma: float = Field(
        1.5, ge=0.0, le=20.0, description="gradients of fine structure only (f - blur(f)); 0 disables"
    )
    min_gradient: float = Field(3.0, ge=0.0, le=255.0, description="min |mean g| (gray levels per px)")
    ref_density: float = Field(0.01, gt=0.0, le=1.0, description="blob density excess that scores 1")
    ratio_ref: float = Field(4.0, gt=1.0, le=1000.0, description="blob/rest density ratio that scores 1")
    close_kernel: int = Field(5, ge=1, le=31, description="closing kernel (analysis px) merging glyph edges")
    box_margin: int = Field(2, ge=0, le=64, description="box growth in analysis px")
    min_frames: int = Field(4, ge=2, le=1000, description="fewer sampled frames: no detection")
    max_frames: int = Field(48, ge=2, le=10_000, description="frames sampled uniformly for the analysis")
    crop_borders: bool = Field(True, description="analyse inside the black-bar crop (borders.clip_analysis_crop)")
    yolo_weights: str | None = Field(None, description="detector checkpoint for backend 'yolo'")
    yolo_classes: list[str] = Field(default_factory=lambda: ["watermark", "logo", "text"])


def _none(score: float = 0.0) -> dict[str, object]:
    return {"watermark_score": float(score), "wm_x0": -1, "wm_y0": -1, "wm_x1": -1, "wm_y1": -1}


def _to_source(box: tuple[float, float, float, float], clip: ClipFrames) -> tuple[int, int, int, int]:
    h, w = clip.frames.shape[1:3]
    sx, sy = w / float(clip.source_width), h / float(clip.source_height)
    x0 = max(0, int(math.floor(box[0] / sx)))
    y0 = max(0, int(math.floor(box[1] / sy)))
    x1 = min(int(clip.source_width), int(math.ceil(box[2] / sx)))
    y1 = min(int(clip.source_height), int(math.ceil(box[3] / sy)))
    return x0, y0, x1, y1


def persistence_map(gray: np.ndarray, highpass_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(persistence, mean-gradient magnitude)`` maps of ``gray`` (N, H, W) frames.

    ``highpass_sigma > 0``: gradients of ``f - GaussianBlur(f, sigma)``, i.e. of fine structure only.
    """
    n, h, w = gray.shape
    sgx = np.zeros((h, w), np.float32)
    sgy = np.zeros((h, w), np.float32)
    smag = np.zeros((h, w), np.float32)
    for f in gray:
        if highpass_sigma > 0:
            f = f.astype(np.float32)
            f = f - cv2.GaussianBlur(f, (0, 0), highpass_sigma)
        gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        sgx += gx
        sgy += gy
        smag += cv2.magnitude(gx, gy)
    mean_mag = cv2.magnitude(sgx, sgy) / n
    persistence = mean_mag / (smag / n + 1e-3)
    return persistence, mean_mag


def _score_persistence(clip: ClipFrames, cfg: WatermarkConfig) -> dict[str, object]:
    if clip.num_frames < cfg.min_frames:
        return _none()
    gray = clip.gray()[spread_indices(clip.num_frames, cfg.max_frames)]
    n, h, w = gray.shape
    # Work inside the content area (black bars cut off, 2 px margin): a bar's edge is a static edge too.
    ox0, oy0, ox1, oy1 = clip_analysis_crop(clip) if cfg.crop_borders else (0, 0, w, h)
    if (ox0, oy0, ox1, oy1) != (0, 0, w, h):
        ox0, oy0, ox1, oy1 = ox0 + 2, oy0 + 2, ox1 - 2, oy1 - 2
    gray = np.ascontiguousarray(gray[:, oy0:oy1, ox0:ox1])
    n, h, w = gray.shape
    pers, mag = persistence_map(gray, cfg.highpass_sigma)
    mask = (pers >= cfg.persistence_threshold) & (mag >= cfg.min_gradient)

    cw = max(1, int(round(cfg.corner_fraction * w)))
    ch = max(1, int(round(cfg.corner_fraction * h)))
    rest = np.ones((h, w), bool)
    corners = []
    for ys in (slice(0, ch), slice(h - ch, h)):
        for xs in (slice(0, cw), slice(w - cw, w)):
            rest[ys, xs] = False
            corners.append((ys, xs))
    rest_density = float(mask[rest].mean()) if rest.any() else 0.0

    k = cfg.close_kernel
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    best_score, best = 0.0, None
    for ys, xs in corners:
        m = mask[ys, xs]
        if not m.any():
            continue
        closed = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, kernel) if k > 1 else m.astype(np.uint8)
        nlab, labels, _, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
        counts = np.bincount(labels[m], minlength=nlab)
        counts[0] = 0
        lab = int(np.argmax(counts))
        density = counts[lab] / float(m.size)
        excess = density - rest_density
        ratio = (density + 1e-6) / (rest_density + 1e-6)
        s = min(max(excess / cfg.ref_density, 0.0), 1.0) * min(max((ratio - 1.0) / (cfg.ratio_ref - 1.0), 0.0), 1.0)
        if s > best_score:
            best_score, best = s, (ys, xs, labels == lab)
    if best is None:
        return _none(best_score)
    # The overlay may straddle the corner region: grow the blob within the frame quadrant holding that corner.
    ys, xs, blob = best
    qy = slice(0, h // 2) if ys.start == 0 else slice(h // 2, h)
    qx = slice(0, w // 2) if xs.start == 0 else slice(w // 2, w)
    quad = np.zeros((h, w), np.uint8)
    quad[qy, qx] = mask[qy, qx]
    if k > 1:
        quad = cv2.morphologyEx(quad, cv2.MORPH_CLOSE, kernel)
    quad[ys, xs] |= blob.astype(np.uint8)
    _, labels, _, _ = cv2.connectedComponentsWithStats(quad, connectivity=8)
    keep = np.isin(labels, np.unique(labels[ys, xs][blob]))
    yy, xx = np.nonzero(keep)
    mg = cfg.box_margin
    best_box = (
        max(int(xx.min()) - mg, 0),
        max(int(yy.min()) - mg, 0),
        min(int(xx.max()) + 1 + mg, w),
        min(int(yy.max()) + 1 + mg, h),
    )
    best_box = (best_box[0] + ox0, best_box[1] + oy0, best_box[2] + ox0, best_box[3] + oy0)
    x0, y0, x1, y1 = _to_source(best_box, clip)
    return {"watermark_score": float(best_score), "wm_x0": x0, "wm_y0": y0, "wm_x1": x1, "wm_y1": y1}


@functools.lru_cache(maxsize=2)
def _yolo_model(path: str):  # pragma: no cover - needs ultralytics and a checkpoint
    # lazy: ultralytics is an optional dependency
    from curation.models import yolo_class

    return yolo_class("the watermark stage's yolo backend")(path)


def _score_yolo(clip: ClipFrames, cfg: WatermarkConfig) -> dict[str, object]:
    if not cfg.yolo_weights:
        raise FileNotFoundError("watermark backend 'yolo' needs yolo_weights (path to a detector checkpoint)")
    path = Path(cfg.yolo_weights)
    if not path.is_file():
        raise FileNotFoundError(f"watermark YOLO weights not found at expected path: {path}")
    model = _yolo_model(str(path))  # pragma: no cover - below needs ultralytics
    frame = clip.frames[clip.num_frames // 2]
    result = model.predict(frame, verbose=False, conf=0.0)[0]
    names = result.names
    boxes = result.boxes
    best = None
    for xyxy, conf, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
        if cfg.yolo_classes and names[int(cls)] not in cfg.yolo_classes:
            continue
        if best is None or conf > best[0]:
            best = (float(conf), xyxy)
    if best is None:
        return _none()
    x0, y0, x1, y1 = _to_source(tuple(best[1]), clip)
    return {"watermark_score": best[0], "wm_x0": x0, "wm_y0": y0, "wm_x1": x1, "wm_y1": y1}


def score(clip: ClipFrames, cfg: WatermarkConfig) -> dict[str, object]:
    """Watermark score in [0, 1] and the candidate box in source pixels (-1 when none); no decision (select)."""
    if cfg.backend == "yolo":
        return _score_yolo(clip, cfg)
    return _score_persistence(clip, cfg)
