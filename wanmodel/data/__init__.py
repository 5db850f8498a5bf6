"""Training data for wanmodel: kept clips of a curated lake as tensors (torch or Ray Data front ends)."""
from wanmodel.data.clips import (
    ClipDataset,
    ClipRecord,
    NoClipsError,
    Sample,
    SkipClip,
    load_sample,
    ray_clip_dataset,
    read_clip_records,
    split_records,
)

__all__ = [
    "ClipDataset",
    "ClipRecord",
    "NoClipsError",
    "Sample",
    "SkipClip",
    "load_sample",
    "ray_clip_dataset",
    "read_clip_records",
    "split_records",
]
