"""2,000 small files through ingest and shots with the process's open file descriptors flat: no container, file
or Lance handle is left open per input."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from curation.lake import Lake
from curation.pipeline import run_curation
from curation.synth.videoio import write_stream
from tests.conftest import demo_config

N_FILES = 2000
SLACK_FDS = 16  # pools and caches may open a few; a leak per file would add hundreds


def _write_tiny_corpus(media: Path, n: int) -> None:
    """``n`` distinct 32x32 H.264 files of 2-4 frames (distinct bytes, so none is an exact duplicate)."""
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        frames = [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(2 + i % 3)]
        write_stream(media / f"tiny_{i:05d}.mp4", frames, options={"preset": "ultrafast"})


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class FdSampler:
    """Counts this process's open file descriptors every ``period`` seconds on a background thread."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(open_fds())

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _ingest_and_shots(lake: Path, media: Path) -> None:
    cfg = demo_config(lake, media, **{"execution.backend": "local", "execution.commit_every": 200,
                                      "stages": ["ingest", "shots"]})
    run_curation(cfg, report=False)


def test_two_thousand_files_keep_open_fds_flat(tmp_path):
    media = tmp_path / "media"
    _write_tiny_corpus(media, N_FILES)
    _write_tiny_corpus(tmp_path / "warmup", 3)
    _ingest_and_shots(tmp_path / "warmup_lake", tmp_path / "warmup")  # thread pools and caches start here

    start, t0 = open_fds(), time.perf_counter()
    with FdSampler() as sampler:
        _ingest_and_shots(tmp_path / "lake", media)
    end, wall = open_fds(), time.perf_counter() - t0
    middle = sampler.samples[len(sampler.samples) // 2]
    print(f"{N_FILES} files in {wall:.1f} s; open fds start {start}, middle {middle}, max {max(sampler.samples)}, "
          f"end {end} ({len(sampler.samples)} samples)")

    lake = Lake(str(tmp_path / "lake"))
    videos = lake.read("videos", columns=["status"]).column("status").to_pylist()
    clips = lake.read("clips", columns=["video_id", "status"]).to_pylist()
    assert videos.count("ok") == N_FILES
    assert len({c["video_id"] for c in clips if c["status"] == "ok"}) == N_FILES
    assert len(sampler.samples) >= 3
    assert max(sampler.samples) - start <= SLACK_FDS
    assert abs(end - start) <= SLACK_FDS
