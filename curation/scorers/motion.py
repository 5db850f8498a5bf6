"""Motion scores and the motion tier of one clip (Wan 2.1 report, section 3.1 "Motion quality").

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

6. The tier: ``curation.scorers.motion_rules.classify`` (rules documented there).

Images (and clips with fewer than two sampled frames) get zeros and ``motion_tier`` None.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames
from curation.scorers.motion_rules import TIERS, classify

STAGE = "motion"
VERSION = "1"

__all__ = ["STAGE", "VERSION", "TIERS", "MotionConfig", "score", "pair_flows"]


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

    # --- tier thresholds (see motion_rules) ---
    shaky_min_jitter: float = Field(default=0.004, ge=0, le=1)
    shaky_min_ratio: float = Field(default=0.25, ge=0, le=100)
    camera_min_speed: float = Field(default=0.02, ge=0, le=10)
    camera_max_moving_fraction: float = Field(default=0.02, ge=0, le=1)
    static_max_moving_fraction: float = Field(default=0.01, ge=0, le=1)
    static_max_activity: float = Field(default=0.0015, ge=0, le=10)  # moving_fraction * subject_motion
    low_quality_min_movers: float = Field(default=4.0, ge=1, le=1000)
    medium_min_movers: float = Field(default=1.25, ge=0, le=1000)


# ----------------------------------------------------------------------------------------------------------------
# Flow backends
# ----------------------------------------------------------------------------------------------------------------

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_RAFT_CACHE: dict[str, Any] = {}


def _flows_dis(gray: np.ndarray, pairs: list[tuple[int, int]], preset: str, finest: int) -> list[np.ndarray]:
    dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    dis.setFinestScale(finest)
    return [dis.calc(gray[a], gray[b], None) for a, b in pairs]


def _flows_farneback(gray: np.ndarray, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
    return [
        cv2.calcOpticalFlowFarneback(gray[a], gray[b], None, 0.5, 3, 13, 3, 5, 1.1, 0) for a, b in pairs
    ]


def _raft_model(path: str) -> Any:
    if path in _RAFT_CACHE:
        return _RAFT_CACHE[path]
    import torch  # lazy: only the RAFT backend needs torch
    from torchvision.models.optical_flow import raft_small

    model = raft_small(weights=None, progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)
    model.eval()
    _RAFT_CACHE[path] = model
    return model


def _flows_raft(gray: np.ndarray, pairs: list[tuple[int, int]], weights: str | None, iters: int) -> list[np.ndarray]:
    if weights is None:
        raise FileNotFoundError("motion flow_backend 'raft' needs raft_weights: a local raft_small state dict path")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"RAFT weights not found: {weights}")
    import torch
    import torch.nn.functional as F

    model = _raft_model(str(weights))
    h, w = gray.shape[1:]
    # RAFT downsamples by 8 and its correlation pyramid needs >= 16 cells a side: work at >= 128 px, multiple of 8
    up = max(1.0, 128.0 / min(h, w))
    rh, rw = int(math.ceil(h * up / 8) * 8), int(math.ceil(w * up / 8) * 8)
    x = torch.from_numpy(gray).float().div_(127.5).sub_(1.0)[:, None]
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    a = torch.stack([x[i] for i, _ in pairs])
    b = torch.stack([x[j] for _, j in pairs])
    out = []
    with torch.inference_mode():
        for s in range(0, len(pairs), 16):
            flow = model(a[s : s + 16].contiguous(), b[s : s + 16].contiguous(), num_flow_updates=iters)[-1]
            if (rh, rw) != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                flow = flow * torch.tensor([w / rw, h / rh]).view(1, 2, 1, 1)
            out.extend(f.permute(1, 2, 0).numpy().astype(np.float32) for f in flow)
    return out


def pair_flows(gray: np.ndarray, pairs: list[tuple[int, int]], cfg: MotionConfig) -> list[np.ndarray]:
    """Dense flow ``(H, W, 2)`` float32 (px, from frame a to frame b) for each pair of ``gray`` (N, H, W) uint8."""
    if cfg.flow_backend == "dis":
        return _flows_dis(gray, pairs, cfg.dis_preset, cfg.dis_finest_scale)
    if cfg.flow_backend == "farneback":
        return _flows_farneback(gray, pairs)
    return _flows_raft(gray, pairs, cfg.raft_weights, cfg.raft_iters)


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


def _empty(backend: str, tier: str | None = None) -> dict[str, Any]:
    return {
        "camera_motion": 0.0,
        "subject_motion": 0.0,
        "moving_fraction": 0.0,
        "num_movers": 0.0,
        "shakiness": 0.0,
        "motion_tier": tier,
        "flow_backend": backend,
    }


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


def analyse(clip: ClipFrames, cfg: MotionConfig) -> dict[str, Any]:
    """Scores plus diagnostics (``smooth_step``, per-pair arrays, ``reason``); ``score`` keeps the stage columns."""
    if clip.media_type == "image" or clip.num_frames < 2:
        return _empty(cfg.flow_backend)

    # 1. luma, borders cropped, flow resolution
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
    ratio = dw / fw

    dts_all = _pair_intervals(clip)
    n_pairs = clip.num_frames - 1
    if n_pairs > cfg.max_pairs:
        sel = np.unique(np.linspace(0, n_pairs - 1, cfg.max_pairs).round().astype(int))
    else:
        sel = np.arange(n_pairs)
    pairs = [(int(i), int(i) + 1) for i in sel]
    dts = dts_all[sel]

    # 2. flow
    flows = pair_flows(gray, pairs, cfg)

    # pixel and grid coordinates, centred on the frame centre (so a zoom has no translation)
    cx, cy = (fw - 1) / 2.0, (fh - 1) / 2.0
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    xc, yc = xx - cx, yy - cy
    s = cfg.grid_step
    gy_, gx_ = np.mgrid[s // 2 : fh : s, s // 2 : fw : s]
    gpts = np.stack([gx_.ravel() - cx, gy_.ravel() - cy], axis=1).astype(np.float32)
    dyy, dxx = np.mgrid[0:dh, 0:dw].astype(np.float32)
    dxc, dyc = dxx - (dw - 1) / 2.0, dyy - (dh - 1) / 2.0
    min_area = max(1.0, cfg.min_component_fraction * fw * fh)
    diff_min = cfg.diff_min

    P = len(pairs)
    trans = np.zeros((P, 2))
    cam_speed = np.zeros(P)
    changed_masks: list[np.ndarray] = []
    err_cam: list[np.ndarray] = []  # |frame a - frame b warped by the camera| at flow resolution
    err_flow: list[np.ndarray] = []  # |frame a - frame b warped by the flow|
    speed_maps: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    pinned = np.zeros((fh, fw), np.int32)  # pairs in which a pixel changed, but only relative to the camera
    n_eligible = np.zeros((fh, fw), np.int32)  # pairs in which the camera moved that pixel noticeably
    # 3. camera fit per pair, then photometric check: a neighbour's fit or the clip's median fit replaces a
    # pair's own fit when it explains the frame difference better (flow on blurred or flat pictures can be off)
    fits = [_fit_camera(flow, _texture(gray[a]), gy_, gx_, gpts, cfg) for (a, _), flow in zip(pairs, flows)]
    median_fit = np.median(np.stack(fits), axis=0)
    corners = np.array([[-cx, cx, -cx, cx], [-cy, -cy, cy, cy], [1.0, 1.0, 1.0, 1.0]])

    def warp_change(m: np.ndarray, a: int, b: int) -> np.ndarray:
        dcx = ((m[0, 0] - 1.0) * dxc + m[0, 1] * dyc + m[0, 2] * ratio).astype(np.float32)
        dcy = (m[1, 0] * dxc + (m[1, 1] - 1.0) * dyc + m[1, 2] * ratio).astype(np.float32)
        warped = cv2.remap(dgray[b], dxx + dcx, dyy + dcy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return (_tolerant_diff(dgray[a], warped) >= diff_min).astype(np.uint8)

    for k, ((a, b), flow, dt) in enumerate(zip(pairs, flows, dts)):
        m = fits[k]
        dchanged = warp_change(m, a, b)
        bad = float(dchanged.mean())
        if bad > cfg.refit_min_change:
            for alt in (fits[k - 1] if k > 0 else None, fits[k + 1] if k + 1 < P else None, median_fit):
                if alt is None or np.abs((alt - m) @ corners).max() < 0.25:  # same warp within 1/4 px
                    continue
                alt_changed = warp_change(alt, a, b)
                alt_bad = float(alt_changed.mean())
                if alt_bad < 0.5 * bad:
                    m, dchanged, bad = alt, alt_changed, alt_bad
        camx = ((m[0, 0] - 1.0) * xc + m[0, 1] * yc + m[0, 2]).astype(np.float32)
        camy = (m[1, 0] * xc + (m[1, 1] - 1.0) * yc + m[1, 2]).astype(np.float32)
        trans[k] = m[0, 2], m[1, 2]
        # valid area: pixels whose camera-warped position stays inside the frame (plus 1 px)
        mx = min(int(math.ceil(max(abs(camx[:, 0]).max(), abs(camx[:, -1]).max()))) + 1, fw // 3)
        my = min(int(math.ceil(max(abs(camy[0]).max(), abs(camy[-1]).max()))) + 1, fh // 3)
        valid = np.zeros((fh, fw), np.uint8)
        valid[my : fh - my, mx : fw - mx] = 1
        cam_mag = np.sqrt(camx * camx + camy * camy)
        cam_speed[k] = float(cam_mag[my : fh - my, mx : fw - mx].mean()) / fw / dt

        # 4. residual flow; change that the camera does not explain (tolerant to 1 px misregistration)
        rx, ry = flow[..., 0] - camx, flow[..., 1] - camy
        rmag = np.sqrt(rx * rx + ry * ry)
        # static overlays (logos, captions) stay put in the image where the camera moves the scene
        eligible = (cam_mag >= cfg.overlay_min_px) & (valid > 0)
        if eligible.any():
            still = (_tolerant_diff(dgray[a], dgray[b]) < diff_min).astype(np.uint8)
            pinned += (_to_flow_res(dchanged & still, fw, fh) > 0) & eligible
            n_eligible += eligible
        changed = _to_flow_res(dchanged, fw, fh) & valid
        changed_masks.append(changed)
        ga = gray[a].astype(np.float32)
        gb = gray[b]
        err_cam.append(cv2.absdiff(ga, cv2.remap(gb, xx + camx, yy + camy, cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REPLICATE).astype(np.float32)))
        err_flow.append(cv2.absdiff(ga, cv2.remap(gb, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REPLICATE).astype(np.float32)))
        speed_maps.append(rmag / dt)
        valids.append(valid)

    overlay = None
    ov = ((n_eligible >= 2) & (pinned >= 0.5 * n_eligible)).astype(np.uint8)
    if ov.any():
        overlay = cv2.dilate(ov, _K3R, iterations=2)

    fracs = np.zeros(P)
    counts = np.zeros(P)
    res_sum = 0.0  # sum over moving pixels of residual speed (px/s at flow width)
    res_n = 0
    for k, (dt, changed, speed, valid) in enumerate(zip(dts, changed_masks, speed_maps, valids)):
        thr = max(cfg.moving_min_px, cfg.moving_speed * fw * dt) / dt
        # change the camera does not explain, grown by fast residual-flow regions (fills object interiors)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, _K3)
        fast = (speed >= thr).astype(np.uint8) & valid
        nf, flab = cv2.connectedComponents(fast, connectivity=8)
        if nf > 1:
            # A fast region joins the moving mask (object interiors the difference test misses) when it touches
            # detected change and its flow explains the next frame clearly better than the camera does there.
            lab = flab.ravel()
            n_px = np.maximum(np.bincount(lab, minlength=nf), 1)
            touch = np.bincount(lab, weights=changed.ravel(), minlength=nf) > 0
            e_cam = np.bincount(lab, weights=err_cam[k].ravel(), minlength=nf) / n_px
            e_flow = np.bincount(lab, weights=err_flow[k].ravel(), minlength=nf) / n_px
            hit = touch & (e_cam >= cfg.grow_min_gain * e_flow + 1.0) & (e_cam >= cfg.grow_min_error)
            hit[0] = False
            moving = changed | hit[flab].astype(np.uint8)
        else:
            moving = changed
        if overlay is not None:
            moving = moving & (1 - overlay)
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, _K3)
        moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, _K5)
        nlab, lab, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
        keep = np.nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area)[0] + 1
        counts[k] = len(keep)
        if len(keep):
            mask = np.isin(lab, keep)
            npx = int(mask.sum())
            fracs[k] = npx / float(max(1, valid.sum()))
            res_sum += float(speed[mask].sum())
            res_n += npx

    # 5. scores
    w = float(fw)
    camera_motion = float(cam_speed.mean())
    subject_motion = res_sum / res_n / w if res_n else 0.0
    moving_fraction = float(fracs.mean())
    num_movers = float(np.mean(counts))
    vel = trans / dts[:, None]  # px per second at flow width
    if len(pairs) >= 2:
        contiguous = np.diff(sel) == 1
        d2 = (vel[1:] - vel[:-1]) * ((dts[1:] + dts[:-1]) / 2.0)[:, None]
        d2 = d2[contiguous] if contiguous.any() else d2
        shakiness = float(np.sqrt(np.mean(np.sum(d2 * d2, axis=1)) / 12.0)) / w
    else:
        shakiness = 0.0
    smooth_step = float(np.linalg.norm(trans.mean(axis=0))) / w

    out = {
        "camera_motion": camera_motion,
        "subject_motion": subject_motion,
        "moving_fraction": moving_fraction,
        "num_movers": num_movers,
        "shakiness": shakiness,
        "smooth_step": smooth_step,
    }
    tier, reason = classify(out, cfg)
    out.update(
        motion_tier=tier,
        flow_backend=cfg.flow_backend,
        reason=reason,
        per_pair={"counts": counts, "fracs": fracs, "cam_speed": cam_speed, "trans": trans},
        crop=(y0, y1, x0, x1),
    )
    return out


def score(clip: ClipFrames, cfg: MotionConfig) -> dict[str, Any]:
    """Motion scores of one clip: exactly the columns of ``STAGE_FIELDS["motion"]``.

    Returns ``camera_motion``, ``subject_motion`` (widths/s), ``moving_fraction`` (0..1), ``num_movers``,
    ``shakiness`` (widths), ``motion_tier`` (one of ``TIERS``; None for images) and ``flow_backend``.
    """
    if clip.media_type == "image" or clip.num_frames < 2:
        return _empty(cfg.flow_backend)
    r = analyse(clip, cfg)
    out = {k: float(np.float32(r[k])) for k in ("camera_motion", "subject_motion", "moving_fraction", "num_movers",
                                                  "shakiness")}
    out["motion_tier"] = r["motion_tier"]
    out["flow_backend"] = r["flow_backend"]
    return out
