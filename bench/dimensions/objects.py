"""Single object, multiple objects and spatial position: the fraction of frames that match the prompt, judged by
CLIP zero-shot classification (``clip`` section; ``bench.dimensions.clip_support``).

A frame shows an object when the text ``template.format(object)`` is more similar to the frame than every
distractor's text (distractors: the prompt's metadata ``distractors`` if given, else ``DEFAULT_DISTRACTORS``,
minus the prompt's own objects).

- ``single_object`` (metadata ``objects``: one name): frames that show it.
- ``multiple_objects`` (``objects``: two or more): frames that show every one of them.
- ``spatial_position`` (``objects``: [A, B], ``relation``: ``left of``, ``right of``, ``above``, ``below``): the
  frame is cut in the two halves the relation names; a frame matches when A's half is more like A than B and B's
  half more like B than A.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.clip_support import ClipSection, clip_encoder, cosine
from bench.dimensions.common import need_meta, parse_section, sample_frames
from curation.jobconfig import Strict

DEFAULT_DISTRACTORS = ("person", "car", "dog", "cat", "bird", "tree", "house", "chair", "cup", "bicycle",
                       "boat", "horse", "flower", "book", "clock")
RELATIONS = ("left of", "right of", "above", "below")


class ObjectSection(Strict):
    clip: ClipSection | None = None
    max_frames: int = Field(default=8, ge=1, le=129)
    template: str = "a photo of a {}"


class _ObjectDimension:
    name: ClassVar[str]
    group: ClassVar[str] = "instruction_following"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "meta"})
    MIN_OBJECTS: ClassVar[int] = 1
    MAX_OBJECTS: ClassVar[int] = 1

    def __init__(self, section: Any = None, encoder: Any = None) -> None:
        self.cfg = parse_section(ObjectSection, section)
        self.encoder = clip_encoder(self.cfg.clip, encoder, self.name)
        self._text_cache: dict[str, np.ndarray] = {}

    def objects(self, video: BenchVideo) -> list[str]:
        objs = [str(o) for o in need_meta(video, "objects", self.name)]
        if not self.MIN_OBJECTS <= len(objs) <= self.MAX_OBJECTS:
            raise ValueError(f"{self.name} needs {self.MIN_OBJECTS}..{self.MAX_OBJECTS} objects, got {objs}")
        return objs

    def texts(self, names: list[str]) -> np.ndarray:
        """Text embeddings of ``names`` (cached: the distractors recur in every video)."""
        todo = [n for n in names if n not in self._text_cache]
        if todo:
            emb = self.encoder.encode_text([self.cfg.template.format(n) for n in todo])
            self._text_cache.update(zip(todo, emb))
        return np.stack([self._text_cache[n] for n in names])

    def distractors(self, video: BenchVideo, objs: list[str]) -> list[str]:
        pool = video.meta.get("distractors") or DEFAULT_DISTRACTORS
        return [d for d in pool if d not in objs]

    def shows_all(self, frames_emb: np.ndarray, objs: list[str], distractors: list[str]) -> np.ndarray:
        """Per frame: every object beats every distractor."""
        sim_obj = cosine(frames_emb, self.texts(objs))  # (F, O)
        sim_dis = cosine(frames_emb, self.texts(distractors)).max(axis=1, keepdims=True)  # (F, 1)
        return np.all(sim_obj > sim_dis, axis=1)

    def score(self, video: BenchVideo) -> DimensionScore:
        objs = self.objects(video)
        dis = self.distractors(video, objs)
        emb = self.encoder.encode_images(list(sample_frames(video, self.cfg.max_frames)))
        hits = self.shows_all(emb, objs, dis)
        return DimensionScore(float(hits.mean()), {"objects": objs, "frames_matching": int(hits.sum()),
                                                   "num_frames": len(hits), "num_distractors": len(dis)})


class SingleObject(_ObjectDimension):
    name: ClassVar[str] = "single_object"


class MultipleObjects(_ObjectDimension):
    name: ClassVar[str] = "multiple_objects"
    MIN_OBJECTS = 2
    MAX_OBJECTS = 16


def halves(frame: np.ndarray, relation: str) -> tuple[np.ndarray, np.ndarray]:
    """(where A should be, where B should be) for ``A <relation> B``."""
    h, w = frame.shape[:2]
    left, right, top, bottom = frame[:, : w // 2], frame[:, w // 2:], frame[: h // 2], frame[h // 2:]
    return {"left of": (left, right), "right of": (right, left), "above": (top, bottom),
            "below": (bottom, top)}[relation]


class SpatialPosition(_ObjectDimension):
    name: ClassVar[str] = "spatial_position"
    MIN_OBJECTS = 2
    MAX_OBJECTS = 2

    def score(self, video: BenchVideo) -> DimensionScore:
        objs = self.objects(video)
        relation = str(need_meta(video, "relation", self.name))
        if relation not in RELATIONS:
            raise ValueError(f"spatial_position: unknown relation {relation!r}; expected one of {RELATIONS}")
        frames = sample_frames(video, self.cfg.max_frames)
        crops = [c for f in frames for c in halves(f, relation)]
        emb = self.encoder.encode_images([np.ascontiguousarray(c) for c in crops])
        sim = cosine(emb, self.texts(objs)).reshape(len(frames), 2, 2)  # frame, half (A's, B's), object (A, B)
        hits = (sim[:, 0, 0] > sim[:, 0, 1]) & (sim[:, 1, 1] > sim[:, 1, 0])
        return DimensionScore(float(hits.mean()), {"objects": objs, "relation": relation,
                                                   "frames_matching": int(hits.sum()), "num_frames": len(hits)})
