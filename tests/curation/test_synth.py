"""Tests of the synthetic corpus generator (``curation.synth``): determinism, label consistency, bad inputs."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.synth import (
    LABEL_SCHEMA,
    MOTION_KINDS,
    PRESETS,
    generate,
    plan_corpus,
    read_video,
    render_scene,
    render_video_frames,
    write_bad_inputs,
)

# A small corpus that still holds every degradation (min_each=3 applies regardless of size).
SMALL = dict(n_videos=8, n_multi=2, n_images=4, n_dup_originals=1, n_lowres=1, n_large=0)
SEED = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("synth")
    table = generate(out, preset="test", seed=SEED, **SMALL)
    return out, table.to_pylist()


def _plan(name: str):
    plan = plan_corpus(dataclasses.replace(PRESETS["test"], **SMALL), SEED)
    return next(v for v in plan.videos if v.name == name)


def _first_frame(path: Path) -> np.ndarray:
    return next(read_video(path))


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def test_schema_and_parquet(corpus):
    out, rows = corpus
    table = pq.read_table(out / "labels.parquet")
    assert table.schema.equals(LABEL_SCHEMA)
    assert table.to_pylist() == rows
    for r in rows:
        assert (out / "media" / r["file"]).is_file()


def test_segments_tile_files_and_match_decoded_frames(corpus):
    out, rows = corpus
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    assert sum(len(v) > 1 for v in by_file.values()) >= 2  # multi-cut videos exist
    for name, segs in by_file.items():
        segs.sort(key=lambda r: r["segment_index"])
        assert [r["segment_index"] for r in segs] == list(range(len(segs)))
        if segs[0]["media_type"] == "image":
            img = cv2.imread(str(out / "media" / name))
            assert img.shape[:2] == (segs[0]["height"], segs[0]["width"])
            assert segs[0]["fps"] == 0.0 and segs[0]["motion_kind"] is None
            continue
        n = segs[0]["file_num_frames"]
        assert segs[0]["start_frame"] == 0 and segs[-1]["end_frame"] == n
        for a, b in zip(segs, segs[1:]):
            assert a["end_frame"] == b["start_frame"]
        cuts = [r["start_frame"] for r in segs[1:]]
        for r in segs:
            assert r["cut_frames"] == cuts
            assert r["motion_kind"] in MOTION_KINDS
            assert r["segment_duration_s"] == pytest.approx((r["end_frame"] - r["start_frame"]) / r["fps"])
            assert r["segment_duration_s"] >= 1.5 - 1e-9
            assert r["file_duration_s"] == pytest.approx(n / r["fps"])
        with av.open(str(out / "media" / name)) as c:
            frames = [f for f in c.decode(video=0)]
        assert len(frames) == n
        assert (frames[0].width, frames[0].height) == (segs[0]["width"], segs[0]["height"])


def test_determinism(tmp_path):
    small = dict(n_videos=3, n_multi=1, n_images=1, n_dup_originals=0, n_lowres=0, n_large=0, min_each=1)
    a = generate(tmp_path / "a", preset="test", seed=11, **small)
    b = generate(tmp_path / "b", preset="test", seed=11, **small)
    c = generate(tmp_path / "c", preset="test", seed=12, **small)
    assert a.equals(b)
    assert not a.equals(c)
    for name in sorted({r["file"] for r in a.to_pylist() if r["media_type"] == "video"}):
        fa, fb = _first_frame(tmp_path / "a" / "media" / name), _first_frame(tmp_path / "b" / "media" / name)
        assert np.array_equal(fa, fb)


@pytest.mark.parametrize("kind", MOTION_KINDS)
def test_scenes_deterministic_and_in_range(kind):
    a = list(render_scene(kind, 5, 160, 90, 6))
    b = list(render_scene(kind, 5, 160, 90, 6))
    assert len(a) == 6 and all(f.shape == (90, 160, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert max(int(f.max()) for f in a) < 250  # clean scenes never saturate


def test_static_scene_moves_little_and_shaky_moves_a_lot():
    def moving(kind: str) -> float:
        g = np.stack([_gray(f) for f in render_scene(kind, 1, 320, 180, 48)]).astype(np.int16)
        return float((np.abs(np.diff(g, axis=0)) > 10).mean(axis=(1, 2)).max())

    assert moving("static") < 0.02
    assert moving("shaky") > 0.1


def test_border_decodes_near_black(corpus):
    out, rows = corpus
    bordered = [r for r in rows if r["media_type"] == "video" and r["duplicate_of"] is None
                and r["border_top"] + r["border_left"] > 0]  # fmt: skip
    assert bordered
    for r in bordered:
        g = _gray(_first_frame(out / "media" / r["file"]))
        h, w = g.shape
        t, b, left, right = r["border_top"], r["border_bottom"], r["border_left"], r["border_right"]
        regions = [g[: t - 2], g[h - b + 2 :]] if t else [g[:, : left - 2], g[:, w - right + 2 :]]
        for reg in regions:
            assert reg.size and reg.mean() < 4 and reg.max() < 32
        inner = g[t + 2 : h - b - 2, left + 2 : w - right - 2]
        assert inner.mean() > 20  # the content is inside


def test_overexposed_clip_saturates(corpus):
    out, rows = corpus
    over = [r for r in rows if r["overexposed"] and r["media_type"] == "video"]
    clean = [r for r in rows if not r["overexposed"] and r["media_type"] == "video"]
    assert over and clean
    for r in over[:2]:
        frames = list(read_video(out / "media" / r["file"]))[r["start_frame"] : r["end_frame"]]
        for f in frames[:: max(1, len(frames) // 4)]:
            assert (_gray(f) >= 250).mean() > 0.30
    r = clean[0]
    f = list(read_video(out / "media" / r["file"]))[r["start_frame"]]
    assert (_gray(f) >= 250).mean() < 0.02


def test_blurred_clip_is_much_smoother_than_unblurred_counterpart(corpus):
    out, rows = corpus
    cands = [r for r in rows if r["blurred"] and r["media_type"] == "video" and r["duplicate_of"] is None]
    r = min(cands, key=lambda r: (r["logo"], len(r["text_strings"])))  # sharp overlays would add edges
    assert r["blur_sigma"] >= 2.5
    plan = _plan(r["file"])
    segs = tuple(dataclasses.replace(s, blur_sigma=0.0) for s in plan.segments)
    sharp = list(render_video_frames(dataclasses.replace(plan, segments=segs)))[r["start_frame"]]
    blurred = list(read_video(out / "media" / r["file"]))[r["start_frame"]]
    t, b, left, right = r["border_top"], r["border_bottom"], r["border_left"], r["border_right"]

    def lap(f: np.ndarray) -> float:
        g = _gray(f)[t + 4 : r["height"] - b - 4, left + 4 : r["width"] - right - 4]
        return float(cv2.Laplacian(g, cv2.CV_64F).var())

    assert lap(blurred) < 0.25 * lap(sharp)


def test_logo_box_differs_from_no_logo_render(corpus):
    out, rows = corpus
    r = next(r for r in rows if r["logo"] and r["duplicate_of"] is None)
    x0, y0, x1, y1 = r["logo_x0"], r["logo_y0"], r["logo_x1"], r["logo_y1"]
    assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
    plan = _plan(r["file"])
    no_logo = next(render_video_frames(dataclasses.replace(plan, logo=False))).astype(np.int16)
    with_logo = _first_frame(out / "media" / r["file"]).astype(np.int16)
    diff = np.abs(with_logo - no_logo).mean(axis=2)
    inside = diff[y0:y1, x0:x1].mean()
    outside_mask = np.ones(diff.shape, bool)
    outside_mask[max(0, y0 - 8) : y1 + 8, max(0, x0 - 8) : x1 + 8] = False
    assert inside > 3 * diff[outside_mask].mean()
    # the logo is constant over the whole video
    last = list(read_video(out / "media" / r["file"]))[-1].astype(np.int16)
    assert r["logo_x1"] - r["logo_x0"] > 0 and last.shape == with_logo.shape


def test_text_labels(corpus):
    _, rows = corpus
    texted = [r for r in rows if r["text_strings"]]
    assert texted
    for r in texted:
        assert 0.0 < r["text_area_fraction"] < 0.5
    assert all(r["text_area_fraction"] == 0.0 for r in rows if not r["text_strings"])


def test_duplicates(corpus):
    out, rows = corpus
    dups = [r for r in rows if r["duplicate_of"] is not None]
    assert {r["dup_transform"] for r in dups} == {"reencode_crf32", "resize_0.75"}
    for r in dups:
        orig = next(o for o in rows if o["file"] == r["duplicate_of"] and o["segment_index"] == r["segment_index"])
        assert r["file_num_frames"] == orig["file_num_frames"] and r["motion_kind"] == orig["motion_kind"]
        with av.open(str(out / "media" / r["file"])) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == r["file_num_frames"]
        assert (frames[0].width, frames[0].height) == (r["width"], r["height"])
        if r["dup_transform"] == "resize_0.75":
            assert r["width"] == round(orig["width"] * 0.75)


def test_test_preset_coverage():
    plan = plan_corpus(PRESETS["test"], 0)
    segs = [s for v in plan.videos for s in v.segments]
    kinds = Counter(s.motion_kind for s in segs)
    assert set(kinds) == set(MOTION_KINDS) and min(kinds.values()) >= 4
    assert sum(s.blur_sigma > 0 for s in segs) >= 3
    assert sum(s.overexposed for s in segs) >= 3
    assert sum(bool(s.text_strings) for s in segs) >= 3
    assert sum(v.logo for v in plan.videos) >= 3
    assert sum(v.border_kind == "letterbox" for v in plan.videos) >= 3
    assert sum(v.border_kind == "pillarbox" for v in plan.videos) >= 3
    assert sum(len(v.segments) > 1 for v in plan.videos) >= 3
    assert len(plan.dup_originals) >= 2 and len(plan.images) == 8
    sizes = Counter((v.width, v.height) for v in plan.videos)
    assert sizes[(128, 72)] >= 2 and sizes[(640, 360)] >= 1
    assert any(v.fps == 30 for v in plan.videos)
    durations = [v.segments[0].n_frames / v.fps for v in plan.videos if len(v.segments) == 1]
    assert min(durations) < 4 < max(durations)
    clean = [v for v in plan.videos if v.border_kind == "none" and not v.logo
             and not any(s.blur_sigma or s.overexposed or s.text_strings for s in v.segments)]  # fmt: skip
    assert len(clean) >= 3


def test_bad_inputs(tmp_path):
    info = write_bad_inputs(tmp_path)
    assert set(info) == {"empty.mp4", "truncated.mp4", "notvideo.mp4", "image_wrong_ext.mp4", "tiny_1x1.mp4",
                         "audio_only.mp4"}  # fmt: skip
    assert all(isinstance(v, str) and v for v in info.values())
    assert (tmp_path / "empty.mp4").stat().st_size == 0
    assert (tmp_path / "truncated.mp4").stat().st_size > 1000
    assert (tmp_path / "notvideo.mp4").read_text().startswith("This is a plain text file")
    assert (tmp_path / "image_wrong_ext.mp4").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with av.open(str(tmp_path / "tiny_1x1.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert frames and frames[0].shape == (1, 1, 3)
    with av.open(str(tmp_path / "audio_only.mp4")) as c:
        assert len(c.streams.video) == 0 and len(c.streams.audio) == 1
    for bad in ("empty.mp4", "notvideo.mp4", "truncated.mp4"):
        with pytest.raises(av.error.FFmpegError):
            with av.open(str(tmp_path / bad)) as c:
                for _ in c.decode(video=0):
                    pass
