"""Reproducible synthetic corpus: short H.264 videos and images with ground-truth labels.

Usage::

    from curation.synth import generate
    labels = generate("/tmp/corpus", preset="test", seed=0)  # media/ + labels.parquet

or ``python -m curation.synth --out DIR --preset test --seed 0``. See ``generate.LABEL_SCHEMA`` for the
label columns (one row per video segment, one per image).
"""
from curation.synth.bad_inputs import write_bad_inputs
from curation.synth.degrade import TEXT_POOL, Degradations, apply_degradations
from curation.synth.generate import (
    DUP_REENCODE,
    DUP_RESIZE,
    LABEL_SCHEMA,
    PRESETS,
    CorpusPlan,
    ImagePlan,
    Preset,
    SegmentPlan,
    VideoPlan,
    generate,
    layout_video,
    plan_corpus,
    render_image,
    render_video_frames,
)
from curation.synth.scenes import MOTION_KINDS, render_scene, render_still
from curation.synth.videoio import read_video, write_video

__all__ = [
    "DUP_REENCODE",
    "DUP_RESIZE",
    "LABEL_SCHEMA",
    "MOTION_KINDS",
    "PRESETS",
    "TEXT_POOL",
    "CorpusPlan",
    "Degradations",
    "ImagePlan",
    "Preset",
    "SegmentPlan",
    "VideoPlan",
    "apply_degradations",
    "generate",
    "layout_video",
    "plan_corpus",
    "read_video",
    "render_image",
    "render_scene",
    "render_still",
    "render_video_frames",
    "write_bad_inputs",
    "write_video",
]
