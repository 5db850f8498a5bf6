"""Training samples for the Wan-VAE from a curated lake: kept clips -> cropped, resized windows in [-1, 1].

A sample is a float32 tensor (C=3, T, H, W) in [-1, 1], RGB: ``T = 1 + 4k`` frames of one clip for the video
stages, or ``T = 1`` (one frame of a video, or an image) for the image-first stage.

The sample stream is a pure function of ``(seed, index)``: sample ``i`` comes from clip ``perm_e[i % n]`` where
``perm_e`` is the clip order of epoch ``e = i // n``, and its window start is drawn from a generator seeded by
``(seed, i)``. So a resumed run asks for ``start_index`` and gets exactly the samples an uninterrupted run saw,
with no data-loader state to checkpoint. Bad clips (undecodable, too short for the window) are skipped and
counted; the stream moves on to the next index.

Two front ends over the same ``load_sample``: ``ClipDataset`` (a torch ``IterableDataset``, no Ray) and
``ray_clip_dataset`` (a ``ray.data.Dataset`` for ``ray.train.get_dataset_shard``).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = [
    "ClipDataset",
    "ClipRecord",
    "FrameCache",
    "NoClipsError",
    "Sample",
    "SkipClip",
    "clip_records",
    "load_sample",
    "ray_clip_dataset",
    "read_clip_records",
    "split_records",
]

log = logging.getLogger(__name__)


class NoClipsError(ValueError):
    """The lake holds no clip that training could use."""


class SkipClip(Exception):
    """A clip that cannot give a sample (decode failure, too short); counted and skipped, never fatal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClipRecord:
    """What the loader needs of one kept clip: where it is, which frames, and the crop box (source pixels)."""

    clip_id: str
    uri: str
    media_type: str  # "video" | "image"
    start_frame: int
    end_frame: int  # exclusive
    width: int
    height: int
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


class Sample(NamedTuple):
    index: int  # position in the sample stream (resume from index + 1)
    clip_id: str
    video: torch.Tensor  # (3, T, H, W) float32 in [-1, 1]


# ---------------------------------------------------------------------------------------------- reading
def read_clip_records(lake: Any, *, allow_uncurated: bool = False) -> list[ClipRecord]:
    """Kept clips of ``lake`` (a ``curation.lake.Lake`` or a path/URI), sorted by ``clip_id``.

    Reads ``curated`` rows with ``keep = true``. When the lake has no ``curated`` table and
    ``allow_uncurated`` is set, falls back to ``clips`` rows with ``status = 'ok'`` (full-frame crop).
    Raises ``NoClipsError`` when nothing is left.
    """
    from curation.lake import Lake  # lake I/O stays out of the model core

    lake = lake if isinstance(lake, Lake) else Lake(str(lake))
    if lake.exists("curated"):
        table = lake.read("curated", filter="keep = true")
        source = "curated (keep = true)"
    elif allow_uncurated and lake.exists("clips"):
        table = lake.read("clips", filter="status = 'ok'")
        source = "clips (status = 'ok')"
    else:
        hint = " or 'clips'" if allow_uncurated else " (set allow_uncurated to read 'clips')"
        raise NoClipsError(f"lake {lake.root!r} has no 'curated' table{hint}; run curation first")
    records = clip_records(table.to_pylist())
    if not records:
        raise NoClipsError(f"lake {lake.root!r}: no kept clips in {source}; nothing to train on")
    return records


def clip_records(rows: Sequence[dict[str, Any]]) -> list[ClipRecord]:
    """``ClipRecord``s of ``curated`` (or ``clips``) rows, sorted by ``clip_id`` (no crop box: the full frame)."""
    records = []
    for row in rows:
        width, height = int(row.get("width") or 0), int(row.get("height") or 0)
        crop = tuple(row.get(k) for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1"))
        if any(c is None for c in crop):
            crop = (0, 0, width, height)
        records.append(ClipRecord(
            clip_id=row["clip_id"], uri=row["uri"], media_type=row.get("media_type") or "video",
            start_frame=int(row.get("start_frame") or 0), end_frame=int(row.get("end_frame") or 1),
            width=width, height=height, crop=tuple(int(c) for c in crop),  # type: ignore[arg-type]
        ))
    return sorted(records, key=lambda r: r.clip_id)


def split_records(records: Sequence[ClipRecord], num_holdout: int, seed: int = 0
                  ) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """(train, held-out): ``num_holdout`` clips drawn with ``seed``, the rest for training."""
    if num_holdout <= 0:
        return list(records), []
    if num_holdout >= len(records):
        raise NoClipsError(f"cannot hold out {num_holdout} of {len(records)} clips and still train")
    order = np.random.default_rng(seed).permutation(len(records))
    held = sorted(order[:num_holdout].tolist())
    held_set = set(held)
    return [r for i, r in enumerate(records) if i not in held_set], [records[i] for i in held]


# --------------------------------------------------------------------------------------------- decoding
def _fit(image_rgb: np.ndarray, crop: tuple[int, int, int, int], source_size: tuple[int, int],
         size: tuple[int, int]) -> np.ndarray:
    """Apply the stored crop box (scaled to the decoded size), resize the short side, centre-crop to ``size``."""
    h, w = image_rgb.shape[:2]
    sx, sy = w / max(source_size[0], 1), h / max(source_size[1], 1)
    x0, y0 = max(0, int(round(crop[0] * sx))), max(0, int(round(crop[1] * sy)))
    x1, y1 = min(w, int(round(crop[2] * sx))), min(h, int(round(crop[3] * sy)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        x0, y0, x1, y1 = 0, 0, w, h
    image_rgb = image_rgb[y0:y1, x0:x1]
    out_h, out_w = size
    ch, cw = image_rgb.shape[:2]
    scale = max(out_h / ch, out_w / cw)
    new_w, new_h = max(out_w, int(round(cw * scale))), max(out_h, int(round(ch * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image_rgb = cv2.resize(image_rgb, (new_w, new_h), interpolation=interp)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    return image_rgb[top:top + out_h, left:left + out_w]


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    array = np.stack(frames)  # (T, H, W, 3) uint8 RGB
    video = torch.from_numpy(array).permute(3, 0, 1, 2).float()
    return video / 127.5 - 1.0


def _read_image(record: ClipRecord, size: tuple[int, int]) -> np.ndarray:
    image = cv2.imread(record.uri, cv2.IMREAD_COLOR)
    if image is None:
        raise SkipClip("decode_error", f"{record.clip_id}: cannot read image {record.uri}")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return _fit(rgb, record.crop, (rgb.shape[1], rgb.shape[0]), size)


def _decode_frames(record: ClipRecord, size: tuple[int, int], start: int, end: int) -> list[np.ndarray]:
    """Source frames [start, end) of a video clip, cropped and fitted to ``size`` (fewer if the file ends)."""
    from curation.media.decode import decode_video
    from curation.media.probe import MediaError

    frames: list[np.ndarray] = []
    try:
        for frame in decode_video(record.uri, end_frame=end, threads=1):
            if frame.index < start:
                continue
            bgr = frame.bgr(1 << 15)  # full size (bgr never upscales); crop and resize happen in _fit
            source = (record.width or bgr.shape[1], record.height or bgr.shape[0])  # the crop box's frame
            frames.append(_fit(bgr[:, :, ::-1], record.crop, source, size))
    except (MediaError, OSError, ValueError) as e:
        raise SkipClip("decode_error", f"{record.clip_id}: {e}") from e
    return frames


class FrameCache:
    """Every frame of a clip fitted to one size, kept in memory (uint8) up to ``budget_mb``: on a small dataset
    each clip is decoded once instead of once per window. A clip that would not fit in what is left of the budget
    is not kept (its windows are decoded as usual); the windows are the same either way. A clip that failed to
    decode fails again at once, without decoding it again."""

    def __init__(self, size: tuple[int, int], budget_mb: float) -> None:
        self.size, self.budget, self.used = size, int(budget_mb * 2**20), 0
        self.clips: dict[str, np.ndarray] = {}
        self.failed: dict[str, SkipClip] = {}

    def frames(self, record: ClipRecord) -> np.ndarray | None:
        """(T, H, W, 3) uint8 RGB: the whole clip (an image: one frame), or None when it does not fit."""
        if record.clip_id in self.clips:
            return self.clips[record.clip_id]
        if record.clip_id in self.failed:
            raise self.failed[record.clip_id]
        count = 1 if record.media_type == "image" else record.num_frames
        if self.used + count * self.size[0] * self.size[1] * 3 > self.budget:
            return None
        try:
            decoded = ([_read_image(record, self.size)] if record.media_type == "image" else
                       _decode_frames(record, self.size, record.start_frame, record.end_frame))
        except SkipClip as error:
            self.failed[record.clip_id] = error
            raise
        array = np.stack(decoded) if decoded else np.zeros((0, *self.size, 3), np.uint8)
        self.clips[record.clip_id] = array
        self.used += array.nbytes
        return array


def load_sample(record: ClipRecord, num_frames: int, size: tuple[int, int], rng: np.random.Generator,
                cache: FrameCache | None = None) -> torch.Tensor:
    """One training window of ``record``: (3, num_frames, H, W) float32 in [-1, 1].

    The window start is drawn from ``rng`` among the starts that fit in the clip. Raises ``SkipClip``
    (reason ``too_short`` or ``decode_error``) when the clip cannot give one. ``cache`` (of ``size``) serves the
    window from the clip's decoded frames when it holds them or can take them.
    """
    if cache is not None and cache.size != size:
        raise ValueError(f"the frame cache holds {cache.size} frames, the window asks for {size}")
    image = record.media_type == "image"
    if image and num_frames != 1:
        raise SkipClip("too_short", f"{record.clip_id}: an image cannot give {num_frames} frames")
    if not image and record.num_frames < num_frames:
        raise SkipClip("too_short", f"{record.clip_id}: {record.num_frames} frames < {num_frames}")
    offset = 0 if image else int(rng.integers(0, record.num_frames - num_frames + 1))
    start = record.start_frame + offset
    cached = cache.frames(record) if cache is not None else None
    if cached is not None:
        frames = list(cached[offset:offset + num_frames])
    elif image:
        frames = [_read_image(record, size)]
    else:
        frames = _decode_frames(record, size, start, start + num_frames)
    if len(frames) < num_frames:
        raise SkipClip("too_short", f"{record.clip_id}: decoded {len(frames)} of {num_frames} frames from {start}")
    return _to_tensor(frames)


def _clip_order(num_clips: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_clips)
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_clips)


def sample_at(records: Sequence[ClipRecord], index: int, *, num_frames: int, size: tuple[int, int],
              seed: int, shuffle: bool = True) -> tuple[ClipRecord, torch.Tensor]:
    """Sample ``index`` of the stream (see the module docstring); may raise ``SkipClip``."""
    epoch, position = divmod(index, len(records))
    record = records[int(_clip_order(len(records), seed, epoch, shuffle)[position])]
    return record, load_sample(record, num_frames, size, np.random.default_rng([seed, index]))


# ------------------------------------------------------------------------------------------ torch front
class ClipDataset(IterableDataset):
    """Samples of kept clips as a torch ``IterableDataset`` (no Ray needed).

    Yields ``Sample(index, clip_id, video)`` for indices ``start_index, start_index + 1, ...`` (forever when
    ``num_samples`` is None). Under a ``DataLoader`` with workers, worker ``w`` takes indices ``= w mod n``.
    ``skipped`` counts skipped clips by reason (``too_short``, ``decode_error``), in this process.
    """

    def __init__(self, records: Sequence[ClipRecord], *, num_frames: int, size: int | tuple[int, int],
                 seed: int = 0, shuffle: bool = True, start_index: int = 0, num_samples: int | None = None,
                 max_consecutive_skips: int | None = None) -> None:
        super().__init__()
        if not records:
            raise NoClipsError("ClipDataset needs at least one clip")
        self.records = list(records)
        self.num_frames = int(num_frames)
        self.size = _check_size(size)
        self.seed = seed
        self.shuffle = shuffle
        self.start_index = start_index
        self.num_samples = num_samples
        # a full pass over every clip without one sample means the data cannot feed training at all
        self.max_consecutive_skips = max_consecutive_skips or 2 * len(self.records)
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index, consecutive = self.start_index, 0
        stop = None if self.num_samples is None else self.start_index + self.num_samples
        while stop is None or index < stop:
            if index % workers == worker:
                try:
                    record, video = sample_at(self.records, index, num_frames=self.num_frames, size=self.size,
                                              seed=self.seed, shuffle=self.shuffle)
                except SkipClip as e:
                    self.skipped[e.reason] += 1
                    consecutive += 1
                    log.warning("skipping clip (%s): %s", e.reason, e)
                    if consecutive >= self.max_consecutive_skips:
                        raise NoClipsError(
                            f"{consecutive} clips in a row gave no {self.num_frames}-frame sample "
                            f"(skipped: {dict(self.skipped)}); are the clips long enough?") from e
                else:
                    consecutive = 0
                    yield Sample(index, record.clip_id, video)
            index += 1


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(f"training size must be positive multiples of 8, got {height}x{width}")
    return height, width


# -------------------------------------------------------------------------------------------- Ray front
class _DecodeSamples:
    """``flat_map`` function: a row ``{"index"}`` -> zero or one sample rows (a skipped clip gives none)."""

    def __init__(self, records: list[dict], num_frames: int, size: tuple[int, int], seed: int,
                 shuffle: bool) -> None:
        self.records = [ClipRecord(**{**r, "crop": tuple(r["crop"])}) for r in records]
        self.kwargs = dict(num_frames=num_frames, size=size, seed=seed, shuffle=shuffle)

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        index = int(row["index"])
        try:
            record, video = sample_at(self.records, index, **self.kwargs)
        except SkipClip as e:
            log.warning("skipping clip (%s): %s", e.reason, e)
            return []
        # numeric columns only: iter_torch_batches converts every column to a tensor
        return [{"index": index, "video": video.numpy()}]


def ray_clip_dataset(records: Sequence[ClipRecord], *, num_frames: int, size: int | tuple[int, int],
                     seed: int = 0, shuffle: bool = True, start_index: int = 0, num_samples: int | None = None):
    """A ``ray.data.Dataset`` of the same samples as ``ClipDataset`` (one pass of ``num_samples``, default one
    per clip), with columns ``index`` and ``video`` (float32 (3, T, H, W)). Pass it to
    ``TorchTrainer(datasets={"train": ...})`` and read it with ``ray.train.get_dataset_shard("train")``.
    Skipped clips are dropped (and logged by the worker that decoded them)."""
    import ray.data

    if not records:
        raise NoClipsError("ray_clip_dataset needs at least one clip")
    count = len(records) if num_samples is None else num_samples
    plain = [{**asdict(r), "crop": list(r.crop)} for r in records]
    decode = _DecodeSamples(plain, int(num_frames), _check_size(size), seed, shuffle)
    indices = ray.data.from_items([{"index": start_index + i} for i in range(count)])
    return indices.flat_map(decode)
