"""Black-border (letterbox / pillarbox / windowbox) detection.

A row (column) is *border* when, on every sampled frame, it is dark and near-uniform:

* at most ``1 - dark_quantile`` of its pixels are brighter than ``dark_threshold`` (i.e. the row's
  ``dark_quantile`` percentile is ``<= dark_threshold``; robust to H.264 noise and a few stray pixels), and
* its standard deviation along the row is ``<= max_std`` (a dark but textured scene edge is not a border).

Border runs are grown from each edge inward. The boundary between the last border row and the first content row
is refined to sub-pixel precision from the mean brightness of the mixed row (a downscaled frame blends the bar and
the content in the row that straddles the true edge), mapped to source pixels, and rounded *inward* (``ceil`` for
top/left, ``floor`` for bottom/right) so that no black source row remains inside the crop box.

Statistics only, except ``has_border`` (a side wider than ``min_border_fraction`` of its dimension), which is the
flag the schema asks for. A frame that is dark everywhere is reported as *no border* with the full-frame crop box
(exposure scoring is what rejects black clips).
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames, spread_indices

STAGE = "borders"
VERSION = "1"


class BordersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dark_threshold: int = Field(24, ge=0, le=255, description="luma at or below which a pixel is dark")
    dark_quantile: float = Field(0.95, ge=0.5, le=1.0, description="this quantile of a row must be dark")
    max_std: float = Field(6.0, ge=0.0, le=128.0, description="max luma std along a border row/column")
    min_border_fraction: float = Field(
        0.02, ge=0.0, le=0.5, description="has_border when a side is wider than this fraction of its dimension"
    )
    max_side_fraction: float = Field(
        0.45, gt=0.0, le=0.5, description="a side's border never extends past this fraction of the dimension"
    )
    max_frames: int = Field(48, ge=1, le=10_000, description="frames sampled uniformly for the analysis")
    subpixel: bool = Field(True, description="refine each edge from the brightness of the straddling row")


def _dark_lines(g: np.ndarray, axis: int, cfg: BordersConfig) -> tuple[np.ndarray, np.ndarray]:
    """For lines along ``axis`` (2: rows, 1: columns) of ``g`` (n, h, w) uint8: dark mask and mean brightness."""
    length = g.shape[axis]
    bright = (g > cfg.dark_threshold).sum(axis=axis, dtype=np.int32)  # (n, lines)
    gf = g.astype(np.float32)
    s1 = gf.sum(axis=axis)
    s2 = np.square(gf).sum(axis=axis)
    mean = s1 / length
    std = np.sqrt(np.maximum(s2 / length - mean * mean, 0.0))
    allowed = (1.0 - cfg.dark_quantile) * length
    dark = np.all((bright <= allowed) & (std <= cfg.max_std), axis=0)
    return dark, mean.mean(axis=0)


def _edge(dark: np.ndarray, mean: np.ndarray, cfg: BordersConfig) -> tuple[float, float]:
    """Sub-pixel border widths (analysis px) at the start and at the end of the line profile."""
    n = len(dark)
    limit = max(int(math.floor(cfg.max_side_fraction * n)), 0)

    def run(d: np.ndarray) -> int:
        k = int(np.argmin(d)) if not d.all() else len(d)
        return min(k, limit)

    def refine(k: int, m: np.ndarray, d: np.ndarray) -> float:
        # k = number of border lines; m = means from this edge inward.
        if k == 0 or not cfg.subpixel or k >= len(m) - 2:
            return float(k)
        black = float(np.median(m[:k])) if k > 0 else 0.0
        content = float(np.mean(m[k + 1 : k + 3]))
        span = content - black
        if span < 8.0:  # dark content: the mixed line cannot be measured, stay at the line boundary
            return float(k)
        alpha = float(np.clip((m[k] - black) / span, 0.0, 1.0))  # content coverage of the first content line
        width = k + (1.0 - alpha)
        if k > 0:  # the last border line may still hold a little content
            width -= float(np.clip((m[k - 1] - black) / span, 0.0, 1.0))
        return max(width, 0.0)

    k0 = run(dark)
    k1 = run(dark[::-1])
    if k0 == 0 and k1 == 0:
        return 0.0, 0.0
    return refine(k0, mean, dark), refine(k1, mean[::-1], dark[::-1])


def _detect(g: np.ndarray, cfg: BordersConfig) -> tuple[float, float, float, float] | None:
    """Sub-pixel border widths ``(left, top, right, bottom)`` in analysis px of gray frames, None when all dark."""
    _, h, w = g.shape
    dark_r, _ = _dark_lines(g, 2, cfg)
    if dark_r.all():
        return None
    # Pass 1 rows on the full width, then columns inside those rows, then rows again inside those columns.
    top0 = min(int(np.argmin(dark_r)), h)
    bot0 = h - min(int(np.argmin(dark_r[::-1])), h)
    dark_c, mean_c = _dark_lines(g[:, top0:bot0, :], 1, cfg)
    left, right = _edge(dark_c, mean_c, cfg)
    c0 = int(math.floor(left))
    c1 = w - int(math.floor(right))
    dark_r, mean_r = _dark_lines(g[:, :, c0:c1], 2, cfg)
    top, bottom = _edge(dark_r, mean_r, cfg)
    return left, top, right, bottom


def _clip_detect(clip: ClipFrames, cfg: BordersConfig) -> tuple[float, float, float, float] | None:
    """``_detect`` on a clip's frames, computed once per clip and config (borders, blur and watermark all need it)."""
    key = "borders.detect:" + cfg.model_dump_json()
    return clip.derived(key, lambda: _detect(clip.gray()[spread_indices(clip.num_frames, cfg.max_frames)], cfg))


def clip_analysis_crop(clip: ClipFrames) -> tuple[int, int, int, int]:
    """Content box ``(x0, y0, x1, y1)`` in analysis pixels (black bars cut off, rounded inward) of a clip's frames,
    with the default config; shared by the scorers that keep bars out of their statistics (blur, watermark)."""
    _, h, w = clip.gray().shape
    return _crop_from(_clip_detect(clip, BordersConfig()), w, h)


def _crop_from(det: tuple[float, float, float, float] | None, w: int, h: int) -> tuple[int, int, int, int]:
    if det is None:
        return 0, 0, w, h
    left, top, right, bottom = det
    x0, y0 = int(math.ceil(left - 1e-3)), int(math.ceil(top - 1e-3))
    x1, y1 = w - int(math.ceil(right - 1e-3)), h - int(math.ceil(bottom - 1e-3))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0, 0, w, h
    return x0, y0, x1, y1


def score(clip: ClipFrames, cfg: BordersConfig) -> dict[str, object]:
    """Detect black bars; return the crop box in source pixels (``x0, y0, x1, y1``, exclusive ends)."""
    sw, sh = int(clip.source_width), int(clip.source_height)
    full = {
        "has_border": False,
        "crop_x0": 0,
        "crop_y0": 0,
        "crop_x1": sw,
        "crop_y1": sh,
        "border_fraction": 0.0,
    }
    _, h, w = clip.gray().shape
    sx = w / float(sw)
    sy = h / float(sh)

    det = _clip_detect(clip, cfg)
    if det is None:
        return full
    left, top, right, bottom = det

    eps = 1e-3
    x0 = int(math.ceil(left / sx - eps)) if left > 0 else 0
    x1 = sw - (int(math.ceil(right / sx - eps)) if right > 0 else 0)
    y0 = int(math.ceil(top / sy - eps)) if top > 0 else 0
    y1 = sh - (int(math.ceil(bottom / sy - eps)) if bottom > 0 else 0)
    if x1 <= x0 or y1 <= y0:
        return full
    min_x = cfg.min_border_fraction * sw
    min_y = cfg.min_border_fraction * sh
    has = bool(x0 > min_x or (sw - x1) > min_x or y0 > min_y or (sh - y1) > min_y)
    frac = 1.0 - ((x1 - x0) * (y1 - y0)) / float(sw * sh)
    return {
        "has_border": has,
        "crop_x0": x0,
        "crop_y0": y0,
        "crop_x1": x1,
        "crop_y1": y1,
        "border_fraction": float(frac),
    }
