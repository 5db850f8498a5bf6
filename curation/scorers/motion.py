"""Motion statistics of one clip (Wan 2.1 report, section 3.1 "Motion quality").

Pipeline, on the clip's sampled frames (``ClipFrames``, ~8 fps, long side <= 384):

1. Luma (for overexposed clips the per-pixel min of B, G, R, which keeps pastel detail), static black borders
   (letterbox / pillarbox) cropped, downscaled to ``flow_width`` for the flow and to ``diff_width`` for change
   detection (INTER_AREA; never upscaled).
2. Dense optical flow between consecutive sampled frames (at most ``max_pairs``): OpenCV DIS (default, preset
   ``dis_preset`` computed down to ``dis_finest_scale``), Farneback, or torchvision's RAFT-small (weights from a
   local file, ``raft_weights``).
3. Camera motion per pair: a similarity transform (rotation, uniform scale, translation; coordinates centred on
   the frame so a zoom has no translation) fitted with RANSAC (``cv2.estimateAffinePartial2D``) to the flow
   vectors on a ``grid_step`` grid, textured grid points only (flat areas such as blown-out sky carry no
   reliable flow). When more than ``refit_min_change`` of the frame still changes after compensation, the
   neighbouring pairs' fits and the clip's median fit are tried and the one that leaves the least change wins
   (flow on blurred, low-texture pictures can be off).
4. Moving mask. Residual (subject) flow = flow - camera flow. Change detection: frame b warped by the camera onto
   frame a, and a pixel "changed" where either frame lies more than ``diff_min`` gray levels outside the 3x3
   value range of the other (tolerant to 1 px misregistration; flat areas never change). Regions whose residual
   flow is faster than ``moving_speed`` (widths per second, at least ``moving_min_px``) join the mask when they
   touch changed pixels and their flow explains the next frame clearly better than the camera does
   (``grow_min_gain``, ``grow_min_error``): this fills object interiors. Static overlays (logos, captions: pixels
   that changed only relative to the camera, in at least half the pairs where the camera moved them by
   ``overlay_min_px``) are removed. 3x3 opening, 5x5 closing; connected components smaller than
   ``min_component_fraction`` of the frame are specks and dropped.
5. Scores (speeds in frame widths per second, so they do not depend on resolution or sampling rate):

   - ``camera_motion``: mean magnitude of the camera flow field over the frame, per second.
   - ``subject_motion``: mean residual-flow speed over moving pixels (0 when nothing moves).
   - ``moving_fraction``: mean over pairs of the fraction of (valid) pixels that move.
   - ``num_movers``: mean over pairs of the number of moving connected components (specks dropped). The mean,
     not the median: a mover that spends part of the clip behind an occluder still counts.
   - ``shakiness``: per-frame positional jitter of the camera, in frame widths: the RMS of the second
     difference of the cumulative camera translation (for uneven frame spacing: the change of velocity times
     the mean interval), divided by sqrt(12) so that i.i.d. per-frame jitter of standard deviation ``s`` (per
     axis) reads ``s``. A smooth pan or zoom has (almost) no second difference; at the sampling rate the scorer
     runs at (~8 fps), smooth accelerations contribute ``a * dt**2``, negligible against real shake.

   - ``smooth_step``: the mean camera translation between two sampled frames, in frame widths.
   - ``num_pairs``: frame pairs analysed (0 for images and one-frame clips, which get zeros).

6. No decision here: ``select`` turns these statistics into the motion tier with the thresholds of
   ``select.motion_tiers`` (``curation.scorers.motion_rules``), so changing a threshold never recomputes flow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames
from curation.scorers.motion_flow import pair_flows
from curation.scorers.motion_rules import TIERS

STAGE = "motion"
VERSION = "2"  # 2: statistics only (the tier moved to select), smooth_step and num_pairs stored

__all__ = ["STAGE", "VERSION", "TIERS", "MotionConfig", "analyse", "score", "pair_flows"]

_STATS = ("camera_motion", "subject_motion", "moving_fraction", "num_movers", "shakiness", "smooth_step")


class MotionConfig(BaseModel):
    """Settings of the motion stage. Speeds are in frame widths per second; jitter in frame widths."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- flow ---
    flow_backend: Literal["dis", "farneback", "raft"] = "dis"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "fast"
    dis_finest_scale: int = Field(default=0, ge=0, le=4)  # 0: flow at full flow_width, 1: half, ...
    flow_width: int = Field(default=160, ge=32, le=1024)  # flow is computed at this width (never upscaled)
    raft_weights: str | None = None  # local path of torchvision raft_small state dict (backend "raft")
    raft_iters: int = Field(default=12, ge=1, le=32)
    max_pairs: int = Field(default=24, ge=1, le=10_000)  # longer clips: evenly spaced frame pairs

    # --- camera fit ---
    grid_step: int = Field(default=4, ge=1, le=32)  # flow vectors for the camera fit, every `grid_step` px
    refit_min_change: float = Field(default=0.02, ge=0, le=1)  # try other fits when more of the frame changed
    ransac_px: float = Field(default=1.0, gt=0, le=20)  # RANSAC inlier threshold, px at flow width
    texture_min: float = Field(default=6.0, ge=0, le=255)  # mean |gradient| (gray levels / px) for fit points
    border_luma_max: float = Field(default=24.0, ge=0, le=255)  # static dark rows/cols at the edges: border

    # --- moving mask ---
    moving_speed: float = Field(default=0.03, gt=0, le=10)  # residual speed of a moving pixel, widths/s
    moving_min_px: float = Field(default=0.5, ge=0, le=20)  # ... but never below this (flow noise), px/pair
    diff_min: float = Field(default=12.0, ge=1, le=255)  # camera-compensated change, gray levels
    diff_width: int = Field(default=320, ge=32, le=2048)  # change detection width (>= flow width)
    grow_min_gain: float = Field(default=1.5, ge=1, le=100)  # camera vs flow warp error of a joining region
    grow_min_error: float = Field(default=5.0, ge=0, le=255)  # ... and its camera warp error, gray levels
    overexposed_fraction: float = Field(default=0.3, ge=0, le=1)  # luma >= 250: use min(B, G, R) instead
    min_component_fraction: float = Field(default=0.001, ge=0, le=0.5)  # smaller components are specks
    overlay_min_px: float = Field(default=0.5, ge=0, le=50)  # camera displacement that exposes static overlays


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _border_crop(gray: np.ndarray, luma_max: float) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` without static dark borders: edge rows/cols whose luma stays dark and flat."""
    n, h, w = gray.shape
    g = gray[:: max(1, n // 8)].astype(np.float32)

    def run(profile_mean: np.ndarray, profile_std: np.ndarray, limit: int) -> int:
        k = 0
        while k < limit and profile_mean[k] <= luma_max and profile_std[k] <= 6.0:
            k += 1
        return k

    rm, rs = g.mean(axis=(0, 2)), g.std(axis=(0, 2))
    cm, cs = g.mean(axis=(0, 1)), g.std(axis=(0, 1))
    y0 = run(rm, rs, int(0.4 * h))
    y1 = h - run(rm[::-1], rs[::-1], int(0.4 * h))
    x0 = run(cm, cs, int(0.4 * w))
    x1 = w - run(cm[::-1], cs[::-1], int(0.4 * w))
    if y1 - y0 < 16 or x1 - x0 < 16:
        return 0, h, 0, w
    # One extra pixel: the edge between border and picture is often soft (scaling, compression).
    y0, x0 = y0 + (y0 > 0), x0 + (x0 > 0)
    y1, x1 = y1 - (y1 < h), x1 - (x1 < w)
    return y0, y1, x0, x1


def _texture(g: np.ndarray) -> np.ndarray:
    """Local mean absolute gradient (gray levels per px), 5x5 window."""
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.blur(np.abs(gx) + np.abs(gy), (5, 5)) * 0.125


def _pair_intervals(clip: ClipFrames) -> np.ndarray:
    """Seconds between consecutive sampled frames."""
    idx = np.asarray(clip.frame_indices, dtype=np.float64)
    d = np.diff(idx)
    if clip.source_fps > 0 and np.all(d > 0):
        return d / clip.source_fps
    if clip.sample_fps > 0:
        return np.full(len(d), 1.0 / clip.sample_fps)
    return np.full(len(d), 1.0 / 8.0)


def _empty(backend: str) -> dict[str, Any]:
    return {**{k: 0.0 for k in _STATS}, "num_pairs": 0, "flow_backend": backend}


_K3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_K3R = np.ones((3, 3), np.uint8)
_K5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


# ----------------------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------------------


def _luma(clip: ClipFrames, overexposed_fraction: float) -> np.ndarray:
    """Luma ``(N, H, W)``; for overexposed clips the per-pixel minimum over B, G, R (keeps pastel detail)."""
    g = clip.gray()
    if (g[:: max(1, len(g) // 4)] >= 250).mean() > overexposed_fraction:
        return np.ascontiguousarray(clip.frames.min(axis=3))
    return g


def _resize_stack(frames: np.ndarray, w: int, h: int) -> np.ndarray:
    if frames.shape[1:] == (h, w):
        return np.ascontiguousarray(frames)
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def _to_flow_res(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    """A 0/1 uint8 mask at another resolution: set where at least a quarter of the covered area is set."""
    if mask.shape == (h, w):
        return mask
    return (cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.25).astype(np.uint8)


def _tolerant_diff(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
    """How far each pixel of one image lies outside the 3x3 value range of the other (both ways), uint8.

    Zero for a misregistration of up to one pixel, large where content appeared or disappeared.
    """
    d0 = cv2.max(cv2.subtract(g0, cv2.dilate(g1, _K3R)), cv2.subtract(cv2.erode(g1, _K3R), g0))
    d1 = cv2.max(cv2.subtract(g1, cv2.dilate(g0, _K3R)), cv2.subtract(cv2.erode(g0, _K3R), g1))
    return cv2.max(d0, d1)


def _fit_camera(
    flow: np.ndarray, tex: np.ndarray, gy: np.ndarray, gx: np.ndarray, gpts: np.ndarray, cfg: MotionConfig
) -> np.ndarray:
    """2x3 similarity (centred coordinates) mapping frame a to frame b, fitted to textured grid flow vectors."""
    t = tex[gy, gx].ravel()
    fv = flow[gy, gx].reshape(-1, 2)
    use = t >= cfg.texture_min
    if use.sum() < max(12, 0.05 * len(t)):  # low-texture frame (blur, overexposure): the most textured third
        use = t >= max(np.quantile(t, 2 / 3), 1e-3)
    if use.sum() < 12:
        use = np.ones_like(use)
    src, dst = gpts[use], gpts[use] + fv[use]
    m = None
    if len(src) >= 3:
        m, _ = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac_px, maxIters=500, confidence=0.99,
            refineIters=10,
        )
    if m is None or not np.all(np.isfinite(m)):
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return m


# ----------------------------------------------------------------------------------------------------------------
# Steps of ``analyse``
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Views:
    """Step 1: the clip's luma, borders cropped, at flow resolution and at change-detection resolution."""

    gray: np.ndarray  # (N, fh, fw) uint8
    dgray: np.ndarray  # (N, dh, dw) uint8 (``gray`` itself when dw == fw)
    crop: tuple[int, int, int, int]  # y0, y1, x0, x1 in analysis pixels

    @property
    def fh(self) -> int:
        return int(self.gray.shape[1])

    @property
    def fw(self) -> int:
        return int(self.gray.shape[2])

    @property
    def ratio(self) -> float:
        return self.dgray.shape[2] / self.fw


def _views(clip: ClipFrames, cfg: MotionConfig) -> _Views:
    full = _luma(clip, cfg.overexposed_fraction)
    y0, y1, x0, x1 = _border_crop(full, cfg.border_luma_max)
    full = full[:, y0:y1, x0:x1]
    h0, w0 = full.shape[1:]
    fw = min(cfg.flow_width, w0)
    fh = max(8, int(round(h0 * fw / w0)))
    gray = _resize_stack(full, fw, fh)
    # change detection runs at up to `diff_width` (finer than the flow, so that slow movers still register)
    dw = max(fw, min(cfg.diff_width, w0))
    dh = fh if dw == fw else max(8, int(round(h0 * dw / w0)))
    dgray = gray if dw == fw else _resize_stack(full, dw, dh)
    return _Views(gray, dgray, (y0, y1, x0, x1))


def _frame_pairs(clip: ClipFrames, max_pairs: int) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """``(selected pair indices, (a, b) pairs, seconds between a and b)``: at most ``max_pairs``, evenly spread."""
    dts_all = _pair_intervals(clip)
    n_pairs = clip.num_frames - 1
    if n_pairs > max_pairs:
        sel = np.unique(np.linspace(0, n_pairs - 1, max_pairs).round().astype(int))
    else:
        sel = np.arange(n_pairs)
    return sel, [(int(i), int(i) + 1) for i in sel], dts_all[sel]


@dataclass
class _Grid:
    """Pixel and fit-grid coordinates, centred on the frame centre (so a zoom has no translation)."""

    xx: np.ndarray
    yy: np.ndarray
    xc: np.ndarray
    yc: np.ndarray
    gy: np.ndarray
    gx: np.ndarray
    gpts: np.ndarray
    dxx: np.ndarray
    dyy: np.ndarray
    dxc: np.ndarray
    dyc: np.ndarray
    corners: np.ndarray


def _grid(v: _Views, step: int) -> _Grid:
    fh, fw = v.fh, v.fw
    dh, dw = v.dgray.shape[1:]
    cx, cy = (fw - 1) / 2.0, (fh - 1) / 2.0
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    gy, gx = np.mgrid[step // 2 : fh : step, step // 2 : fw : step]
    gpts = np.stack([gx.ravel() - cx, gy.ravel() - cy], axis=1).astype(np.float32)
    dyy, dxx = np.mgrid[0:dh, 0:dw].astype(np.float32)
    corners = np.array([[-cx, cx, -cx, cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]])
    return _Grid(xx, yy, xx - cx, yy - cy, gy, gx, gpts, dxx, dyy, dxx - (dw - 1) / 2.0, dyy - (dh - 1) / 2.0,
                 corners)


def _warp_change(v: _Views, g: _Grid, m: np.ndarray, a: int, b: int, diff_min: float) -> np.ndarray:
    """Pixels (change-detection resolution) that changed beyond ``diff_min`` after frame b is warped by ``m``."""
    r = v.ratio
    dcx = ((m[0, 0] - 1.0) * g.dxc + m[0, 1] * g.dyc + m[0, 2] * r).astype(np.float32)
    dcy = (m[1, 0] * g.dxc + (m[1, 1] - 1.0) * g.dyc + m[1, 2] * r).astype(np.float32)
    warped = cv2.remap(v.dgray[b], g.dxx + dcx, g.dyy + dcy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (_tolerant_diff(v.dgray[a], warped) >= diff_min).astype(np.uint8)


def _best_fit(v: _Views, g: _Grid, fits: list[np.ndarray], median_fit: np.ndarray, k: int, pair: tuple[int, int],
              cfg: MotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Step 3b: a pair's camera fit and its change mask; a neighbour's fit or the clip's median fit replaces the
    pair's own when it explains the frame difference clearly better (flow on blurred or flat pictures can be off)."""
    a, b = pair
    m = fits[k]
    dchanged = _warp_change(v, g, m, a, b, cfg.diff_min)
    bad = float(dchanged.mean())
    if bad <= cfg.refit_min_change:
        return m, dchanged
    for alt in (fits[k - 1] if k > 0 else None, fits[k + 1] if k + 1 < len(fits) else None, median_fit):
        if alt is None or np.abs((alt - m) @ g.corners).max() < 0.25:  # same warp within 1/4 px
            continue
        alt_changed = _warp_change(v, g, alt, a, b, cfg.diff_min)
        alt_bad = float(alt_changed.mean())
        if alt_bad < 0.5 * bad:
            m, dchanged, bad = alt, alt_changed, alt_bad
    return m, dchanged


@dataclass
class _Evidence:
    """Step 4 per pair: camera translation and speed, masks and warp errors; overlay counters over the clip."""

    trans: np.ndarray
    cam_speed: np.ndarray
    pinned: np.ndarray  # pairs in which a pixel changed, but only relative to the camera
    n_eligible: np.ndarray  # pairs in which the camera moved that pixel noticeably
    changed: list[np.ndarray] = field(default_factory=list)
    err_cam: list[np.ndarray] = field(default_factory=list)  # |frame a - frame b warped by the camera|
    err_flow: list[np.ndarray] = field(default_factory=list)  # |frame a - frame b warped by the flow|
    speed: list[np.ndarray] = field(default_factory=list)  # residual flow speed, px/s at flow width
    valid: list[np.ndarray] = field(default_factory=list)


def _valid_area(camx: np.ndarray, camy: np.ndarray, fw: int, fh: int) -> tuple[np.ndarray, int, int]:
    """Pixels whose camera-warped position stays inside the frame (plus 1 px), and the margins ``mx, my``."""
    mx = min(int(math.ceil(max(abs(camx[:, 0]).max(), abs(camx[:, -1]).max()))) + 1, fw // 3)
    my = min(int(math.ceil(max(abs(camy[0]).max(), abs(camy[-1]).max()))) + 1, fh // 3)
    valid = np.zeros((fh, fw), np.uint8)
    valid[my : fh - my, mx : fw - mx] = 1
    return valid, mx, my


def _remap_error(ga: np.ndarray, gb: np.ndarray, g: _Grid, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    warped = cv2.remap(gb, g.xx + fx, g.yy + fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.absdiff(ga, warped.astype(np.float32))


def _add_pair(ev: _Evidence, k: int, v: _Views, g: _Grid, pair: tuple[int, int], flow: np.ndarray, dt: float,
              m: np.ndarray, dchanged: np.ndarray, cfg: MotionConfig) -> None:
    a, b = pair
    fw, fh = v.fw, v.fh
    camx = ((m[0, 0] - 1.0) * g.xc + m[0, 1] * g.yc + m[0, 2]).astype(np.float32)
    camy = (m[1, 0] * g.xc + (m[1, 1] - 1.0) * g.yc + m[1, 2]).astype(np.float32)
    ev.trans[k] = m[0, 2], m[1, 2]
    valid, mx, my = _valid_area(camx, camy, fw, fh)
    cam_mag = np.sqrt(camx * camx + camy * camy)
    ev.cam_speed[k] = float(cam_mag[my : fh - my, mx : fw - mx].mean()) / fw / dt
    rx, ry = flow[..., 0] - camx, flow[..., 1] - camy
    # static overlays (logos, captions) stay put in the image where the camera moves the scene
    eligible = (cam_mag >= cfg.overlay_min_px) & (valid > 0)
    if eligible.any():
        still = (_tolerant_diff(v.dgray[a], v.dgray[b]) < cfg.diff_min).astype(np.uint8)
        ev.pinned += (_to_flow_res(dchanged & still, fw, fh) > 0) & eligible
        ev.n_eligible += eligible
    ev.changed.append(_to_flow_res(dchanged, fw, fh) & valid)
    ga = v.gray[a].astype(np.float32)
    ev.err_cam.append(_remap_error(ga, v.gray[b], g, camx, camy))
    ev.err_flow.append(_remap_error(ga, v.gray[b], g, flow[..., 0], flow[..., 1]))
    ev.speed.append(np.sqrt(rx * rx + ry * ry) / dt)
    ev.valid.append(valid)


def _evidence(v: _Views, g: _Grid, pairs: list[tuple[int, int]], flows: list[np.ndarray], dts: np.ndarray,
              cfg: MotionConfig) -> _Evidence:
    """Steps 3 and 4: camera fit per pair (with the photometric re-fit), residual flow and change masks."""
    fits = [_fit_camera(flow, _texture(v.gray[a]), g.gy, g.gx, g.gpts, cfg) for (a, _), flow in zip(pairs, flows)]
    median_fit = np.median(np.stack(fits), axis=0)
    P = len(pairs)
    ev = _Evidence(np.zeros((P, 2)), np.zeros(P), np.zeros((v.fh, v.fw), np.int32), np.zeros((v.fh, v.fw), np.int32))
    for k, (pair, flow, dt) in enumerate(zip(pairs, flows, dts)):
        m, dchanged = _best_fit(v, g, fits, median_fit, k, pair, cfg)
        _add_pair(ev, k, v, g, pair, flow, dt, m, dchanged, cfg)  # np.float64: speeds in float64
    return ev


def _overlay(ev: _Evidence) -> np.ndarray | None:
    """Static overlays: pixels that changed only relative to the camera in at least half the eligible pairs."""
    ov = ((ev.n_eligible >= 2) & (ev.pinned >= 0.5 * ev.n_eligible)).astype(np.uint8)
    return cv2.dilate(ov, _K3R, iterations=2) if ov.any() else None


def _moving_mask(ev: _Evidence, k: int, thr: float, overlay: np.ndarray | None, cfg: MotionConfig) -> np.ndarray:
    """Step 4b: change the camera does not explain, grown by fast residual-flow regions (fills object interiors).

    A fast region joins when it touches detected change and its flow explains the next frame clearly better than
    the camera does there."""
    changed = cv2.morphologyEx(ev.changed[k], cv2.MORPH_OPEN, _K3)
    fast = (ev.speed[k] >= thr).astype(np.uint8) & ev.valid[k]
    nf, flab = cv2.connectedComponents(fast, connectivity=8)
    moving = changed
    if nf > 1:
        lab = flab.ravel()
        n_px = np.maximum(np.bincount(lab, minlength=nf), 1)
        touch = np.bincount(lab, weights=changed.ravel(), minlength=nf) > 0
        e_cam = np.bincount(lab, weights=ev.err_cam[k].ravel(), minlength=nf) / n_px
        e_flow = np.bincount(lab, weights=ev.err_flow[k].ravel(), minlength=nf) / n_px
        hit = touch & (e_cam >= cfg.grow_min_gain * e_flow + 1.0) & (e_cam >= cfg.grow_min_error)
        hit[0] = False
        moving = changed | hit[flab].astype(np.uint8)
    if overlay is not None:
        moving = moving & (1 - overlay)
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, _K3)
    return cv2.morphologyEx(moving, cv2.MORPH_CLOSE, _K5)


def _movers(v: _Views, ev: _Evidence, dts: np.ndarray, cfg: MotionConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Per pair: moving fraction of the valid area and number of movers; the mean residual speed over moving
    pixels (px/s at flow width, 0 when nothing moves). Components below ``min_component_fraction`` are specks."""
    fw, fh = v.fw, v.fh
    min_area = max(1.0, cfg.min_component_fraction * fw * fh)
    overlay = _overlay(ev)
    fracs, counts = np.zeros(len(dts)), np.zeros(len(dts))
    res_sum, res_n = 0.0, 0
    for k, dt in enumerate(dts):
        thr = max(cfg.moving_min_px, cfg.moving_speed * fw * dt) / dt
        moving = _moving_mask(ev, k, thr, overlay, cfg)
        _, lab, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        keep = np.nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area)[0] + 1
        counts[k] = len(keep)
        if len(keep):
            mask = np.isin(lab, keep)
            npx = int(mask.sum())
            fracs[k] = npx / float(max(1, ev.valid[k].sum()))
            res_sum += float(ev.speed[k][mask].sum())
            res_n += npx
    return fracs, counts, res_sum / res_n if res_n else 0.0


def _shakiness(trans: np.ndarray, dts: np.ndarray, sel: np.ndarray, w: float) -> float:
    """RMS second difference of the camera position / sqrt(12), in widths (see the module docstring)."""
    if len(trans) < 2:
        return 0.0
    vel = trans / dts[:, None]  # px per second at flow width
    contiguous = np.diff(sel) == 1
    d2 = (vel[1:] - vel[:-1]) * ((dts[1:] + dts[:-1]) / 2.0)[:, None]
    d2 = d2[contiguous] if contiguous.any() else d2
    return float(np.sqrt(np.mean(np.sum(d2 * d2, axis=1)) / 12.0)) / w


def analyse(clip: ClipFrames, cfg: MotionConfig) -> dict[str, Any]:
    """Statistics plus diagnostics (``per_pair`` arrays, ``crop``); ``score`` keeps the stage columns."""
    if clip.media_type == "image" or clip.num_frames < 2:
        return _empty(cfg.flow_backend)
    v = _views(clip, cfg)
    sel, pairs, dts = _frame_pairs(clip, cfg.max_pairs)
    flows = pair_flows(v.gray, pairs, cfg)
    ev = _evidence(v, _grid(v, cfg.grid_step), pairs, flows, dts, cfg)
    fracs, counts, residual_speed = _movers(v, ev, dts, cfg)
    w = float(v.fw)
    return {
        "camera_motion": float(ev.cam_speed.mean()),
        "subject_motion": residual_speed / w,
        "moving_fraction": float(fracs.mean()),
        "num_movers": float(np.mean(counts)),
        "shakiness": _shakiness(ev.trans, dts, sel, w),
        "smooth_step": float(np.linalg.norm(ev.trans.mean(axis=0))) / w,
        "num_pairs": len(pairs),
        "flow_backend": cfg.flow_backend,
        "per_pair": {"counts": counts, "fracs": fracs, "cam_speed": ev.cam_speed, "trans": ev.trans},
        "crop": v.crop,
    }


def score(clip: ClipFrames, cfg: MotionConfig) -> dict[str, Any]:
    """Motion statistics of one clip: exactly the columns of ``STAGE_FIELDS["motion"]`` (no tier: see select).

    ``camera_motion``, ``subject_motion`` (widths/s), ``moving_fraction`` (0..1), ``num_movers``, ``shakiness``
    and ``smooth_step`` (widths), ``num_pairs`` (0: an image or a one-frame clip, all zeros) and ``flow_backend``.
    """
    r = analyse(clip, cfg)
    out: dict[str, Any] = {k: float(np.float32(r[k])) for k in _STATS}
    out["num_pairs"] = int(r["num_pairs"])
    out["flow_backend"] = r["flow_backend"]
    return out
