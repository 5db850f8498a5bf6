"""The captioner's media inputs and their pixels: what a caller hands in (an image, or a video as frames with
fps or timestamps), how an image source (array, encoded bytes, path) becomes an RGB uint8 array, and the pixel
steps every backend shares (OpenCV resize, aspect-ratio padding, tiling into views, normalisation).

Split out of ``processor.py`` (token layout and batching); ``captioner.processor`` re-exports every name here.
Every bad input raises ``CaptionInputError`` (a ``ValueError``) saying what was wrong.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

__all__ = [
    "CaptionInputError",
    "ImageInput",
    "ImageSource",
    "MediaInput",
    "VideoInput",
    "decode_image",
    "fit_aspect_ratio",
    "image_views",
    "normalize",
    "resize",
]


class CaptionInputError(ValueError):
    """An input the captioner cannot take (undecodable media, extreme aspect ratio, empty instruction...)."""


# ----------------------------------------------------------------------------------------------- media inputs
ImageSource = np.ndarray | bytes | str | Path


@dataclass
class ImageInput:
    """One image: an ``(H, W, 3)`` uint8 array, encoded bytes (JPEG/PNG) or a file path."""

    image: ImageSource
    channels: Literal["rgb", "bgr"] = "rgb"


@dataclass
class VideoInput:
    """A video as decoded frames: a ``(T, H, W, 3)`` uint8 array or a list of arrays / encoded bytes / paths.

    Give ``fps`` for evenly spaced frames (frame ``i`` at ``i / fps`` seconds) or ``timestamps`` (seconds, one
    per frame, increasing), e.g. a clip's keyframes. Frames are decoded only once they are sampled.
    """

    frames: np.ndarray | Sequence[ImageSource]
    fps: float | None = None
    timestamps: Sequence[float] | None = None
    channels: Literal["rgb", "bgr"] = "rgb"


MediaInput = ImageInput | VideoInput


# ------------------------------------------------------------------------------------------------- pixels
def decode_image(source: ImageSource, channels: str = "rgb") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from an array, encoded bytes or a path."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise CaptionInputError(f"image file not found: {path}")
        source = path.read_bytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(bytes(source), np.uint8)
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if image is None:
            raise CaptionInputError(f"could not decode image bytes ({buf.size} bytes)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if not isinstance(source, np.ndarray):
        raise CaptionInputError(f"unsupported image type {type(source).__name__}")
    image = source
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise CaptionInputError(f"image array must be (H, W, 3), got shape {tuple(source.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise CaptionInputError(f"image has an empty side: {image.shape[1]}x{image.shape[0]}")
    if image.dtype == np.uint16:  # 16-bit frames: full range 0..65535 maps to 0..255
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise CaptionInputError(f"{image.dtype} image values must lie in 0..255 (got {low}..{high}); pass "
                                    "uint8, uint16 (scaled from 0..65535) or floats")
        image = image.astype(np.uint8)
    elif image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and np.isfinite(image).all() and image.max() <= 1.0:
            image = np.round(image * 255.0)
        image = np.clip(image, 0, 255).astype(np.uint8)
    image = image[..., :3]
    if channels == "bgr":
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV resize: area filter when shrinking, bilinear when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def fit_aspect_ratio(image: np.ndarray, max_ratio: float, policy: str, fill: Sequence[int]) -> tuple[np.ndarray, bool]:
    """Pad (centred, with ``fill``) an image whose long/short side ratio exceeds ``max_ratio``, or reject it."""
    height, width = image.shape[:2]
    ratio = max(width, height) / min(width, height)
    if ratio <= max_ratio:
        return image, False
    if policy == "reject":
        raise CaptionInputError(f"image aspect ratio {width}x{height} ({ratio:.1f}:1) exceeds the maximum "
                                f"{max_ratio:g}:1 (aspect_policy='reject')")
    if width >= height:
        new_w, new_h = width, int(math.ceil(width / max_ratio))
    else:
        new_w, new_h = int(math.ceil(height / max_ratio)), height
    canvas = np.empty((new_h, new_w, 3), np.uint8)
    canvas[:] = np.asarray(fill, np.uint8)
    y0, x0 = (new_h - height) // 2, (new_w - width) // 2
    canvas[y0:y0 + height, x0:x0 + width] = image
    return canvas, True


def normalize(views: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 RGB views ``(S, S, 3)`` -> float32 ``(V, 3, S, S)``, scaled to [0, 1] and normalised."""
    stack = torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (stack - mean_t) / std_t


def image_views(image: np.ndarray, grid: tuple[int, int], tile: int) -> list[np.ndarray]:
    """The tiles of a ``(rows, cols)`` grid in row-major order, then the global view, each ``tile x tile``."""
    rows, cols = grid
    big = resize(image, cols * tile, rows * tile)
    tiles = [big[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    return [*tiles, resize(image, tile, tile)]
