"""64-bit DCT perceptual hash (pHash) of a clip's keyframes.

Standard pHash: luma, resized (area interpolation) to 32x32, 2-D DCT (``cv2.dct``), the 8x8 lowest-frequency block
is compared with the median of its 63 AC coefficients (the DC term is excluded from the median, so a global
brightness change does not move the threshold; its bit is kept so the hash fills 64 bits). Bits are packed row-major,
coefficient (0, 0) in the most significant bit, and stored as the signed ``int64`` with the same bit pattern.

``phash`` is the hash of the middle sampled frame (index ``N // 2``); ``phashes`` holds the hashes of the first,
middle and last sampled frames (distinct indices only, so one hash for an image).
"""
from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from curation.media.frames import ClipFrames

STAGE = "phash"
VERSION = "1"

_MASK64 = (1 << 64) - 1
_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


class PhashConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_keyframes: int = Field(3, ge=1, le=3, description="1: middle only; 2: first+last; 3: first/middle/last")


def phash_image(bgr: np.ndarray) -> int:
    """pHash of one BGR (or gray) image as a signed 64-bit integer."""
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    small = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    med = np.median(low[1:])
    bits = (low > med).astype(np.uint64)
    value = int((bits * _WEIGHTS).sum(dtype=np.uint64))
    return value - (1 << 64) if value >= (1 << 63) else value


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (signed or unsigned Python ints)."""
    return ((a ^ b) & _MASK64).bit_count()


def score(clip: ClipFrames, cfg: PhashConfig) -> dict[str, object]:
    n = clip.num_frames
    mid = n // 2
    if cfg.max_keyframes == 1:
        idx = [mid]
    elif cfg.max_keyframes == 2:
        idx = sorted({0, n - 1})
    else:
        idx = sorted({0, mid, n - 1})
    hashes = {i: phash_image(clip.frames[i]) for i in set(idx) | {mid}}
    return {"phash": hashes[mid], "phashes": [hashes[i] for i in idx]}
