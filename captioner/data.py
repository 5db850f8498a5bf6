"""Captioner training data in the lake: one row per (media, instruction, caption) example.

Two sources, both read into ``CaptionExample``s:

- the ``caption_sft`` table (``CAPTION_SFT_SCHEMA``): examples with their frames as JPEG bytes and frame times,
  written by ``write_examples`` (synthetic labelled clips, instruction data, human-annotated captions; the
  ``split`` column separates ``train``, the small high-quality ``hq`` set of stage 3, and ``eval``);
- curated clips with reference captions: ``clips`` keyframes (JPEG) joined by ``clip_id`` with a captions table
  holding ``clip_id`` and ``caption`` (``read_clip_examples``), restricted to ``curated`` keep = true when the
  lake has ``curated``.

``caption_sft`` is keyed by ``example_id``; ``write_examples`` appends only new keys, so re-running a writer
neither loses nor duplicates rows.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa

from captioner.processor import ImageInput, MediaInput, VideoInput
from captioner.templates import instruction_for
from curation.lake import KeyedWriter, Lake
from curation.lake.schemas import CAPTION_SFT

CAPTION_SFT_TABLE = "caption_sft"
CAPTION_SFT_SCHEMA = CAPTION_SFT


@dataclass
class CaptionExample:
    """One training or evaluation example."""

    example_id: str
    media_type: str
    frames: list[bytes]
    frame_times: list[float]
    instruction: str
    caption: str
    facts: list[dict[str, str]] = field(default_factory=list)

    def media(self) -> MediaInput | None:
        """The processor input for this example's media (None for text-only instruction data)."""
        if self.media_type == "text":
            return None
        if not self.frames:
            raise ValueError(f"example {self.example_id}: {self.media_type} without frames")
        if self.media_type == "image":
            return ImageInput(self.frames[0])
        return VideoInput(list(self.frames), timestamps=list(self.frame_times))


def encode_jpeg_rgb(frame: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB uint8 frame."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def synthetic_rows(clips: Iterable, split: str = "train", prefix: str = "synthetic") -> list[dict]:
    """``caption_sft`` rows for ``captioner.synthetic.SyntheticClip``s (frames as JPEG, templated captions)."""
    rows = []
    for clip in clips:
        rows.append({
            "example_id": f"{prefix}-{clip.media_type}-{clip.seed}", "source": "synthetic",
            "media_type": clip.media_type, "frames": [encode_jpeg_rgb(f) for f in clip.frames],
            "frame_times": [i / clip.fps for i in range(len(clip.frames))],
            "instruction": instruction_for(clip.media_type), "caption": clip.caption,
            "facts_json": json.dumps(clip.facts), "split": split, "clip_id": None})
    return rows


def as_lake(lake: Lake | str | os.PathLike) -> Lake:
    """A ``Lake`` from a lake, a path or a URI."""
    return lake if isinstance(lake, Lake) else Lake(os.fspath(lake))


def write_examples(lake: Lake | str, rows: Sequence[dict]) -> int:
    """Append the rows whose ``example_id`` is not in ``caption_sft`` yet; returns how many were written."""
    return KeyedWriter(as_lake(lake), CAPTION_SFT_TABLE).append(list(rows))


def _examples_from_table(table: pa.Table) -> list[CaptionExample]:
    out = []
    for row in table.to_pylist():
        out.append(CaptionExample(row["example_id"], row["media_type"], list(row["frames"] or []),
                                  [float(t) for t in (row["frame_times"] or [])], row["instruction"], row["caption"],
                                  json.loads(row["facts_json"]) if row.get("facts_json") else []))
    return out


def read_examples(lake: Lake | str, split: str | None = "train", table: str = CAPTION_SFT_TABLE
                  ) -> list[CaptionExample]:
    """Examples of one ``split`` (all when None) from ``caption_sft``; an absent table is an error."""
    lake = as_lake(lake)
    dataset = lake.dataset(table)
    if dataset is None:
        raise FileNotFoundError(f"no {table!r} table in lake {lake.root}")
    filt = None if split is None else f"split = '{split}'"
    return _examples_from_table(dataset.to_table(filter=filt))


def read_clip_examples(lake: Lake | str, captions_table: str = "captions", instruction: str | None = None
                       ) -> list[CaptionExample]:
    """Clips' keyframes with their reference captions (``captions_table``: ``clip_id``, ``caption``).

    Only clips with ``status = 'ok'``, a non-empty caption (from a caption row with ``status = 'ok'`` when the
    table has a status) and, when the lake has ``curated``, keep = true.
    Keyframe times come from ``keyframe_indices``, ``start_frame`` and ``fps``.
    """
    lake = as_lake(lake)
    captions = lake.dataset(captions_table)
    if captions is None:
        raise FileNotFoundError(f"no {captions_table!r} table in lake {lake.root}")
    status_ok = "status = 'ok'" if "status" in captions.schema.names else None  # failed captioning rows
    by_clip = {r["clip_id"]: r["caption"]
               for r in captions.to_table(columns=["clip_id", "caption"], filter=status_ok).to_pylist()
               if r["caption"] and r["caption"].strip()}
    kept = None
    if lake.exists("curated"):
        kept = set(lake.read("curated", columns=["clip_id"], filter="keep = true").column("clip_id").to_pylist())
    clips = lake.read("clips", columns=["clip_id", "media_type", "start_frame", "fps", "keyframes",
                                        "keyframe_indices", "status"], filter="status = 'ok'")
    out = []
    for row in clips.to_pylist():
        cid = row["clip_id"]
        if cid not in by_clip or (kept is not None and cid not in kept) or not row["keyframes"]:
            continue
        media_type = "image" if row["media_type"] == "image" else "video"
        fps = row["fps"] or 1.0
        indices = row["keyframe_indices"] or list(range(len(row["keyframes"])))
        times = [(i - (row["start_frame"] or 0)) / fps for i in indices]
        out.append(CaptionExample(f"clip-{cid}", media_type, list(row["keyframes"]), times,
                                  instruction or instruction_for(media_type), by_clip[cid]))
    return out
