"""What the VAE trainer reads: the kept clips of a lake, and each step's clip windows from the shared epoch plan.

The data position is the step alone, as in the DiT trainer. Every worker holds the same clip list (``curated``
rows with ``keep = true``, sorted by ``clip_id``; under Ray Train read through ``ray.data.read_lance`` and
``get_dataset_shard``, not split), minus the held-out clips and the clips that cannot give a window of the phase's
length (images for video phases, clips shorter than the window: counted as ``too_short``). The epoch plan
(``dit_plan.EpochPlan`` over one bucket) shuffles the clips from (seed, epoch) and cuts them into global batches of
``batch_size x workers``; worker ``r`` takes the ``r``-th slice of step ``s``'s batch. A clip's window start is drawn
from (seed, epoch, clip), so a resumed run sees exactly the windows an uninterrupted run saw, and within an epoch
no clip window is seen twice or skipped. A clip that fails to decode is replaced by the next clip of the list that
decodes (deterministic, counted as ``decode_error``). With ``cache_mb`` each worker keeps the clips' decoded frames
(at the training size, uint8) in memory up to that budget (``clips.FrameCache``): on a small dataset every clip is
decoded once, not once per window, and the windows stay exactly the ones decoding gives.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wanmodel.data.clips import ClipRecord, FrameCache, NoClipsError, SkipClip, load_sample
from wanmodel.train.dit_plan import EpochPlan, RowGroups

__all__ = ["CLIP_COLUMNS", "ClipBatch", "VAEData", "clip_source", "usable_records"]

CLIP_COLUMNS = ["clip_id", "uri", "media_type", "start_frame", "end_frame", "width", "height",
                "crop_x0", "crop_y0", "crop_x1", "crop_y1"]


def clip_source(lake: Any, allow_uncurated: bool) -> tuple[str, str, list[str]]:
    """(table, filter, columns) that ``read_clip_records`` reads: for ``ray.data.read_lance`` in the workers."""
    if lake.exists("curated"):
        table, where = "curated", "keep = true"
    else:
        table, where = "clips", "status = 'ok'"
    names = set(lake.dataset(table).schema.names)
    return table, where, [c for c in CLIP_COLUMNS if c in names]


def usable_records(records: Sequence[ClipRecord], num_frames: int) -> tuple[list[ClipRecord], Counter[str]]:
    """The clips that can give a ``num_frames`` window, and the count of the others (``too_short``)."""
    usable = [r for r in records if (r.media_type == "image" and num_frames == 1)
              or (r.media_type != "image" and r.num_frames >= num_frames)]
    return usable, Counter({"too_short": len(records) - len(usable)} if len(usable) < len(records) else {})


@dataclass(frozen=True)
class ClipBatch:
    step: int
    epoch: int
    video: torch.Tensor  # (B, 3, T, H, W) float32 in [-1, 1]: this worker's slice of the global batch
    clip_ids: list[str]  # the whole global batch's clips, in order (every worker's slice)


class VAEData:
    """One worker's view of the clip stream: ``batch(step)`` is its slice of step ``step``'s global batch."""

    def __init__(self, records: Sequence[ClipRecord], *, num_frames: int, size: tuple[int, int], batch_size: int,
                 seed: int, rank: int = 0, world: int = 1, cache_mb: float = 0) -> None:
        self.records, self.skipped = usable_records(records, num_frames)
        global_batch = batch_size * world
        if len(self.records) < global_batch:
            raise NoClipsError(f"{len(self.records)} clips can give a {num_frames}-frame window "
                               f"(skipped: {dict(self.skipped)}), fewer than one global batch of {global_batch} "
                               f"({batch_size} per worker x {world})")
        self.num_frames, self.size, self.seed = num_frames, size, seed
        self.plan = EpochPlan(RowGroups.single(len(self.records)), global_batch, seed)
        self.lo, self.local = rank * batch_size, batch_size
        self.cache = FrameCache(size, cache_mb) if cache_mb > 0 else None

    def batch(self, step: int) -> ClipBatch:
        planned = self.plan.batch(step)
        videos = [self._window(row, planned.epoch) for row in planned.rows[self.lo:self.lo + self.local]]
        return ClipBatch(step, planned.epoch, torch.stack(videos),
                         [self.records[row].clip_id for row in planned.rows])

    def first_windows(self, count: int) -> list[torch.Tensor]:
        """Epoch 0's windows of the first ``count`` clips of the list (the same on every worker and resume); the
        skip counters of the training stream stay as they were."""
        counted = Counter(self.skipped)
        windows = [self._window(row, 0) for row in range(min(count, len(self.records)))]
        self.skipped = counted
        return windows

    def _window(self, row: int, epoch: int) -> torch.Tensor:
        """Clip ``row``'s window of this epoch; a clip that does not decode gives way to the next one that does."""
        for k in range(len(self.records)):
            record = self.records[(row + k) % len(self.records)]
            rng = np.random.default_rng([self.seed, epoch, (row + k) % len(self.records)])
            try:
                return load_sample(record, self.num_frames, self.size, rng, self.cache)
            except SkipClip as error:
                self.skipped[error.reason] += 1
        raise NoClipsError(f"no clip of {len(self.records)} gave a {self.num_frames}-frame window "
                           f"(skipped: {dict(self.skipped)})")

