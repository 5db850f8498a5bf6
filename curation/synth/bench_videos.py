"""Short videos with known properties for the Wan-Bench dimension tests (RGB ``(T, H, W, 3)`` uint8).

Unlike the rest of ``curation.synth`` these frames are RGB, because ``bench.dimensions.BenchVideo`` is RGB.
Every function is a pure function of its arguments (the seed included):

- ``static_video``: a textured still repeated (no motion at all).
- ``noisy_video``: the same still with fresh Gaussian noise per frame (unstable pixels, no motion).
- ``camera_video``: a virtual camera over a larger textured canvas: ``pan_left``/``pan_right`` (the view moves
  sideways, so the content moves the other way), ``tilt_up``/``tilt_down``, ``zoom_in``/``zoom_out``.
- ``shape_video``: one flat shape (``circle``, ``square``, ``triangle``) of one colour drifting on a grey floor.
- ``identity_swap_video``: like ``shape_video`` but the subject becomes another shape and colour halfway.
"""
from __future__ import annotations

import cv2
import numpy as np

from curation.synth.scenes import make_texture, random_palette

CAMERA_MOVES = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30),
}
_FLOOR = (128, 128, 128)


def _texture_rgb(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(make_texture(rng, h, w, random_palette(rng))[..., ::-1])


def static_video(seed: int = 0, n_frames: int = 16, height: int = 96, width: int = 128) -> np.ndarray:
    """One textured still, ``n_frames`` times."""
    still = _texture_rgb(seed, height, width)
    return np.repeat(still[None], n_frames, axis=0)


def noisy_video(seed: int = 0, sigma: float = 8.0, n_frames: int = 16, height: int = 96,
                width: int = 128) -> np.ndarray:
    """``static_video`` plus independent Gaussian noise of ``sigma`` gray levels in every frame."""
    base = static_video(seed, n_frames, height, width).astype(np.float32)
    noise = np.random.default_rng(seed + 1).normal(0.0, sigma, base.shape).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def camera_video(move: str, seed: int = 0, n_frames: int = 12, height: int = 96, width: int = 128,
                 speed: float = 2.0) -> np.ndarray:
    """A camera ``move`` (one of ``CAMERA_MOVES``) over a textured canvas; ``speed`` px per frame for pans and
    tilts, and for zooms the per-frame growth of the half-width in px."""
    if move not in CAMERA_MOVES:
        raise ValueError(f"unknown camera move {move!r}; expected one of {CAMERA_MOVES}")
    margin = int(np.ceil(speed * n_frames)) + 4
    canvas = _texture_rgb(seed, height + 2 * margin, width + 2 * margin)
    cy, cx = (canvas.shape[0] - 1) / 2.0, (canvas.shape[1] - 1) / 2.0
    frames = []
    for t in range(n_frames):
        s = t - (n_frames - 1) / 2.0
        dx = speed * s * {"pan_left": -1, "pan_right": 1}.get(move, 0)
        dy = speed * s * {"tilt_up": -1, "tilt_down": 1}.get(move, 0)
        zoom = 1.0 + {"zoom_in": 1, "zoom_out": -1}.get(move, 0) * speed * s / (width / 2.0)
        # view pixel (u, v) shows canvas point centre + (u - w/2) / zoom + (dx, dy)
        m = np.array([[1 / zoom, 0, cx + dx - (width - 1) / 2.0 / zoom],
                      [0, 1 / zoom, cy + dy - (height - 1) / 2.0 / zoom]], np.float64)
        frames.append(cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def draw_shape(frame: np.ndarray, shape: str, colour: str, cx: float, cy: float, size: float) -> None:
    """Draw a filled ``shape`` of ``colour`` (names of ``SHAPES`` / ``COLOURS``) centred at (cx, cy), in place."""
    if shape not in SHAPES or colour not in COLOURS:
        raise ValueError(f"unknown shape/colour {shape!r}/{colour!r}: shapes {SHAPES}, colours {sorted(COLOURS)}")
    col = COLOURS[colour]
    r = size / 2.0
    if shape == "circle":
        cv2.circle(frame, (round(cx), round(cy)), round(r), col, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(frame, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), col, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(frame, [pts], col, cv2.LINE_AA)


def shape_video(shape: str, colour: str, n_frames: int = 8, height: int = 96, width: int = 128,
                size: float = 40.0, drift: float = 1.0) -> np.ndarray:
    """One ``colour`` ``shape`` drifting right by ``drift`` px per frame on a flat grey floor."""
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        frames[t] = _FLOOR
        draw_shape(frames[t], shape, colour, width / 2.0 + drift * (t - n_frames / 2.0), height / 2.0, size)
    return frames


def identity_swap_video(first: tuple[str, str] = ("circle", "red"), second: tuple[str, str] = ("square", "blue"),
                        n_frames: int = 8, height: int = 96, width: int = 128) -> np.ndarray:
    """``shape_video`` of ``first`` (shape, colour) whose subject becomes ``second`` from the middle frame on."""
    a = shape_video(*first, n_frames=n_frames, height=height, width=width)
    b = shape_video(*second, n_frames=n_frames, height=height, width=width)
    half = n_frames // 2
    return np.concatenate([a[:half], b[half:]])
