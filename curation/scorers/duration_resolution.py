"""Duration and resolution of a clip (report 3.1: videos must exceed 4 s; resolution thresholds per stage).

Pure metadata: no pixels are read. Thresholds are applied by ``select`` so that one table serves every training
stage's resolution threshold.
"""
from __future__ import annotations

from curation.media.frames import ClipFrames
from pydantic import BaseModel, ConfigDict

STAGE = "duration_resolution"
VERSION = "1"


class DurationResolutionConfig(BaseModel):
    """No settings: the thresholds live in ``select``."""

    model_config = ConfigDict(extra="forbid")


def score(clip: ClipFrames, cfg: DurationResolutionConfig) -> dict[str, object]:
    """Duration in seconds (0 for an image), source width/height and the short side."""
    return {
        "duration_s": clip.duration_s,
        "width": clip.source_width,
        "height": clip.source_height,
        "short_side": min(clip.source_width, clip.source_height),
    }
