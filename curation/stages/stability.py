"""Do select's decisions survive a re-encode? Score the same labelled segments of two renditions of a corpus
(the original and a re-encoded copy, ``curation.synth.degrade.REENCODINGS``) and count the clips whose decisions
agree: motion tier, blur, overexposure and border.

The segments come from the generator's labels (frame spans), so shot detection plays no part: only the scorers and
the decisions are compared. Frames are decoded and sampled exactly as the pipeline does
(``curation.stages.analyze``), in this process.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import av

from curation.config import SelectConfig, ShotsConfig
from curation.lake.schemas import STATUS_OK
from curation.scorers.registry import SCORER_CONFIGS
from curation.stages import decisions as dec
from curation.stages.analyze import AnalysisSettings, clips_frames_from_video, score_clip

SCORERS = ("borders", "exposure", "blur", "motion")
DECISIONS = ("motion_tier", "blurry", "overexposed", "has_border", "border")


def analysis_settings(shots: ShotsConfig | None = None, scorers: Iterable[str] = SCORERS) -> AnalysisSettings:
    """The pipeline's analysis settings (``shots`` section) for ``scorers`` with default scorer configs."""
    shots = shots or ShotsConfig()
    names = tuple(scorers)
    return AnalysisSettings(names, {n: SCORER_CONFIGS[n]() for n in names}, shots.analysis_max_side,
                            shots.sample_fps, shots.decode_threads)


def _video_info(path: str) -> dict[str, Any]:
    with av.open(path) as c:
        s = c.streams.video[0]
        return {"uri": path, "media_type": "video", "fps": float(s.average_rate or s.guessed_rate),
                "width": s.codec_context.width, "height": s.codec_context.height}


def score_segments(media_dir: str, labels: Iterable[Mapping[str, Any]],
                   settings: AnalysisSettings) -> dict[str, dict[str, dict[str, Any]]]:
    """``{segment key: {stage: values}}`` for every labelled video segment under ``media_dir`` (files as named in
    the labels); a stage that failed on a segment is left out of its dict."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for r in labels:
        if r["media_type"] == "video":
            key = f"{r['file']}#{r['segment_index']}"
            by_file.setdefault(r["file"], []).append({"clip_id": key, "start_frame": r["start_frame"],
                                                       "end_frame": r["end_frame"]})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, clips in sorted(by_file.items()):
        info = _video_info(os.path.join(media_dir, name))
        for frames in clips_frames_from_video(info, clips, settings):
            rows = score_clip(frames, settings)
            out[frames.clip_id] = {t.split("/", 1)[1]: rs[0] for t, rs in rows.items()
                                   if rs[0]["status"] == STATUS_OK}
    return out


def decisions(stages: Mapping[str, Mapping[str, Any]], cfg: SelectConfig) -> dict[str, Any]:
    """Select's decisions for one segment's stage values (None where a stage is missing)."""
    b = stages.get("borders")
    return {
        "motion_tier": dec.motion_tier(stages.get("motion"), cfg),
        "blurry": dec.is_blurry(stages.get("blur"), cfg) if "blur" in stages else None,
        "overexposed": dec.is_overexposed(stages.get("exposure"), cfg) if "exposure" in stages else None,
        "has_border": bool(b["has_border"]) if b else None,
        "border": dec.has_too_much_border(b, cfg) if b else None,
    }


@dataclass
class Agreement:
    """Per decision: the fraction of segments whose decision is the same in both renditions, and the flips."""

    n: int = 0
    same: dict[str, float] = field(default_factory=dict)
    flips: dict[str, list[str]] = field(default_factory=dict)

    @property
    def all_same(self) -> float:
        """Fraction of segments keeping every decision."""
        flipped = {k for keys in self.flips.values() for k in keys}
        return 1.0 - len(flipped) / self.n if self.n else 1.0


def agreement(base: Mapping[str, Mapping[str, Any]], other: Mapping[str, Mapping[str, Any]],
              cfg: SelectConfig) -> Agreement:
    """Compare the decisions of the segments scored in both renditions."""
    keys = sorted(set(base) & set(other))
    ag = Agreement(n=len(keys))
    for name in DECISIONS:
        flips = []
        for k in keys:
            a, b = decisions(base[k], cfg)[name], decisions(other[k], cfg)[name]
            if a != b:
                flips.append(f"{k}: {a} -> {b}")
        ag.same[name] = 1.0 - len(flips) / len(keys) if keys else 1.0
        ag.flips[name] = flips
    return ag
