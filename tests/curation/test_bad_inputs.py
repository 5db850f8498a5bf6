"""Bad input is data: every broken file becomes a failed row with a clear message, and the run finishes; every
awkward but usable file (rotated, variable frame rate, 10-bit, alpha, grayscale, odd size...) becomes correct clips.
README "Awkward media" lists these kinds and their outcomes."""
from __future__ import annotations

import os
import shutil

import av
import cv2
import numpy as np
import pytest

from curation.lake import Lake
from curation.pipeline import run_curation
from curation.synth import write_bad_inputs
from curation.synth.bad_inputs import AWKWARD, SPACED_NAME, TRUNCATED_FRAMES, write_awkward_media
from tests.conftest import demo_config

EXPECTED = {
    "empty.mp4": "empty file",
    "truncated.mp4": "cannot open",
    "notvideo.mp4": "cannot open",
    "image_wrong_ext.mp4": "PNG image but the extension .mp4",
    "tiny_1x1.mp4": "resolution 1x1 below",
    "audio_only.mp4": "no video stream",
}
# Refused at ingest: the videos row's error names the problem.
REFUSED = {
    **EXPECTED,
    "jpeg_named.mp4": "JPEG image but the extension .mp4",
    "bomb.png": "decompression bomb",
    "dangling_link.mp4": "dangling symbolic link",
}
# Broken part-way: what decoded is kept as clips, then one error clip row says where and why it stopped.
PARTIAL = {
    "broken_mid.mkv": "of 96 frames (truncated or corrupt)",
    "header_more_frames.mp4": f"the header lists {TRUNCATED_FRAMES} frames",
}
# Usable: (displayed width, height, frames, seconds from the PTS, rotation applied).
USABLE = {
    "rotated_90.mp4": (96, 160, 48, 2.0, 90),
    "vfr_gap.mp4": (160, 96, 48, 2.96, 0),
    "hevc_10bit.mp4": (160, 96, 36, 1.5, 0),
    "vp9_alpha.webm": (160, 96, 36, 1.5, 0),
    "grayscale.mkv": (160, 96, 36, 1.5, 0),
    "odd_444.mp4": (161, 97, 36, 1.5, 0),
    "one_fps.mp4": (160, 96, 8, 8.0, 0),
    "all_black.mp4": (160, 96, 36, 1.5, 0),
    "mpegts_offset.ts": (160, 96, 36, 1.5, 0),
    SPACED_NAME: (160, 96, 36, 1.5, 0),
}
KINDS = sorted({**REFUSED, **PARTIAL, **USABLE})


def _write_broken_mid_stream(path: str) -> None:
    """A Matroska video cut in the middle: the header is fine, frames stop part-way."""
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        img = np.random.default_rng(0).integers(0, 255, (96, 160, 3), np.uint8)
        for _ in range(96):
            img = np.roll(img, 2, axis=1)  # a panning texture
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        c.mux(s.encode(None))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


@pytest.fixture(scope="module")
def bad_lake(tmp_path_factory, corpus):
    media = tmp_path_factory.mktemp("bad_media")
    written = write_bad_inputs(media)
    assert set(written) == set(EXPECTED)
    skipped = write_awkward_media(media)
    _write_broken_mid_stream(str(media / "broken_mid.mkv"))
    good = sorted(p for p in os.listdir(corpus[0]) if p.endswith(".mp4"))[0]
    shutil.copy(corpus[0] / good, media / good)
    lake_dir = tmp_path_factory.mktemp("bad_lake")
    cfg = demo_config(lake_dir, media, **{"execution.backend": "local"})
    summary = run_curation(cfg)
    return Lake(str(lake_dir)), summary, good, skipped, media


def test_each_bad_file_is_a_failed_row_with_a_clear_message(bad_lake):
    lake, summary, good, skipped, _ = bad_lake
    rows = {os.path.basename(r["uri"]): r for r in lake.read("videos").to_pylist()}
    for name, fragment in REFUSED.items():
        if name in skipped:
            continue
        assert rows[name]["status"] == "error", name
        assert fragment in rows[name]["error"], (name, rows[name]["error"])
    assert rows[good]["status"] == "ok"
    assert summary.stages["ingest"]["failed"] == len(set(REFUSED) - set(skipped))
    assert summary.stages["select"]["kept"] + summary.stages["select"]["rejected"] == summary.stages["select"]["in"]


def test_stream_broken_mid_way_keeps_decoded_clips_and_records_the_break(bad_lake):
    lake = bad_lake[0]
    clips = [c for c in lake.read("clips").to_pylist() if c["uri"].endswith("broken_mid.mkv")]
    ok = [c for c in clips if c["status"] == "ok"]
    err = [c for c in clips if c["status"] == "error"]
    assert ok and ok[-1]["end_frame"] < 96  # what decoded is kept as clips
    assert len(err) == 1 and "of 96 frames (truncated or corrupt)" in err[0]["error"]
    assert err[0]["start_frame"] == ok[-1]["end_frame"]
    curated = {r["clip_id"]: r for r in lake.read("curated").to_pylist()}
    assert not curated[err[0]["clip_id"]]["keep"]
    assert curated[err[0]["clip_id"]]["reject_reasons"][0].startswith("error:clips")


def test_failed_inputs_listed_in_the_report(bad_lake):
    summary = bad_lake[1]
    text = open(os.path.join(summary.report_dir, "summary.txt")).read()
    for name in REFUSED:
        assert name in text or name in bad_lake[3]


def test_nan_score_becomes_an_error_row(monkeypatch):
    from curation.media.frames import ClipFrames
    from curation.scorers import registry
    from curation.stages.analyze import AnalysisSettings, score_clip

    blur = registry.SCORERS["blur"]
    monkeypatch.setitem(registry.SCORERS, "blur", registry.Scorer("blur", "1", blur.config_cls,
                                                                   lambda c, cfg: {"laplacian_var": np.float32("nan"),
                                                                                   "blur_score": 0.1}))
    clip = ClipFrames("c", "video", 24.0, 8.0, 64, 32, np.zeros((3, 32, 64, 3), np.uint8), np.arange(3), 0, 9)
    rows = score_clip(clip, AnalysisSettings(("blur", "exposure"), {"blur": blur.config_cls(),
                                                                     "exposure": registry.SCORER_CONFIGS["exposure"]()}))
    assert rows["stages/blur"][0]["status"] == "error" and "non-finite" in rows["stages/blur"][0]["error"]
    assert rows["stages/exposure"][0]["status"] == "ok"


def test_at_least_twenty_kinds_each_with_an_outcome():
    assert len(KINDS) >= 20
    assert set(AWKWARD) <= set(KINDS)


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_ends_as_correct_clips_or_a_clear_error(bad_lake, name):
    lake, _, _, skipped, _ = bad_lake
    if name in skipped:
        pytest.skip(f"{name}: {skipped[name]}")
    video = {os.path.basename(r["uri"]): r for r in lake.read("videos").to_pylist()}[name]
    clips = sorted((c for c in lake.read("clips").to_pylist() if c["uri"] == video["uri"]),
                   key=lambda c: c["start_frame"])
    if name in REFUSED:
        assert video["status"] == "error" and REFUSED[name] in video["error"] and not clips
        return
    assert video["status"] == "ok", video["error"]
    ok = [c for c in clips if c["status"] == "ok"]
    errors = [c for c in clips if c["status"] == "error"]
    assert ok and ok[0]["start_frame"] == 0
    assert all(a["end_frame"] == b["start_frame"] and a["end_s"] == pytest.approx(b["start_s"])
               for a, b in zip(ok, ok[1:]))  # contiguous, in frames and in seconds
    if name in PARTIAL:
        assert len(errors) == 1 and PARTIAL[name] in errors[0]["error"], errors
        assert errors[0]["start_frame"] == ok[-1]["end_frame"]
        return
    width, height, frames, seconds, rotation = USABLE[name]
    assert not errors
    assert ok[-1]["end_frame"] == frames
    frame_s = 1.0 / min(24.0, ok[0]["fps"])
    assert ok[-1]["end_s"] - ok[0]["start_s"] == pytest.approx(seconds, abs=frame_s)
    assert ok[0]["start_s"] == 0.0  # seconds from the stream's start, even where its PTS start later (MPEG-TS)
    for c in ok:
        assert (c["width"], c["height"], c["rotation"]) == (width, height, rotation)
        key = cv2.imdecode(np.frombuffer(c["keyframes"][0], np.uint8), cv2.IMREAD_COLOR)
        assert abs(key.shape[0] - height) <= 1 and abs(key.shape[1] - width) <= 1  # analysis sizes are even
    _check_pixels(name, key)


def _check_pixels(name: str, key: np.ndarray) -> None:
    """Pixel facts known from how the file was made."""
    if name == "all_black.mp4":
        assert key.max() <= 24
    elif name == "grayscale.mkv":
        spread = key.astype(np.int16).max(axis=2) - key.astype(np.int16).min(axis=2)
        assert np.percentile(spread, 99) <= 12  # no colour from a picture without chroma
    else:
        assert key.std() > 10  # a textured scene, not a blank or garbled decode


def test_curated_keeps_each_clips_lineage(bad_lake):
    lake = bad_lake[0]
    clips = {c["clip_id"]: c for c in lake.read("clips").to_pylist()}
    curated = lake.read("curated").to_pylist()
    assert {r["clip_id"] for r in curated} == set(clips)
    for r in curated:
        c = clips[r["clip_id"]]
        for col in ("video_id", "start_frame", "end_frame", "start_s", "end_s", "rotation"):
            assert r[col] == c[col], (col, r["clip_id"])


def test_ray_run_gives_the_same_rows_as_the_local_run(bad_lake, local_ray, tmp_path):
    lake, _, _, _, media = bad_lake
    cfg = demo_config(tmp_path / "lake", media, stages=["ingest", "shots"])
    run_curation(cfg, report=False)
    on_ray = Lake(str(tmp_path / "lake"))

    def rows(lk: Lake, table: str, cols: list[str]) -> list[tuple]:
        return sorted(tuple(r[c] for c in cols) for r in lk.read(table, columns=cols).to_pylist())

    for table, cols in (("videos", ["uri", "video_id", "status", "width", "height", "rotation"]),
                        ("clips", ["clip_id", "status", "start_frame", "end_frame", "start_s", "end_s", "rotation"])):
        assert rows(on_ray, table, cols) == rows(lake, table, cols)


@pytest.mark.parametrize("side, fragment", [(12000, "more than the limit of"), (40000, "exceeds limit")])
def test_image_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path, side, fragment):
    from curation.media.probe import MediaError, probe
    from curation.synth.bad_inputs import _write_png_bomb

    _write_png_bomb(tmp_path / "big.png", side, side)  # 144 M pixels: ours refuses; 1.6 G: Pillow's own check
    with pytest.raises(MediaError, match=f"decompression bomb.*{fragment}"):
        probe(str(tmp_path / "big.png"))
