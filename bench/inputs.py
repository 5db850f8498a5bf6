"""What a Wan-Bench run scores: the items (a ``samples`` table or a folder of mp4s), their prompt metadata from the
prompt suite, and decoding one item's bytes into the frames every dimension reads.

A folder's videos are keyed by their path relative to the folder; the prompt is the file stem with a trailing
``-<n>`` (VBench's ``{prompt}-{index}.mp4``) removed, unless a ``prompts.jsonl`` in the prompt suite names the file.
The prompt suite is JSONL, one object per prompt: ``prompt``, optional ``dimensions`` (or ``dimension``: the
dimensions that prompt is meant for), optional ``meta`` (objects, counts, relations, camera move, action, style),
optional ``file`` (a folder video it belongs to). A record's other keys are taken as metadata too.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".png", ".jpg", ".jpeg")
_RESERVED = {"prompt", "dimensions", "dimension", "meta", "file", "id"}


@dataclass(frozen=True)
class SuiteEntry:
    """One prompt of the suite: the dimensions it is for (None: every configured one) and its metadata."""

    prompt: str
    dimensions: tuple[str, ...] | None
    meta: dict[str, Any]


def read_suite(path: str | Path | None) -> tuple[dict[str, SuiteEntry], dict[str, SuiteEntry]]:
    """The suite as ``({prompt: entry}, {file: entry})``; ``None`` is an empty suite. A bad line is an error naming
    the file and line (the suite is the benchmark's definition: a silent skip would change it)."""
    by_prompt: dict[str, SuiteEntry] = {}
    by_file: dict[str, SuiteEntry] = {}
    if path is None:
        return by_prompt, by_file
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path} line {number}: invalid JSON ({error})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path} line {number}: need an object with a 'prompt' string")  # noqa: TRY004
        entry = _entry(record)
        by_prompt[entry.prompt] = _merge(by_prompt.get(entry.prompt), entry)
        if isinstance(record.get("file"), str):
            by_file[record["file"]] = entry
    return by_prompt, by_file


def _entry(record: dict[str, Any]) -> SuiteEntry:
    dims = record.get("dimensions", record.get("dimension"))
    if isinstance(dims, str):
        dims = [dims]
    meta = {k: v for k, v in record.items() if k not in _RESERVED}
    meta.update(record.get("meta") or {})
    return SuiteEntry(record["prompt"], tuple(dims) if dims else None, meta)


def _merge(old: SuiteEntry | None, new: SuiteEntry) -> SuiteEntry:
    """One prompt listed for several dimensions: the union of their dimensions and metadata."""
    if old is None:
        return new
    dims = None if old.dimensions is None or new.dimensions is None else \
        tuple(dict.fromkeys(old.dimensions + new.dimensions))
    return SuiteEntry(new.prompt, dims, {**old.meta, **new.meta})


def prompt_from_filename(name: str) -> str:
    """VBench's naming: ``a red fox in snow-0.mp4`` -> ``a red fox in snow``."""
    return re.sub(r"-\d+$", "", Path(name).stem)


def folder_items(root: str | Path) -> list[dict[str, Any]]:
    """Every video (and image) under ``root``: ``{sample_id, uri, prompt}``, sorted by path."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"videos_dir: no such folder {root}")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [{"sample_id": str(p.relative_to(base)), "uri": str(p), "prompt": prompt_from_filename(p.name)}
            for p in files]


# --------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Decoded:
    """An item's frames as the dimensions read them."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float


def decode_bytes(data: bytes, max_frames: int, max_side: int, default_fps: float = 16.0) -> Decoded:
    """Decode an mp4 (or any container PyAV reads) or a PNG/JPEG image; keep at most ``max_frames`` evenly spaced
    frames (the frame rate is scaled to match) with the longer side at most ``max_side``."""
    if not data:
        raise ValueError("empty media bytes")
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        return Decoded(_image(data, max_side)[None], default_fps)
    frames, fps = _video(data, max_side)
    if not frames:
        raise ValueError("the video has no decodable frame")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    return Decoded(np.stack([frames[i] for i in picks]), fps * len(picks) / len(frames))


def _image(data: bytes, max_side: int) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cannot decode the image bytes")
    return _fit(np.ascontiguousarray(bgr[..., ::-1]), max_side)


def _video(data: bytes, max_side: int) -> tuple[list[np.ndarray], float]:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 16.0)
            frames = [_fit(f.to_ndarray(format="rgb24"), max_side) for f in container.decode(stream)]
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot decode the video: {error}") from None
    return frames, fps


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def thumbnail_png(frames: np.ndarray, side: int = 128) -> bytes:
    """A PNG of the middle frame, the longer side ``side`` pixels."""
    import cv2

    mid = _fit(frames[len(frames) // 2], side)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(mid[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()
