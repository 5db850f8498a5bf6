"""Broken and odd input files, to test that ingestion fails cleanly (one error row, no crash), and awkward but
usable ones (rotated, variable frame rate, 10-bit, alpha, grayscale, odd sizes...) that must become correct clips."""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from curation.synth.scenes import render_scene, render_still
from curation.synth.videoio import write_stream, write_video


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


# --- The awkward-media corpus: odd but usable files (each must become a correct clip) and more broken ones ------

AWKWARD_SIZE = (160, 96)  # width, height of the usable awkward videos
SPACED_NAME = "clip with spaces – ünïcødé 日本.mp4"
# Variable frame rate: 24 frames 40 ms apart, a hole of 1.04 s, 24 more frames 40 ms apart.
VFR_PTS_MS = [i * 40 for i in range(24)] + [2000 + i * 40 for i in range(24)]
TRUNCATED_FRAMES = 72  # frames the header of ``header_more_frames.mp4`` lists; about half are in the file

# file name -> (what it is, the encoder it needs or None)
AWKWARD: dict[str, tuple[str, str | None]] = {
    "rotated_90.mp4": ("H.264 160x96 coded, display matrix turning it 90 degrees (a phone held upright)", "libx264"),
    "vfr_gap.mp4": ("H.264 with variable frame rate: 25 fps, a 1.04 s hole after frame 24", "libx264"),
    "hevc_10bit.mp4": ("HEVC Main 10 (yuv420p10le)", "libx265"),
    "vp9_alpha.webm": ("VP9 with an alpha channel (yuva420p) in WebM", "libvpx-vp9"),
    "grayscale.mkv": ("FFV1 grayscale (gray, no chroma planes) in Matroska", "ffv1"),
    "odd_444.mp4": ("H.264 4:4:4 (yuv444p) at odd dimensions 161x97", "libx264"),
    "one_fps.mp4": ("H.264 at 1 fps, 8 frames (8 s)", "libx264"),
    "all_black.mp4": ("H.264, every frame black", "libx264"),
    "mpegts_offset.ts": ("H.264 in MPEG-TS, whose timestamps start after zero", "libx264"),
    SPACED_NAME: ("H.264 at a path with spaces and non-ASCII characters", "libx264"),
    "header_more_frames.mp4": ((f"mp4 with its index first (faststart) listing {TRUNCATED_FRAMES} frames, cut to "
                                "half its bytes: the header claims more frames than the stream has"), "libx264"),
    "jpeg_named.mp4": ("a JPEG image with a .mp4 extension", None),
    "bomb.png": ("a PNG whose header claims 40000x40000 pixels (decompression bomb), a few bytes of data", None),
    "dangling_link.mp4": ("a symbolic link whose target does not exist", None),
}


def _scene(n: int, seed: int, width: int = AWKWARD_SIZE[0], height: int = AWKWARD_SIZE[1]) -> list[np.ndarray]:
    return list(render_scene("optimal", seed, width, height, n))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png_bomb(path: Path, width: int = 40000, height: int = 40000) -> None:
    """A PNG header claiming ``width x height`` RGB pixels, with one compressed row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def _write_header_more_frames(path: Path) -> None:
    write_stream(path, _scene(TRUNCATED_FRAMES, 15), container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _writers(out: Path) -> dict[str, Callable[[], object]]:
    """How each awkward file is written."""
    gray = [np.repeat(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2) for f in _scene(36, 13)]
    ok, jpeg = cv2.imencode(".jpg", render_still(5, 320, 180))
    return {
        "rotated_90.mp4": lambda: write_stream(out / "rotated_90.mp4", _scene(48, 10), rotation=90),
        "vfr_gap.mp4": lambda: write_stream(out / "vfr_gap.mp4", _scene(len(VFR_PTS_MS), 11), pts_ms=VFR_PTS_MS),
        "hevc_10bit.mp4": lambda: write_stream(out / "hevc_10bit.mp4", _scene(36, 12), "libx265", "yuv420p10le",
                                               options={"x265-params": "log-level=error:pools=1:frame-threads=1"}),
        "vp9_alpha.webm": lambda: write_stream(out / "vp9_alpha.webm", _scene(36, 14), "libvpx-vp9", "yuva420p",
                                               options={"deadline": "realtime", "cpu-used": "8"}),
        "grayscale.mkv": lambda: write_stream(out / "grayscale.mkv", gray, "ffv1", "gray"),
        "odd_444.mp4": lambda: write_stream(out / "odd_444.mp4", _scene(36, 16, 161, 97), pix_fmt="yuv444p"),
        "one_fps.mp4": lambda: write_stream(out / "one_fps.mp4", _scene(8, 17), fps=1),
        "all_black.mp4": lambda: write_stream(out / "all_black.mp4", [np.zeros((96, 160, 3), np.uint8)] * 36),
        "mpegts_offset.ts": lambda: write_stream(out / "mpegts_offset.ts", _scene(36, 18), format="mpegts"),
        SPACED_NAME: lambda: write_stream(out / SPACED_NAME, _scene(36, 19)),
        "header_more_frames.mp4": lambda: _write_header_more_frames(out / "header_more_frames.mp4"),
        "jpeg_named.mp4": lambda: ok and (out / "jpeg_named.mp4").write_bytes(jpeg.tobytes()),
        "bomb.png": lambda: _write_png_bomb(out / "bomb.png"),
        "dangling_link.mp4": lambda: os.symlink("no_such_target.mp4", out / "dangling_link.mp4"),
    }


def write_awkward_media(dir: Path) -> dict[str, str]:
    """Write the ``AWKWARD`` files into ``dir``; return ``{file name: reason}`` for those skipped because this
    PyAV build lacks their encoder (every other one is written)."""
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {}
    for name, write in _writers(out).items():
        encoder = AWKWARD[name][1]
        if encoder is not None and encoder not in av.codecs_available:
            skipped[name] = f"this PyAV build has no {encoder} encoder"
            continue
        write()
    return skipped
