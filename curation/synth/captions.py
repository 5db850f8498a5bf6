"""Reference captions of the synthetic corpus, and the colour statistics that check them.

Every generated scene takes its colours from one random base hue (``scenes.random_palette``), so each clip has one
dominant, nameable colour. ``reference_caption(label_row)`` re-renders the first frame of the segment (or the
image) from its label's ``seed``, names its dominant colour and writes a short caption such as
``"a red scene with moving objects"``: the generator's ground truth, for the toy world when no captioner is
configured (the tiny random captioner writes random text).

``colour_histogram`` / ``dominant_colour`` are the statistic: pixels with saturation >= ``MIN_SATURATION`` vote for
one of six hue bins (OpenCV hue 0-180, bins centred on red 0, yellow 30, green 60, cyan 90, blue 120, magenta
150); the rest count as ``grey``. Input is RGB uint8 ``[..., 3]`` (frames, videos or stacks of them).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from curation.synth.scenes import render_scene, render_still

__all__ = ["COLOURS", "HUE_COLOURS", "colour_histogram", "dominant_colour", "reference_caption",
           "reference_colour"]

HUE_COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta")
COLOURS: tuple[str, ...] = (*HUE_COLOURS, "grey")
MIN_SATURATION = 60
MIN_VALUE = 40

_MOTION_PHRASES: dict[str, str] = {
    "static": "that stays still",
    "optimal": "with moving objects",
    "medium": "with a moving object",
    "camera_driven": "with the camera panning",
    "low_quality": "with many small moving objects",
    "shaky": "with a shaking camera",
}


def colour_histogram(rgb: np.ndarray) -> np.ndarray:
    """Fractions of pixels per ``COLOURS`` bin (sums to 1) of RGB uint8 pixels ``[..., 3]``."""
    pixels = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).reshape(-1, 1, 3))
    if pixels.shape[0] == 0:
        raise ValueError("colour_histogram needs at least one pixel")
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int32)
    coloured = (hsv[:, 1] >= MIN_SATURATION) & (hsv[:, 2] >= MIN_VALUE)
    bins = ((hsv[:, 0] + 15) // 30) % len(HUE_COLOURS)
    counts = np.bincount(bins[coloured], minlength=len(HUE_COLOURS)).astype(np.float64)
    hist = np.append(counts, float((~coloured).sum()))
    return hist / hist.sum()


def dominant_colour(rgb: np.ndarray) -> str:
    """The hue bin with most saturated pixels; ``grey`` when fewer than a fifth of the pixels are saturated."""
    hist = colour_histogram(rgb)
    if hist[-1] > 0.8:
        return "grey"
    return HUE_COLOURS[int(np.argmax(hist[:-1]))]


def _reference_frame(label: Mapping[str, Any]) -> np.ndarray:
    """The segment's first frame (or the image) as rendered before any degradation, RGB uint8."""
    width, height, seed = int(label["width"]), int(label["height"]), int(label["seed"])
    if label["media_type"] == "image":
        bgr = render_still(seed, width, height)
    else:
        bgr = next(iter(render_scene(str(label["motion_kind"]), seed, width, height, 1)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def reference_colour(label: Mapping[str, Any]) -> str:
    """The dominant colour of a label row's scene (a row of ``labels.parquet``)."""
    return dominant_colour(_reference_frame(label))


def reference_caption(label: Mapping[str, Any]) -> tuple[str, str]:
    """``(caption, colour)`` of a label row: ``"a red scene with moving objects"`` (a video segment) or
    ``"a blue scene"`` (an image)."""
    colour = reference_colour(label)
    phrase = "" if label["media_type"] == "image" else _MOTION_PHRASES.get(str(label["motion_kind"]), "")
    return f"a {colour} scene {phrase}".strip(), colour
