"""Bit-exact H.264 writing and plain decoding of the synthetic videos (PyAV)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: float, crf: int) -> int:
    """Encode BGR uint8 frames to H.264 (yuv420p, libx264) mp4 at ``path``; return the number of frames.

    Single-threaded and without macroblock-tree rate control: x264's mbtree gave different bytes from run to
    run even with one thread; without it the output is bit-exact, which the determinism tests rely on.
    """
    n = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        stream.codec_context.time_base = Fraction(1) / stream.codec_context.framerate
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")
            vf.pts, vf.time_base = n, stream.codec_context.time_base
            container.mux(stream.encode(vf))
            n += 1
        container.mux(stream.encode(None))
    return n


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Decode every frame of the video at ``path`` as BGR uint8."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def write_stream(path: Path, frames: Iterable[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p",
                 fps: float = 24, pts_ms: list[int] | None = None, rotation: int | None = None,
                 options: dict[str, str] | None = None, container_options: dict[str, str] | None = None,
                 format: str | None = None) -> int:
    """Encode BGR uint8 frames with any encoder and pixel format (awkward-media tests); return the frame count.

    ``pts_ms`` gives each frame's presentation time in milliseconds (variable frame rate, gaps); ``rotation``
    writes a display matrix turning the picture that many degrees counter-clockwise for display.
    """
    n = 0
    with av.open(str(path), "w", format=format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        first = None
        for f in frames:
            if first is None:
                first = f
                stream.height, stream.width = f.shape[:2]
                stream.pix_fmt = pix_fmt
                stream.options = {"threads": "1", **(options or {})}
                if pts_ms is not None:
                    stream.codec_context.time_base = Fraction(1, 1000)
                if rotation is not None:
                    stream.set_display_rotation(rotation)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[n], Fraction(1, 1000)
            container.mux(stream.encode(vf))
            n += 1
        container.mux(stream.encode(None))
    return n
