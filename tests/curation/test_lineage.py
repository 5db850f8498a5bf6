"""Lineage of every clip: the source's content hash, seconds from the stream's presentation timestamps (right for
variable frame rate), and rotation applied so frames and sizes are as displayed."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.lake import Lake
from curation.media.decode import decode_video
from curation.media.probe import probe
from curation.pipeline import run_curation
from curation.synth.videoio import write_stream
from tests.conftest import demo_config

FRAME_MS = 40
# Variable frame rate: 25 fps, a 1.04 s hole after frame 19, then 40 ms steps again, then 80 ms steps.
PTS_MS = [i * FRAME_MS for i in range(20)] + [1800 + i * FRAME_MS for i in range(20)] + \
         [2600 + i * 80 for i in range(10)]
MARK = 8  # side of the white square planted in the coded picture's top-left corner


def _textured(n: int, w: int, h: int, seed: int) -> list[np.ndarray]:
    """A panning random texture (so no scorer sees a flat picture) with a white mark in the top-left corner."""
    base = np.random.default_rng(seed).integers(0, 160, (h, w * 2, 3), np.uint8)
    out = []
    for i in range(n):
        img = np.ascontiguousarray(base[:, i % w : i % w + w])
        img[:MARK, :MARK] = 255
        out.append(img)
    return out


def _curate(tmp_path: Path, media: Path, **overrides: object) -> Lake:
    lake_dir = tmp_path / "lake"
    cfg = demo_config(lake_dir, media, **{"execution.backend": "local", "stages": ["ingest", "shots"], **overrides})
    run_curation(cfg, report=False)
    return Lake(str(lake_dir))


def _ok_clips(lake: Lake) -> list[dict]:
    return sorted((c for c in lake.read("clips").to_pylist() if c["status"] == "ok"), key=lambda c: c["start_frame"])


def test_vfr_clip_seconds_follow_the_pts(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    path = media / "vfr.mp4"
    write_stream(path, _textured(len(PTS_MS), 96, 64, 0), pts_ms=PTS_MS)
    # Clips of at most 1 s of nominal frames: several clips, one of them across the hole.
    clips = _ok_clips(_curate(tmp_path, media, **{"shots.max_clip_s": 1.0}))
    assert len(clips) >= 3
    true_s = [t / 1000 for t in PTS_MS]
    ends = true_s[1:] + [true_s[-1] + 0.080]  # the frame after each one; the last shows for its 80 ms
    one_frame = FRAME_MS / 1000
    assert clips[0]["start_frame"] == 0 and clips[-1]["end_frame"] == len(PTS_MS)
    for c in clips:
        assert abs(c["start_s"] - true_s[c["start_frame"]]) < one_frame, c
        assert abs(c["end_s"] - ends[c["end_frame"] - 1]) < one_frame, c
        assert c["duration_s"] == pytest.approx(c["end_s"] - c["start_s"])
    across = [c for c in clips if c["start_frame"] < 20 <= c["end_frame"] - 1]
    assert across, "no clip spans the hole"
    counted = (across[0]["end_frame"] - across[0]["start_frame"]) / across[0]["fps"]
    assert across[0]["duration_s"] - counted > 0.5  # frame counting would have missed the hole
    assert sum(c["duration_s"] for c in clips) == pytest.approx(true_s[-1] + 0.080, abs=one_frame)


def test_clip_carries_the_source_content_hash(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    write_stream(media / "a.mp4", _textured(30, 96, 64, 1))
    (clip,) = _ok_clips(_curate(tmp_path, media))
    digest = hashlib.blake2b((media / "a.mp4").read_bytes(), digest_size=16).hexdigest()
    assert clip["video_id"] == digest
    assert (clip["start_frame"], clip["end_frame"], clip["start_s"], clip["rotation"]) == (0, 30, 0.0, 0)
    assert clip["end_s"] == pytest.approx(30 / 24)


@pytest.mark.parametrize("degrees, corner", [(90, "bottom_left"), (-90, "top_right"), (180, "bottom_right")])
def test_rotated_file_is_decoded_upright(tmp_path, degrees, corner):
    """A display matrix turning the picture ``degrees`` counter-clockwise: the coded top-left mark lands in the
    corner it is displayed in, and width and height are the displayed ones."""
    path = tmp_path / "rot.mp4"
    write_stream(path, _textured(6, 96, 64, 2), rotation=degrees)
    info = probe(str(path))
    quarter = degrees % 180 == 90
    assert (info.width, info.height) == ((64, 96) if quarter else (96, 64))
    assert info.rotation == degrees % 360
    frame = next(decode_video(str(path))).bgr(96)
    assert frame.shape[:2] == (info.height, info.width)
    assert _bright_corner(frame) == corner


def test_rotated_clip_rows_and_keyframes_are_upright(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    write_stream(media / "phone.mp4", _textured(30, 96, 64, 3), rotation=90)
    lake = _curate(tmp_path, media)
    video = lake.read("videos").to_pylist()[0]
    assert (video["width"], video["height"], video["rotation"]) == (64, 96, 90)
    (clip,) = _ok_clips(lake)
    assert (clip["width"], clip["height"], clip["rotation"]) == (64, 96, 90)
    key = cv2.imdecode(np.frombuffer(clip["keyframes"][0], np.uint8), cv2.IMREAD_COLOR)
    assert key.shape[0] > key.shape[1]
    assert _bright_corner(key) == "bottom_left"


def _bright_corner(image: np.ndarray) -> str:
    """Which corner holds the white mark (the texture stays below 160, the mark is 255)."""
    k = max(2, round(MARK * image.shape[0] / 96 * 0.5))
    corners = {"top_left": image[:k, :k], "top_right": image[:k, -k:], "bottom_left": image[-k:, :k],
               "bottom_right": image[-k:, -k:]}
    return max(corners, key=lambda name: float(corners[name].mean()))


def test_image_exif_orientation_is_applied_and_recorded(tmp_path):
    """EXIF orientation 6 ("turn 90 degrees clockwise to display"): 270 counter-clockwise, displayed upright."""
    from PIL import Image

    from curation.media.probe import read_image

    coded = _textured(1, 96, 64, 4)[0]
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(coded[..., ::-1]).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    info = probe(str(tmp_path / "phone.jpg"))
    assert (info.width, info.height, info.rotation) == (64, 96, 270)
    image = read_image(str(tmp_path / "phone.jpg"))
    assert image.shape[:2] == (96, 64)
    assert _bright_corner(image) == "top_right"
