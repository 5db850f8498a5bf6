"""Stage 2, shot split, fused with the classical scorers: one decode per video.

Every frame goes to PySceneDetect's detector (adaptive by default: a frame's content change relative to its
neighbours', which keeps fast camera motion and shake from reading as cuts) as a tiny BGR image; frames at the sampling rate are kept at
analysis size for the current shot only. When a cut (or the length cap) closes a shot, the shot becomes a clip
row with a few JPEG keyframes, and the configured scorers run on its frames at once, so memory is bounded by the
longest clip, not the video.
"""
from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import AdaptiveDetector, ContentDetector
from scenedetect.detector import SceneDetector

from curation.config import ShotsConfig
from curation.lake.schemas import STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake
from curation.media.decode import decode_video, encode_jpeg, image_analysis_frame, is_sampled
from curation.media.frames import ClipFrames
from curation.media.probe import MediaError, read_image
from curation.stages.analyze import AnalysisSettings, score_clip
from curation.stages.runner import Rows, StageResult, run_items

STAGE = "shots"


def clip_id_for(video_id: str, start: int, end: int) -> str:
    return f"{video_id}:{start:06d}-{end:06d}"


@dataclass(frozen=True)
class ShotSettings:
    shots: ShotsConfig
    analysis: AnalysisSettings


def _keyframes(frames: list[np.ndarray], indices: list[int], count: int, quality: int) -> tuple[list[bytes], list[int]]:
    picks = sorted({int(round(x)) for x in np.linspace(0, len(frames) - 1, min(count, len(frames)))})
    return [encode_jpeg(frames[i], quality) for i in picks], [indices[i] for i in picks]


class _ShotBuilder:
    """Collects the sampled frames of the current shot and turns closed shots into clip + scorer rows."""

    def __init__(self, video: dict[str, Any], settings: ShotSettings) -> None:
        self.video, self.settings = video, settings
        self.fps = float(video["fps"])
        self.rows: Rows = {"clips": []}
        self.start = 0
        self.frames: list[np.ndarray] = []
        self.indices: list[int] = []
        self.times: dict[int, tuple[float, float | None]] = {}  # index -> (time_s, duration_s), open shot on
        self.rotation = 0

    def stamp(self, frame: Any) -> None:
        """Record a decoded frame's presentation time (as soon as it is decoded, before the detector's delay)."""
        self.times[frame.index] = (frame.time_s, frame.duration_s)
        self.rotation = frame.rotation

    def span_s(self, start: int, end: int) -> tuple[float, float]:
        """Seconds of ``[start, end)``: the first frame's time, and the time of frame ``end`` or, past the last
        decoded frame, the last frame's time plus its duration (else the previous gap, else one nominal frame)."""
        if end in self.times:
            return self.times[start][0], self.times[end][0]
        last_t, last_d = self.times[end - 1]
        if last_d is None:
            prev = self.times.get(end - 2)
            last_d = last_t - prev[0] if prev is not None and last_t > prev[0] else 1.0 / self.fps
        return self.times[start][0], last_t + last_d

    def add(self, index: int, frame: Any) -> None:
        if is_sampled(index, self.fps, self.settings.analysis.sample_fps, self.start):
            self.frames.append(frame.bgr(self.settings.analysis.analysis_max_side))
            self.indices.append(index)

    def close(self, end: int) -> None:
        """Close the shot ``[start, end)``; frames sampled at or after ``end`` move to the next shot."""
        keep = [i for i, ix in enumerate(self.indices) if ix < end]
        frames, indices = [self.frames[i] for i in keep], [self.indices[i] for i in keep]
        if end > self.start and frames:
            self._emit(self.start, end, frames, indices)
        self.frames = [f for f, ix in zip(self.frames, self.indices) if ix >= end]
        self.indices = [ix for ix in self.indices if ix >= end]
        self.times = {ix: t for ix, t in self.times.items() if ix >= end - 2}  # end - 2: the fallback gap
        self.start = end

    def _emit(self, start: int, end: int, frames: list[np.ndarray], indices: list[int]) -> None:
        v, cfg = self.video, self.settings.shots
        clip_id = clip_id_for(v["video_id"], start, end)
        jpegs, kf_idx = _keyframes(frames, indices, cfg.keyframes, cfg.jpeg_quality)
        start_s, end_s = self.span_s(start, end)
        self.rows["clips"].append({
            "clip_id": clip_id, "video_id": v["video_id"], "uri": v["uri"], "media_type": "video",
            "start_frame": start, "end_frame": end, "start_s": start_s, "end_s": end_s, "rotation": self.rotation,
            "fps": self.fps, "width": v["width"], "height": v["height"], "duration_s": end_s - start_s,
            "keyframes": jpegs, "keyframe_indices": kf_idx, "status": STATUS_OK,
        })
        clip = ClipFrames(clip_id, "video", self.fps, min(self.settings.analysis.sample_fps, self.fps),
                          int(v["width"]), int(v["height"]), np.stack(frames), np.asarray(indices, np.int64),
                          start, end, start_s, end_s)
        for table, rows in score_clip(clip, self.settings.analysis).items():
            self.rows.setdefault(table, []).extend(rows)


def make_detector(cfg: ShotsConfig, fps: float) -> tuple[SceneDetector, int]:
    """The configured PySceneDetect detector and how many frames late it reports a cut."""
    min_len = max(1, round(cfg.min_shot_s * fps))
    if cfg.detector == "adaptive":
        det = AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_scene_len=min_len,
                               window_width=cfg.window_width, min_content_val=cfg.min_content_val)
        return det, cfg.window_width + 1
    return ContentDetector(threshold=cfg.threshold, min_scene_len=min_len,
                           filter_mode=FlashFilter.Mode.SUPPRESS), 1


def split_video(video: dict[str, Any], settings: ShotSettings) -> Rows:
    """Clips (and their scorer rows) of one ``videos`` row. A stream that breaks mid-way keeps the clips
    decoded so far and adds an ``error`` clip row naming where it broke."""
    if video["media_type"] == "image":
        return _image_clip(video, settings)
    cfg = settings.shots
    fps = float(video["fps"])
    builder = _ShotBuilder(video, settings)
    detector, delay = make_detector(cfg, fps)
    max_len = max(1, int(cfg.max_clip_s * fps))
    cuts: list[int] = []
    # Frames wait ``delay`` frames before joining a shot, until the detector can no longer cut before them;
    # sampling is then decided relative to the right shot start.
    waiting: deque[Any] = deque()

    def assign(frame: Any) -> None:
        while cuts and cuts[0] <= frame.index:
            builder.close(cuts.pop(0))
        if frame.index - builder.start >= max_len:
            builder.close(frame.index)
        builder.add(frame.index, frame)

    last = -1
    try:
        for frame in decode_video(video["uri"], threads=cfg.decode_threads):
            builder.stamp(frame)
            tiny = frame.bgr(cfg.detect_width, fast=True)
            found = detector.process_frame(FrameTimecode(frame.index, fps), tiny)
            cuts.extend(int(c.frame_num) for c in found if int(c.frame_num) > builder.start)
            waiting.append(frame)
            while waiting and waiting[0].index <= frame.index - delay:
                assign(waiting.popleft())
            last = frame.index
        if last >= 0:
            cuts.extend(int(c.frame_num) for c in detector.post_process(FrameTimecode(last, fps)))
    except MediaError as e:
        while waiting:
            assign(waiting.popleft())
        builder.close(last + 1)
        listed = int(video.get("num_frames") or 0)
        note = f" (the header lists {listed} frames)" if listed > last + 1 else ""
        builder.rows["clips"].append(_error_clip(video, f"{e}{note}", start=last + 1))
        return builder.rows
    while waiting:
        assign(waiting.popleft())
    for c in cuts:
        builder.close(c)
    builder.close(last + 1)
    if last < 0:
        builder.rows["clips"].append(_error_clip(video, "no frame decoded", start=0))
    expected = int(video.get("num_frames") or 0)
    if last >= 0 and expected - (last + 1) > max(3, 0.02 * expected):
        # FFmpeg ends a cut-off stream quietly: the container promised more frames than decoded.
        builder.rows["clips"].append(_error_clip(
            video, f"stream ended after {last + 1} of {expected} frames (truncated or corrupt)", start=last + 1))
    return builder.rows


def _image_clip(video: dict[str, Any], settings: ShotSettings) -> Rows:
    image = image_analysis_frame(read_image(video["uri"]), settings.analysis.analysis_max_side)
    clip_id = clip_id_for(video["video_id"], 0, 1)
    rows: Rows = {"clips": [{
        "clip_id": clip_id, "video_id": video["video_id"], "uri": video["uri"], "media_type": "image",
        "start_frame": 0, "end_frame": 1, "start_s": 0.0, "end_s": 0.0, "rotation": video.get("rotation") or 0,
        "fps": 0.0, "width": video["width"], "height": video["height"],
        "duration_s": 0.0, "keyframes": [encode_jpeg(image, settings.shots.jpeg_quality)], "keyframe_indices": [0],
        "status": STATUS_OK,
    }]}
    clip = ClipFrames(clip_id, "image", 0.0, 0.0, int(video["width"]), int(video["height"]), image[None],
                      np.zeros(1, np.int64), 0, 1)
    rows.update(score_clip(clip, settings.analysis))
    return rows


def _error_clip(video: dict[str, Any], message: str, start: int) -> dict[str, Any]:
    return {"clip_id": f"{video['video_id']}:error", "video_id": video["video_id"], "uri": video["uri"],
            "media_type": video["media_type"], "start_frame": start, "status": STATUS_ERROR, "error": message}


def _on_error(item: dict[str, Any], message: str) -> Rows:
    return {"clips": [_error_clip(item, message, start=0)]}


def run_shots(lake: Lake, settings: ShotSettings, **exec_kwargs: Any) -> StageResult:
    """Split every ``ok`` video that has no clip row yet; scorer rows are written before the clip rows, so a
    video counts as done only once everything it produced is committed."""
    videos = lake.read("videos", columns=["video_id", "uri", "media_type", "fps", "width", "height", "num_frames",
                                          "rotation"],
                       filter="status = 'ok'")
    done = set(lake.read("clips", columns=["video_id"]).column("video_id").to_pylist())
    todo = [i for i, v in enumerate(videos.column("video_id").to_pylist()) if v not in done]
    items = videos.take(pa.array(todo, pa.int64())) if todo else videos.slice(0, 0)
    tables = [f"stages/{n}" for n in settings.analysis.scorers] + ["clips"]
    return run_items(STAGE, items, functools.partial(split_video, settings=settings), _on_error, lake, tables,
                     **exec_kwargs)
