"""The contract every Wan-Bench dimension keeps (report section 4.6).

A dimension is a scorer built once per actor from its config (model weights load in ``__init__`` from local paths
named there; a missing file is ``curation.models.WeightsNotFoundError`` naming the path) and called per video:

    dim = DIMENSIONS["large_motion"](config)          # config: that dimension's section of the bench config
    result = dim.score(video)                         # -> DimensionScore(score in [0, 1], evidence dict)

``BenchVideo`` is the input contract: decoded RGB frames, their rate, the prompt and the prompt's metadata from the
prompt suite (objects, counts, relations, camera move, action, style). A dimension states in ``needs`` which of
these it reads, and raises ``ValueError`` with a clear message when the video cannot be scored (too few frames,
metadata it needs absent); the job records that as an error row for that (sample, dimension).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

GROUPS = ("dynamic_quality", "image_quality", "instruction_following")
"""The report's three groups of dimensions."""


@dataclass(frozen=True)
class BenchVideo:
    """One generated video as every dimension sees it."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB (T = 1 for an image)
    fps: float
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)  # the prompt suite's metadata for this prompt
    sample_id: str = ""

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or f.shape[0] < 1:
            raise ValueError(f"frames must be [T, H, W, 3] uint8 RGB, got {f.dtype} {f.shape}")


@dataclass(frozen=True)
class DimensionScore:
    """A score in [0, 1] (higher is better) and what it was computed from (JSON-serialisable)."""

    score: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not np.isfinite(self.score) or not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a dimension score must be finite and in [0, 1], got {self.score}")


class Dimension(Protocol):
    """What the job calls. ``name`` is the registry key; ``group`` one of ``GROUPS``."""

    name: ClassVar[str]
    group: ClassVar[str]
    needs: ClassVar[frozenset[str]]  # subset of {"frames", "fps", "prompt", "meta"}

    def score(self, video: BenchVideo) -> DimensionScore: ...


DimensionFactory = Callable[[Any], Dimension]
"""Builds a dimension from its config section (``None``: defaults)."""
