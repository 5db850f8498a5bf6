"""Procedural textured scenes and the six motion kinds of the synthetic corpus.

Every frame is ``(H, W, 3)`` uint8 in BGR order (OpenCV convention, as everywhere in ``curation``). All
randomness comes from a ``numpy.random.Generator`` seeded by the caller, so a scene is a pure function of
``(kind, seed, width, height, n_frames)``.

Pixel values of the rendered scenes stay in ``[16, 230]`` so that clean clips have (almost) no saturated
pixels; overexposure is a separate degradation (``curation.synth.degrade``).

Geometry is specified at a 320-pixel-wide reference and scaled by ``width / 320``; areas are fractions of the
frame, so they do not depend on the size.
"""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

MOTION_KINDS: tuple[str, ...] = ("static", "optimal", "medium", "camera_driven", "low_quality", "shaky")

_LO, _HI = 16, 230  # value range of rendered scenes


def random_palette(rng: np.random.Generator, n: int = 6) -> np.ndarray:
    """Return ``(n, 3)`` uint8 BGR colours around one random base hue (a scene's colour palette)."""
    base = rng.uniform(0, 180)
    hues = (base + rng.normal(0, 18, n)) % 180
    sats = rng.uniform(90, 230, n)
    vals = rng.uniform(70, 225, n)
    hsv = np.stack([hues, sats, vals], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in ``[-1, 1]``: a coarse random grid (one value per ``cell`` px) upsampled bicubically."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    return up[:h, :w]


def make_texture(rng: np.random.Generator, h: int, w: int, palette: np.ndarray, density: float = 1.0) -> np.ndarray:
    """Render a sharp, high-detail textured background of ``h x w`` pixels.

    Multi-octave smooth noise tints a palette gradient; random filled shapes and lines add hard edges
    everywhere; a fine per-pixel grain keeps the Laplacian variance high (so blur is measurable).
    """
    pal = palette.astype(np.float32)
    c0, c1 = pal[rng.integers(len(pal))], pal[rng.integers(len(pal))]
    t = 0.5 + 0.5 * _smooth_noise(rng, h, w, max(8, min(h, w) // 2))
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    for cell, amp in ((48, 30.0), (16, 22.0), (5, 14.0)):
        img += amp * _smooth_noise(rng, h, w, cell)[..., None]
    img = np.clip(img, _LO, _HI).astype(np.uint8)
    n_shapes = int(density * (h * w) / 1400) + 8
    for _ in range(n_shapes):
        col = tuple(int(v) for v in np.clip(pal[rng.integers(len(pal))] + rng.normal(0, 25, 3), _LO, _HI))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(3, max(4, min(h, w) // 6)))
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + size, y + int(rng.integers(3, size + 4))), col, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), size // 2 + 1, col, -1)
        elif kind == 2:
            x2, y2 = x + int(rng.integers(-3 * size, 3 * size)), y + int(rng.integers(-3 * size, 3 * size))
            cv2.line(img, (x, y), (x2, y2), col, int(rng.integers(1, 4)))
        else:
            cv2.rectangle(img, (x, y), (x + size, y + size), col, int(rng.integers(1, 3)))
    grain = rng.normal(0, 9, (h, w, 1)).astype(np.float32)
    return np.clip(img.astype(np.float32) + grain, _LO, _HI).astype(np.uint8)


def make_sprite(
    rng: np.random.Generator, h: int, w: int, palette: np.ndarray, shape: str = "ellipse"
) -> tuple[np.ndarray, np.ndarray]:
    """Return a textured object ``(pixels (h, w, 3) uint8, mask (h, w) bool)`` of the given shape."""
    tex = make_texture(rng, h, w, palette, density=2.0)
    mask = np.zeros((h, w), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1, -1)
    else:
        r = max(1, min(h, w) // 5)
        cv2.rectangle(mask, (r, 0), (w - 1 - r, h - 1), 1, -1)
        cv2.rectangle(mask, (0, r), (w - 1, h - 1 - r), 1, -1)
        for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
            cv2.circle(mask, (cx, cy), r, 1, -1)
    edge = tuple(int(v) for v in np.clip(palette[0].astype(int) // 2, _LO, _HI))
    cv2.ellipse(tex, (w // 2, h // 2), (max(1, w // 2 - 2), max(1, h // 2 - 2)), 0, 0, 360, edge, 2)
    return tex, mask.astype(bool)


def paste(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Composite ``sprite`` (with boolean ``mask``) into ``frame`` at top-left ``(x, y)``, clipped to the frame."""
    fh, fw = frame.shape[:2]
    sh, sw = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, fw), min(y + sh, fh)
    if x0 >= x1 or y0 >= y1:
        return
    m = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    frame[y0:y1, x0:x1][m] = sprite[y0 - y : y1 - y, x0 - x : x1 - x][m]


def _object_dims(rng: np.random.Generator, w: int, h: int, area_frac: float, ellipse: bool) -> tuple[int, int]:
    """Width, height of an object whose (mask) area is ``area_frac`` of the frame (aspect 1.2-1.8)."""
    aspect = rng.uniform(1.2, 1.8)
    area = area_frac * w * h / (np.pi / 4 if ellipse else 0.93)
    ow = int(round(np.sqrt(area * aspect)))
    return max(3, ow), max(3, int(round(ow / aspect)))


class _Mover:
    """An object moving in straight lines with constant speed, bouncing off a box."""

    def __init__(self, x: float, y: float, vx: float, vy: float, w: int, h: int, box: tuple[int, ...]) -> None:
        self.x, self.y, self.vx, self.vy, self.w, self.h, self.box = x, y, vx, vy, w, h, box

    def step(self) -> None:
        bx0, by0, bx1, by1 = self.box
        self.x += self.vx
        self.y += self.vy
        if self.x < bx0 or self.x + self.w > bx1:
            self.vx = -self.vx
            self.x = float(np.clip(self.x, bx0, bx1 - self.w))
        if self.y < by0 or self.y + self.h > by1:
            self.vy = -self.vy
            self.y = float(np.clip(self.y, by0, by1 - self.h))


def _static(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """Talking head: static background, smooth head ellipse, mouth opening/closing, bob of at most 1 px."""
    bg = make_texture(rng, h, w, random_palette(rng))
    skin = np.array([rng.uniform(90, 150), rng.uniform(120, 170), rng.uniform(170, 220)])
    hw, hh = int(w * rng.uniform(0.09, 0.12)), int(h * rng.uniform(0.22, 0.28))
    cx, cy = int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.45, 0.55))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 - 0.25 * np.clip(((xx - cx) / hw) ** 2 + ((yy - cy) / hh) ** 2, 0, 1)
    head_img = np.clip(skin[None, None] * shade[..., None], _LO, _HI).astype(np.uint8)
    hair = tuple(int(v) for v in rng.uniform(20, 70, 3))
    mw, mh = max(2, int(hw * 0.45)), max(2, int(hh * 0.18))
    period = rng.uniform(5, 9)  # frames per mouth cycle
    bob_period = int(rng.integers(20, 40))
    for i in range(n):
        f = bg.copy()
        dy = (i // bob_period) % 2  # 0 or 1 px, changes rarely
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (cx, cy + dy), (hw, hh), 0, 0, 360, 1, -1)
        m = mask.astype(bool)
        f[m] = head_img[m]
        cv2.ellipse(f, (cx, cy - hh // 2 + dy), (hw, hh // 2), 0, 180, 360, hair, -1)
        for ex in (cx - hw // 3, cx + hw // 3):
            cv2.circle(f, (ex, cy - hh // 6 + dy), max(1, hw // 8), (40, 30, 30), -1)
        opening = 0.5 + 0.5 * np.sin(2 * np.pi * i / period)
        cv2.ellipse(f, (cx, cy + hh // 2 + dy), (mw, max(1, int(mh * opening))), 0, 0, 360, (40, 30, 110), -1)
        yield f


def _optimal(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """One large textured object (4-12 % of the frame) moving smoothly at 1.5-4 px/frame (at 320 wide)."""
    bg = make_texture(rng, h, w, random_palette(rng))
    ellipse = bool(rng.integers(2))
    ow, oh = _object_dims(rng, w, h, rng.uniform(0.05, 0.10), ellipse)
    spr, mask = make_sprite(rng, oh, ow, random_palette(rng), "ellipse" if ellipse else "rounded")
    speed = rng.uniform(1.5, 4.0) * w / 320
    ang = rng.uniform(-0.35, 0.35) + (np.pi if rng.integers(2) else 0.0)
    x = rng.uniform(0, w - ow)
    y = rng.uniform(0, h - oh)
    mv = _Mover(x, y, speed * np.cos(ang), speed * np.sin(ang), ow, oh, (0, 0, w, h))
    for _ in range(n):
        f = bg.copy()
        paste(f, spr, mask, int(round(mv.x)), int(round(mv.y)))
        mv.step()
        yield f


def _medium(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """2-3 medium objects (2-5 % each) moving; one crosses a static occluder bar drawn in front of it."""
    bg = make_texture(rng, h, w, random_palette(rng))
    bar_w = max(4, int(w * rng.uniform(0.05, 0.08)))
    bar_x = int(w * rng.uniform(0.4, 0.6))
    bar = make_texture(rng, h, bar_w, random_palette(rng), density=3.0)
    movers, sprites = [], []
    for k in range(int(rng.integers(2, 4))):
        ellipse = bool(rng.integers(2))
        ow, oh = _object_dims(rng, w, h, rng.uniform(0.025, 0.045), ellipse)
        sprites.append(make_sprite(rng, oh, ow, random_palette(rng), "ellipse" if ellipse else "rounded"))
        speed = rng.uniform(1.0, 3.0) * w / 320
        if k == 0:  # crosses the bar horizontally, starting on one side of it
            left = bool(rng.integers(2))
            x = bar_x - ow - rng.uniform(2, 10) * w / 320 if left else bar_x + bar_w + rng.uniform(2, 10) * w / 320
            vx, vy = (speed if left else -speed), rng.uniform(-0.2, 0.2)
        else:
            x, ang = rng.uniform(0, w - ow), rng.uniform(0, 2 * np.pi)
            vx, vy = speed * np.cos(ang), speed * np.sin(ang)
        movers.append(_Mover(x, rng.uniform(0, h - oh), vx, vy, ow, oh, (0, 0, w, h)))
    for _ in range(n):
        f = bg.copy()
        for mv, (spr, mask) in zip(movers, sprites):
            paste(f, spr, mask, int(round(mv.x)), int(round(mv.y)))
            mv.step()
        f[:, bar_x : bar_x + bar_w] = bar[:, : max(0, min(bar_w, w - bar_x))]
        yield f


def _camera_driven(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """Smooth pan (2-5 px/frame at 320 wide) or zoom (0.5-1.5 %/frame) over a static textured scene."""
    pal = random_palette(rng)
    if rng.integers(2) == 0:  # pan
        speed = rng.uniform(2.0, 5.0) * w / 320
        ang = rng.uniform(-0.3, 0.3) + (np.pi if rng.integers(2) else 0.0)
        vx, vy = speed * np.cos(ang), speed * np.sin(ang)
        cw, ch = w + int(np.ceil(abs(vx) * n)) + 4, h + int(np.ceil(abs(vy) * n)) + 4
        canvas = make_texture(rng, ch, cw, pal)
        x0 = cw - w - 2 if vx < 0 else 2
        y0 = ch - h - 2 if vy < 0 else 2
        for i in range(n):
            x, y = int(round(x0 + vx * i)), int(round(y0 + vy * i))
            yield canvas[y : y + h, x : x + w].copy()
        return
    # Total zoom is capped at 3x so the canvas stays small; the smallest crop is still 1.1x the output (sharp).
    rate = min(rng.uniform(0.005, 0.015), max(0.005, 3.0 ** (1 / max(1, n - 1)) - 1))
    total = (1 + rate) ** (n - 1)
    cw, ch = int(w * total * 1.1), int(h * total * 1.1)
    canvas = make_texture(rng, ch, cw, pal, density=0.5)
    zoom_in = bool(rng.integers(2))
    for i in range(n):
        z = (1 + rate) ** (i if zoom_in else n - 1 - i)  # crop shrinks by z
        cw_i, ch_i = cw / z, ch / z
        x0, y0 = int(round((cw - cw_i) / 2)), int(round((ch - ch_i) / 2))
        crop = canvas[y0 : y0 + int(round(ch_i)), x0 : x0 + int(round(cw_i))]
        yield cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def _shaky(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """Slow drift plus strong per-frame random camera jitter (std 3-6 px at 320 wide, small rotation)."""
    s = w / 320
    std = rng.uniform(3.0, 6.0) * s
    margin = int(np.ceil(3.5 * std + 1.0 * n * s)) + 4
    cw, ch = w + 2 * margin, h + 2 * margin
    canvas = make_texture(rng, ch, cw, random_palette(rng))
    obj = None
    if rng.integers(2):
        ow, oh = _object_dims(rng, w, h, 0.04, True)
        obj = (make_sprite(rng, oh, ow, random_palette(rng)), _Mover(margin + rng.uniform(0, w - ow),
               margin + rng.uniform(0, h - oh), rng.uniform(-0.6, 0.6) * s, 0.0, ow, oh, (0, 0, cw, ch)))
    drift = rng.uniform(0.2, 0.8) * s * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    rot_std = rng.uniform(0.0, 1.0)
    limit = margin - 2 - abs(drift).max() * n
    for i in range(n):
        scene = canvas
        if obj is not None:
            scene = canvas.copy()
            (spr, mask), mv = obj
            paste(scene, spr, mask, int(round(mv.x)), int(round(mv.y)))
            mv.step()
        jx, jy = np.clip(rng.normal(0, std, 2), -limit, limit)
        cx, cy = margin + w / 2 + drift[0] * i + jx, margin + h / 2 + drift[1] * i + jy
        m = cv2.getRotationMatrix2D((cx, cy), float(rng.normal(0, rot_std)), 1.0)
        m[:, 2] += np.array([w / 2 - cx, h / 2 - cy])
        yield cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _low_quality(rng: np.random.Generator, w: int, h: int, n: int) -> Iterator[np.ndarray]:
    """Crowd clutter: 25-60 small movers (< 0.3 % each) in random directions, overlapping one another."""
    bg = make_texture(rng, h, w, random_palette(rng))
    pal = random_palette(rng, 10)
    movers, looks = [], []
    # Keep the crowd in a sub-region so that the movers overlap and occlude each other.
    box = (int(w * rng.uniform(0, 0.2)), int(h * rng.uniform(0, 0.2)), int(w * rng.uniform(0.8, 1)), h)
    for _ in range(int(rng.integers(25, 61))):
        frac = rng.uniform(0.0008, 0.0024)
        ow, oh = _object_dims(rng, w, h, frac, True)
        ow, oh = max(3, min(ow, oh)), max(4, max(ow, oh))  # upright blobs, like people
        speed, ang = rng.uniform(0.5, 3.0) * w / 320, rng.uniform(0, 2 * np.pi)
        x, y = rng.uniform(box[0], box[2] - ow), rng.uniform(box[1], box[3] - oh)
        movers.append(_Mover(x, y, speed * np.cos(ang), speed * np.sin(ang), ow, oh, box))
        col = np.clip(pal[rng.integers(len(pal))].astype(int) + rng.integers(-30, 30, 3), _LO, _HI)
        looks.append(tuple(int(v) for v in col))
    for _ in range(n):
        f = bg.copy()
        for mv, col in zip(movers, looks):
            x, y = int(round(mv.x)), int(round(mv.y))
            cv2.ellipse(f, (x + mv.w // 2, y + mv.h // 2), (max(1, mv.w // 2), max(1, mv.h // 2)), 0, 0, 360, col, -1)
            cv2.circle(f, (x + mv.w // 2, y + max(1, mv.h // 5)), max(1, mv.w // 3), (60, 80, 150), -1)
            mv.step()
            if rng.random() < 0.02:  # occasional direction change
                mv.vx, mv.vy = -mv.vy, mv.vx
        yield f


_RENDERERS = {
    "static": _static,
    "optimal": _optimal,
    "medium": _medium,
    "camera_driven": _camera_driven,
    "low_quality": _low_quality,
    "shaky": _shaky,
}


def render_scene(kind: str, seed: int, width: int, height: int, n_frames: int) -> Iterator[np.ndarray]:
    """Yield ``n_frames`` BGR uint8 frames of a fresh scene of motion ``kind`` (one of ``MOTION_KINDS``).

    Deterministic in ``seed``. Each call draws its own texture and palette, so consecutive scenes with
    different seeds form a hard cut.
    """
    if kind not in _RENDERERS:
        raise ValueError(f"unknown motion kind {kind!r}; expected one of {MOTION_KINDS}")
    rng = np.random.default_rng(seed)
    yield from _RENDERERS[kind](rng, width, height, n_frames)


def render_still(seed: int, width: int, height: int) -> np.ndarray:
    """Render one textured still image (background plus a large object), for the image part of the corpus."""
    rng = np.random.default_rng(seed)
    img = make_texture(rng, height, width, random_palette(rng))
    ow, oh = _object_dims(rng, width, height, rng.uniform(0.05, 0.12), True)
    spr, mask = make_sprite(rng, oh, ow, random_palette(rng))
    paste(img, spr, mask, int(rng.uniform(0, width - ow)), int(rng.uniform(0, height - oh)))
    return img
