"""Planted stand-ins for the bench tests: an embedding that knows colours and shapes, a scripted VLM backend.

``ShapeColourEncoder`` is the "planted embedding" of the object and scene-prompt tests: an image's embedding is
[fraction of the subject's pixels in each colour of ``COLOURS``, one-hot of its shape from the fill ratio of its
bounding box (circle ~0.79, square 1, triangle 0.5), per connected subject]; a text's embedding marks the colour and shape words it
names. So a prompt naming what the frame shows has cosine similarity 1 with it, a mismatched one 0.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from captioner.backends import CaptionResult
from curation.synth.bench_videos import COLOURS, SHAPES

_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}


class ShapeColourEncoder:
    dim = len(COLOURS) + len(SHAPES)

    def _image(self, im: np.ndarray) -> np.ndarray:
        v = np.zeros(self.dim)
        px = im.reshape(-1, 3).astype(np.int64)
        for i, col in enumerate(COLOURS.values()):
            v[i] = float((np.abs(px - np.array(col)).sum(axis=1) < 90).sum())
        subject = (np.abs(im.astype(np.int64) - 128).sum(axis=2) > 60)
        if subject.sum() < 10:
            return np.zeros(self.dim)
        v[: len(COLOURS)] /= subject.sum()
        _, _, stats, _ = cv2.connectedComponentsWithStats(subject.astype(np.uint8), connectivity=8)
        for x, y, w, h, area in stats[1:]:
            if area >= 10:
                fill = area / float(w * h)
                v[len(COLOURS) + int(np.argmin([abs(fill - _FILL[s]) for s in SHAPES]))] = 1.0
        return v

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._image(im) for im in images]) if len(images) else np.zeros((0, self.dim))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim))
        for r, t in enumerate(texts):
            words = t.lower().split()
            for i, c in enumerate(COLOURS):
                out[r, i] = float(c in words)
            for i, s in enumerate(SHAPES):
                out[r, len(COLOURS) + i] = float(s in words)
        return out


class ScriptedBackend:
    """A captioner backend whose reply to each instruction is ``reply(instruction)``."""

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.asked: list[str] = []

    def caption(self, items, instruction=None, max_new_tokens=128, greedy=True):
        self.asked.extend(instruction)
        return [CaptionResult(self.reply(q)) for q in instruction]
