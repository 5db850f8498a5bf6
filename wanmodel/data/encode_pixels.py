"""CPU side of the encode job: decode each source file once and cut every pending clip into its bucket's pixels.

A work item is one source file and its pending clips; each clip names the source frames its bucket samples
(``buckets.source_frame_indices``, at the bucket's fps, absolute frame numbers as the shot pass counts them), its
crop box (borders and watermark, from ``curated``; displayed source pixels) and the bucket's size. A clip's frames
are cropped to the box, centre-cropped to the bucket's aspect ratio and resized (area filter) to the bucket. A file
that fails to open or ends early gives each affected clip an error instead of pixels.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

__all__ = ["PIXELS", "ClipDecoder", "crop_to_bucket"]

PIXELS = pa.schema([
    pa.field("latent_id", pa.string(), nullable=False),
    pa.field("bucket", pa.string()),
    pa.field("pixels", pa.large_binary()),  # RGB uint8 (T, H, W, 3)
    pa.field("shape", pa.list_(pa.int32())),
    pa.field("error", pa.string()),
])
"""What ``ClipDecoder`` hands to the VAE actors: one row per clip."""


def crop_to_bucket(rgb: np.ndarray, crop: list[int] | None, height: int, width: int) -> np.ndarray:
    """``rgb`` (H, W, 3) cut to ``crop`` (x0, y0, x1, y1; None: whole frame), centre-cropped to the aspect ratio
    ``width/height`` and resized to (height, width)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = crop if crop is not None else (0, 0, w, h)
    x0, x1 = max(0, min(x0, w - 1)), max(1, min(x1, w))
    y0, y1 = max(0, min(y0, h - 1)), max(1, min(y1, h))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {crop} in a {w}x{h} frame")
    region = rgb[y0:y1, x0:x1]
    rh, rw = region.shape[:2]
    target = width / height
    if rw / rh > target:  # too wide: keep the middle columns
        keep = max(1, round(rh * target))
        off = (rw - keep) // 2
        region = region[:, off:off + keep]
    else:  # too tall: keep the middle rows
        keep = max(1, round(rw / target))
        off = (rh - keep) // 2
        region = region[off:off + keep]
    interp = cv2.INTER_AREA if region.shape[0] >= height else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(region), (width, height), interpolation=interp)


def _row(clip: dict[str, Any], pixels: np.ndarray | None = None, error: str | None = None) -> dict[str, Any]:
    row = {"latent_id": clip["latent_id"], "bucket": clip["bucket"], "pixels": None, "shape": None, "error": error}
    if pixels is not None:
        pixels = np.ascontiguousarray(pixels, np.uint8)
        row.update(pixels=pixels.tobytes(), shape=list(pixels.shape))
    return row


class ClipDecoder:
    """CPU actor: one source file per row in, one row of bucket pixels (or the reason there are none) per clip."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for item in batch.to_pylist():
            rows.extend(self.decode(item))
        return pa.Table.from_pylist(rows, schema=PIXELS)

    def decode(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            if item["media_type"] == "image":
                return self._image(item)
            return self._video(item)
        except Exception as e:  # noqa: BLE001 - a file that fails is recorded for each of its clips
            return [_row(c, error=f"decode: {type(e).__name__}: {e}") for c in item["clips"]]

    def _image(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        from curation.media.probe import read_image

        rgb = read_image(item["uri"])[..., ::-1]
        return [self._cut(c, [rgb]) for c in item["clips"]]

    def _cut(self, clip: dict[str, Any], frames: list[np.ndarray]) -> dict[str, Any]:
        try:
            return _row(clip, np.stack([crop_to_bucket(f, clip["crop"], clip["height"], clip["width"])
                                        for f in frames]))
        except Exception as e:  # noqa: BLE001 - a bad crop box is this clip's error
            return _row(clip, error=f"crop: {type(e).__name__}: {e}")

    def _video(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Decode the file once from its first frame, keeping the frames some clip samples (full size)."""
        from curation.media.decode import decode_video
        from curation.media.probe import MediaError

        wanted: dict[int, list[tuple[str, int]]] = defaultdict(list)  # frame index -> (latent_id, slot)
        frames: dict[str, list[np.ndarray | None]] = {}
        for clip in item["clips"]:
            frames[clip["latent_id"]] = [None] * len(clip["frames"])
            for slot, index in enumerate(clip["frames"]):
                wanted[index].append((clip["latent_id"], slot))
        stream_error = None
        try:
            for f in decode_video(item["uri"], max(wanted) + 1):
                for lid, slot in wanted.get(f.index, ()):
                    frames[lid][slot] = f.bgr(item["max_side"])[..., ::-1]  # BGR -> RGB
        except MediaError as e:
            stream_error = str(e)
        rows = []
        for clip in item["clips"]:
            got = frames[clip["latent_id"]]
            if any(fr is None for fr in got):
                n = sum(fr is not None for fr in got)
                why = stream_error or "the stream ended early"
                rows.append(_row(clip, error=f"decode: {n} of {len(got)} bucket frames ({why})"))
            else:
                rows.append(self._cut(clip, got))  # type: ignore[arg-type]
        return rows
