"""Aspect-ratio buckets and the training curriculum, as data (``jobs/configs/curriculum.yaml``).

A **stage** of the curriculum (the report's 4.2.2 and 4.2.3: 256 px images; joint 256 px images + 192 px 5 s 16 fps
video; 480 px; 720 px; post-training at 480 and 720 px) lists, per media type, a target size ``S`` (area ``S*S``
pixels, or the area of a reference frame such as ``1280x720`` for 720p), a list of aspect ratios, and for video a frame count ``1 + 4k`` at an fps. Each aspect ratio gives one
**bucket**: a fixed ``frames x height x width`` whose sides are multiples of 16 (so the VAE's 8x latent grid divides
by the DiT patch (1, 2, 2)) and whose area is the target area up to that rounding, so every bucket of one stage and media
type has about the same token count. A clip goes to the bucket of its media type whose aspect ratio is closest to
its own (in log ratio); training batches are bucket-homogeneous. The stage's ``mix`` says what fraction of samples
each media type contributes. Changing stage is a config change (``--stage``) resumed from the last checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from curation.jobconfig import ConfigError, Strict, load_yaml_config

__all__ = [
    "Bucket",
    "Curriculum",
    "TrainingStage",
    "assign_bucket",
    "bucket_dims",
    "source_frame_indices",
]

MediaType = Literal["image", "video"]
MEDIA_TYPES: tuple[str, ...] = ("image", "video")
SIDE_MULTIPLE = 16  # VAE stride 8 x DiT patch 2
VAE_STRIDE = (4, 8, 8)  # temporal, height, width: Wan-VAE's compression
LATENT_CHANNELS = 16


@dataclass(frozen=True)
class Bucket:
    """One training shape: ``frames`` pixel frames (1 for an image, else 1 + 4k) of ``height x width`` at ``fps``."""

    name: str
    media_type: str
    frames: int
    height: int
    width: int
    fps: float

    @property
    def aspect(self) -> float:
        """Width over height."""
        return self.width / self.height

    def latent_shape(self, channels: int = LATENT_CHANNELS) -> tuple[int, int, int, int]:
        """[C, F, H, W] of this bucket's VAE latent."""
        t, s, _ = VAE_STRIDE
        return channels, 1 + (self.frames - 1) // t, self.height // s, self.width // s

    def tokens(self, patch: tuple[int, int, int] = (1, 2, 2)) -> int:
        """DiT tokens of one sample of this bucket after patchify."""
        _, f, h, w = self.latent_shape()
        return (f // patch[0]) * (h // patch[1]) * (w // patch[2])


@dataclass(frozen=True)
class TrainingStage:
    """A curriculum stage: its buckets, the share of samples per media type, the curated splits it reads."""

    name: str
    buckets: tuple[Bucket, ...]
    mix: dict[str, float]
    splits: tuple[str, ...] | None = None  # curated ``split`` values it trains on; None: every kept clip
    description: str = ""
    _by_name: dict[str, Bucket] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({b.name: b for b in self.buckets})

    def buckets_of(self, media_type: str) -> tuple[Bucket, ...]:
        """This stage's buckets of one media type, in YAML order."""
        return tuple(b for b in self.buckets if b.media_type == media_type)

    def bucket(self, name: str) -> Bucket:
        """The bucket called ``name``; a ``ConfigError`` naming the known ones otherwise."""
        if name not in self._by_name:
            raise ConfigError(f"stage '{self.name}' has no bucket '{name}' (known: {', '.join(self._by_name)})")
        return self._by_name[name]


# -- YAML schema -------------------------------------------------------------------------------------------------

def _parse_ratio(text: str) -> tuple[int, int]:
    parts = str(text).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"aspect ratio {text!r} must look like 'W:H' with positive integers, e.g. '16:9'")
    return int(parts[0]), int(parts[1])


class MediaSpec(Strict):
    """Buckets of one media type: target size (area size*size), aspect ratios 'W:H'; video adds frames and fps."""

    size: int = Field(gt=0)
    area: str | None = None  # 'WxH' whose area the buckets keep (e.g. '1280x720'); default size x size
    aspect_ratios: list[str] = Field(min_length=1)
    frames: int = Field(default=1, gt=0)
    fps: float = Field(default=16.0, gt=0)

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, v: list[str]) -> list[str]:
        for r in v:
            _parse_ratio(r)
        if len(set(v)) != len(v):
            raise ValueError("aspect ratios repeat")
        return v

    @field_validator("area")
    @classmethod
    def _area(cls, v: str | None) -> str | None:
        if v is not None:
            parts = v.split("x")
            if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
                raise ValueError(f"area {v!r} must look like 'WxH', e.g. '1280x720'")
        return v

    def reference(self) -> tuple[int, int] | None:
        """(width, height) of the ``area`` frame, if given."""
        if self.area is None:
            return None
        w, h = self.area.split("x")
        return int(w), int(h)

    def target_area(self) -> int:
        ref = self.reference()
        return ref[0] * ref[1] if ref else self.size * self.size

    @field_validator("frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if (v - 1) % VAE_STRIDE[0]:
            raise ValueError(f"frames must be 1 + 4k (the VAE's temporal stride), got {v}")
        return v


class StageSpec(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    mix: dict[MediaType, float]
    splits: list[str] | None = None
    image: MediaSpec | None = None
    video: MediaSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        if any(f < 0 for f in self.mix.values()) or not math.isclose(sum(self.mix.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"mix fractions must be >= 0 and sum to 1, got {self.mix}")
        for media, frac in self.mix.items():
            if frac > 0 and getattr(self, media) is None:
                raise ValueError(f"mix gives {media} {frac} but the stage has no '{media}' buckets")
        if self.image is not None and self.image.frames != 1:
            raise ValueError("image buckets have frames 1")
        if self.video is not None and self.video.frames < 5:
            raise ValueError("video buckets need at least 5 frames (1 + 4k, k >= 1)")
        return self


class CurriculumSpec(Strict):
    stages: list[StageSpec] = Field(min_length=1)


# -- buckets from the spec ---------------------------------------------------------------------------------------

def _near16(x: float) -> list[int]:
    lo = max(SIDE_MULTIPLE, int(x // SIDE_MULTIPLE) * SIDE_MULTIPLE)
    return [lo, lo + SIDE_MULTIPLE]


def bucket_dims(area: int, ratio_w: int, ratio_h: int,
                reference: tuple[int, int] | None = None) -> tuple[int, int]:
    """(height, width): multiples of 16 with width/height ~ ratio_w/ratio_h and height*width ~ area (of the
    multiples of 16 either side of the exact sides, the pair with the least log error in aspect plus in area, then in aspect;
    a portrait ratio is the landscape one turned, so 9:16 is exactly 16:9 transposed). A ``reference`` frame
    (width, height) in multiples of 16 within 5 % of the ratio is taken as it is (832x480 stays Wan's 480p)."""
    if ratio_w < ratio_h:
        h, w = bucket_dims(area, ratio_h, ratio_w, reference)
        return w, h
    r = ratio_w / ratio_h
    if reference:
        reference = max(reference), min(reference)
    if reference and not (reference[0] % SIDE_MULTIPLE or reference[1] % SIDE_MULTIPLE) \
            and abs(math.log(reference[0] / reference[1] / r)) < 0.05:
        return reference[1], reference[0]
    exact_h, exact_w = math.sqrt(area / r), math.sqrt(area * r)

    def error(hw: tuple[int, int]) -> tuple[float, float]:
        aspect = abs(math.log(hw[1] / hw[0] / r))
        return round(aspect + abs(math.log(hw[0] * hw[1] / area)), 9), aspect

    return min(((h, w) for h in _near16(exact_h) for w in _near16(exact_w)), key=error)


def _media_buckets(media: str, spec: MediaSpec) -> list[Bucket]:
    prefix = "i" if media == "image" else "v"
    out = []
    for text in spec.aspect_ratios:
        rw, rh = _parse_ratio(text)
        h, w = bucket_dims(spec.target_area(), rw, rh, spec.reference())
        out.append(Bucket(f"{prefix}{spec.size}_{rw}x{rh}", media, spec.frames, h, w, float(spec.fps)))
    return out


def _build_stage(spec: StageSpec) -> TrainingStage:
    buckets = [b for media in MEDIA_TYPES if (m := getattr(spec, media)) is not None for b in _media_buckets(media, m)]
    return TrainingStage(spec.name, tuple(buckets), dict(spec.mix),
                         tuple(spec.splits) if spec.splits is not None else None, spec.description)


@dataclass(frozen=True)
class Curriculum:
    """The stages of a curriculum YAML, by name."""

    stages: tuple[TrainingStage, ...]
    path: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Curriculum:
        """Read and validate a curriculum YAML (unknown keys, bad ratios or frames, a bucket name meaning two
        shapes: ``ConfigError``)."""
        spec = load_yaml_config(path, CurriculumSpec)
        return cls.from_spec(spec, str(path))

    @classmethod
    def from_spec(cls, spec: CurriculumSpec, path: str = "") -> Curriculum:
        stages = tuple(_build_stage(s) for s in spec.stages)
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"invalid config: stage names repeat in {path or 'the curriculum'}: {names}")
        seen: dict[str, Bucket] = {}
        for b in (b for s in stages for b in s.buckets):
            if seen.setdefault(b.name, b) != b:
                raise ConfigError(f"invalid config: bucket name '{b.name}' means two shapes: {seen[b.name]} and {b}")
        return cls(stages, path)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> TrainingStage:
        """The stage called ``name``; a ``ConfigError`` listing the known stages otherwise."""
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"unknown curriculum stage '{name}' (known: {', '.join(self.names)})")


# -- assignment --------------------------------------------------------------------------------------------------

def source_frame_indices(bucket: Bucket, num_frames: int, fps: float) -> list[int] | None:
    """Indices (into the clip's ``num_frames`` frames at ``fps``) of the bucket's frames sampled at the bucket's
    fps from a window centred in the clip; None when the clip is too short. An image bucket takes the middle frame."""
    if num_frames < 1 or fps <= 0:
        return None
    if bucket.frames == 1:
        return [num_frames // 2]
    step = fps / bucket.fps  # source frames per bucket frame
    span = (bucket.frames - 1) * step  # source frames between the first and the last sampled frame
    if span > num_frames - 1 + 1e-6:
        return None
    start = (num_frames - 1 - span) / 2
    return [min(num_frames - 1, math.floor(start + k * step + 1e-6)) for k in range(bucket.frames)]


def assign_bucket(stage: TrainingStage, media_type: str, width: int, height: int, num_frames: int,
                  fps: float) -> Bucket | None:
    """The bucket of ``media_type`` whose aspect ratio is closest (log ratio) to ``width/height``; None when the
    stage has no bucket of that type or the clip is too short for the stage's video frames at their fps."""
    candidates = stage.buckets_of(media_type)
    if not candidates or width <= 0 or height <= 0:
        return None
    target = math.log(width / height)
    best = min(candidates, key=lambda b: abs(math.log(b.aspect) - target))
    if media_type == "video" and source_frame_indices(best, num_frames, fps) is None:
        return None
    return best
