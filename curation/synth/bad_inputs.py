"""Broken and odd input files, to test that ingestion fails cleanly (one error row, no crash)."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from curation.synth.videoio import write_video
from curation.synth.scenes import render_scene, render_still


def _write_tiny(path: Path) -> None:
    """A 1x1-pixel H.264 video. libx264 refuses odd sizes in yuv420p, so it uses yuv444p (which allows 1x1)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "yuv444p"
        stream.options = {"threads": "1"}
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((1, 1, 3), 10 * i, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_audio_only(path: Path, seconds: float = 2.0, rate: int = 44100) -> None:
    """An mp4 holding one AAC audio stream (a 440 Hz tone) and no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        n, block = int(seconds * rate), 1024
        t = np.arange(n, dtype=np.float32) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, n, block):
            chunk = tone[start : start + block][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_bad_inputs(dir: Path) -> dict[str, str]:
    """Write the bad inputs into ``dir`` (created if needed); return ``{file name: what is wrong with it}``."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "empty.mp4").write_bytes(b"")
    full = out / "_truncated_src.mp4"
    write_video(full, render_scene("optimal", 7, 320, 180, 72), 320, 180, 24, 20)
    data = full.read_bytes()
    (out / "truncated.mp4").write_bytes(data[: int(len(data) * 0.4)])
    full.unlink()
    (out / "notvideo.mp4").write_text("This is a plain text file, not a video.\n" * 20)
    ok, png = cv2.imencode(".png", render_still(3, 320, 180))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    (out / "image_wrong_ext.mp4").write_bytes(png.tobytes())
    _write_tiny(out / "tiny_1x1.mp4")
    _write_audio_only(out / "audio_only.mp4")
    return {
        "empty.mp4": "zero-byte file",
        "truncated.mp4": "valid H.264 mp4 cut to its first 40% of bytes (moov atom or data missing)",
        "notvideo.mp4": "plain text file with a .mp4 extension",
        "image_wrong_ext.mp4": "a PNG image (320x180) with a .mp4 extension",
        "tiny_1x1.mp4": "a valid 1x1-pixel H.264 (yuv444p) video of 24 frames, far below any resolution threshold",
        "audio_only.mp4": "an mp4 with only an AAC audio stream (2 s), no video stream",
    }
