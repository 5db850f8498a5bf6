"""Labelled synthetic clips for captioner training and evaluation: coloured shapes moving over a textured
background seen by a moving camera, with templated true captions and the annotated facts behind them.

Rendering is numpy/OpenCV only and fast (a 5-frame 48x48 clip in about a millisecond), so a learning test can
make hundreds of clips. Everything is a pure function of the seed. Frames are RGB uint8.

Ground truth per clip (``SyntheticClip.facts``, evaluation dimensions of ``captioner.eval``):
``object_color`` (red, green, blue, yellow), ``object_counting`` (one, two, three), ``object_category``
(circle, square, triangle), ``action`` (move left/right/up/down; videos only) and ``camera_motion``
(static, pan left/right, tilt up/down; videos only). On screen, a camera panning right moves the background
left; objects move in their own direction independently of the camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240),
                                           "yellow": (240, 220, 40)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COUNTS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CAMERA_MOTIONS: dict[str, tuple[int, int]] = {  # on-screen shift of the background per frame (unit)
    "static": (0, 0), "pan left": (1, 0), "pan right": (-1, 0), "tilt up": (0, 1), "tilt down": (0, -1)}
CAMERA_PHRASES = {"static": "The camera is static.", "pan left": "The camera pans left.",
                  "pan right": "The camera pans right.", "tilt up": "The camera tilts up.",
                  "tilt down": "The camera tilts down."}


@dataclass
class SyntheticClip:
    """One generated image or video with its true caption and facts."""

    media_type: str  # "image" | "video"
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB; T = 1 for images
    fps: float
    caption: str
    facts: list[dict[str, str]] = field(default_factory=list)  # [{"dimension": ..., "value": ...}]
    seed: int = 0


def _draw_shape(frame: np.ndarray, shape: str, cx: float, cy: float, radius: float,
                color: tuple[int, int, int]) -> None:
    x, y, r = int(round(cx)), int(round(cy)), max(2, int(round(radius)))
    if shape == "circle":
        cv2.circle(frame, (x, y), r, color, -1, lineType=cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(frame, (x - r, y - r), (x + r, y + r), color, -1)
    else:
        pts = np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)
        cv2.fillPoly(frame, [pts], color, lineType=cv2.LINE_AA)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted grey-brown texture (low saturation, so the objects' colours stand out)."""
    small = rng.uniform(50, 130, (max(2, height // 6), max(2, width // 6), 1)).astype(np.float32)
    tint = rng.uniform(0.85, 1.1, (1, 1, 3)).astype(np.float32)
    tex = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[..., None] * tint
    tex += rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return np.clip(tex, 0, 255).astype(np.uint8)


def caption_for(count: int, color: str, shape: str, direction: str | None, camera: str | None) -> str:
    """The templated true caption, e.g. ``Two red circles move left. The camera pans right.``"""
    noun = shape if count == 1 else shape + "s"
    head = f"{COUNTS[count].capitalize()} {color} {noun}"
    if direction is None:
        return f"{head} on a textured background."
    verb = "moves" if count == 1 else "move"
    return f"{head} {verb} {direction}. {CAMERA_PHRASES[camera]}"


def make_clip(seed: int, media_type: str = "video", size: int = 48, num_frames: int = 5, fps: float = 3.0,
              speed: float = 3.0) -> SyntheticClip:
    """Render one clip (or image) from ``seed``: object count/colour/shape/direction and camera motion drawn
    uniformly; objects move ``speed`` px per frame, the camera ``speed`` px per frame."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 4))
    color = str(rng.choice(list(COLORS)))
    shape = str(rng.choice(SHAPES))
    is_video = media_type == "video"
    direction = str(rng.choice(list(DIRECTIONS))) if is_video else None
    camera = str(rng.choice(list(CAMERA_MOTIONS))) if is_video else None
    frames_n = num_frames if is_video else 1
    travel = speed * (frames_n - 1)
    pad = int(np.ceil(travel)) + 2
    world = _background(rng, size + 2 * pad, size + 2 * pad)
    radius = size * 0.15
    dx, dy = DIRECTIONS[direction] if direction else (0, 0)
    # starting centres chosen so every object stays inside the frame for the whole clip, spread apart
    lo_x = radius + 1 + max(0, -dx) * travel
    hi_x = size - radius - 1 - max(0, dx) * travel
    lo_y = radius + 1 + max(0, -dy) * travel
    hi_y = size - radius - 1 - max(0, dy) * travel
    centres: list[tuple[float, float]] = []
    for _ in range(200):
        if len(centres) == count:
            break
        c = (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))
        if all(np.hypot(c[0] - o[0], c[1] - o[1]) > 2.2 * radius for o in centres):
            centres.append(c)
    while len(centres) < count:  # crowded: place on a diagonal (still inside, may touch)
        k = len(centres)
        centres.append((lo_x + (hi_x - lo_x) * k / max(count - 1, 1), lo_y + (hi_y - lo_y) * k / max(count - 1, 1)))
    cam_dx, cam_dy = CAMERA_MOTIONS[camera] if camera else (0, 0)
    frames = np.empty((frames_n, size, size, 3), np.uint8)
    for t in range(frames_n):
        # background: a window over the world texture that shifts with the camera
        ox = int(round(pad - cam_dx * speed * t))
        oy = int(round(pad - cam_dy * speed * t))
        frame = world[oy:oy + size, ox:ox + size].copy()
        for cx, cy in centres:
            _draw_shape(frame, shape, cx + dx * speed * t, cy + dy * speed * t, radius, COLORS[color])
        frames[t] = frame
    facts = [{"dimension": "object_color", "value": color},
             {"dimension": "object_counting", "value": COUNTS[count]},
             {"dimension": "object_category", "value": shape}]
    if is_video:
        facts += [{"dimension": "action", "value": f"move {direction}"},
                  {"dimension": "camera_motion", "value": camera}]
    return SyntheticClip(media_type, frames, fps, caption_for(count, color, shape, direction, camera), facts, seed)


def make_clips(seeds: range | list[int], media_types: tuple[str, ...] = ("video",), **kwargs) -> list[SyntheticClip]:
    """One clip per seed; media types cycle through ``media_types``."""
    return [make_clip(s, media_types[i % len(media_types)], **kwargs) for i, s in enumerate(seeds)]


def caption_corpus() -> list[str]:
    """Every word and phrase the templates can produce (for training a small tokenizer)."""
    lines = []
    for count in COUNTS:
        for color in COLORS:
            for shape in SHAPES:
                lines.append(caption_for(count, color, shape, None, None))
                for direction in DIRECTIONS:
                    for camera in CAMERA_MOTIONS:
                        lines.append(caption_for(count, color, shape, direction, camera))
    return lines
