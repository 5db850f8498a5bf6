"""Bad input is data: every broken file becomes a failed row with a clear message, and the run finishes."""
from __future__ import annotations

import os
import shutil

import av
import numpy as np
import pytest

from curation.lake import Lake
from curation.pipeline import run_curation
from curation.synth import write_bad_inputs
from tests.conftest import demo_config

EXPECTED = {
    "empty.mp4": "empty file",
    "truncated.mp4": "cannot open",
    "notvideo.mp4": "cannot open",
    "image_wrong_ext.mp4": "PNG image but the extension .mp4",
    "tiny_1x1.mp4": "resolution 1x1 below",
    "audio_only.mp4": "no video stream",
}


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
    _write_broken_mid_stream(str(media / "broken_mid.mkv"))
    good = sorted(p for p in os.listdir(corpus[0]) if p.endswith(".mp4"))[0]
    shutil.copy(corpus[0] / good, media / good)
    lake_dir = tmp_path_factory.mktemp("bad_lake")
    cfg = demo_config(lake_dir, media, **{"execution.backend": "local"})
    summary = run_curation(cfg)
    return Lake(str(lake_dir)), summary, good


def test_each_bad_file_is_a_failed_row_with_a_clear_message(bad_lake):
    lake, summary, good = bad_lake
    rows = {os.path.basename(r["uri"]): r for r in lake.read("videos").to_pylist()}
    for name, fragment in EXPECTED.items():
        assert rows[name]["status"] == "error", name
        assert fragment in rows[name]["error"], (name, rows[name]["error"])
    assert rows[good]["status"] == "ok"
    assert summary.stages["ingest"]["failed"] == len(EXPECTED)
    assert summary.stages["select"]["kept"] + summary.stages["select"]["rejected"] == summary.stages["select"]["in"]


def test_stream_broken_mid_way_keeps_decoded_clips_and_records_the_break(bad_lake):
    lake, _, _ = bad_lake
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
    _, summary, _ = bad_lake
    text = open(os.path.join(summary.report_dir, "summary.txt")).read()
    for name in EXPECTED:
        assert name in text


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
