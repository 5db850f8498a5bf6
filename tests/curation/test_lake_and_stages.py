"""Lake writers, ingest's exact duplicates, and the two scoring paths agreeing."""
from __future__ import annotations

import math
import shutil

import pyarrow as pa
import pytest

from curation.config import IngestConfig, InputConfig
from curation.lake import KeyedWriter, Lake
from curation.stages.ingest import list_inputs, run_ingest
from tests.conftest import demo_config


def test_keyed_writer_writes_each_key_once_across_writers(tmp_path):
    lake = Lake(str(tmp_path))
    assert lake.read("stages/blur").num_rows == 0  # a missing table reads as empty, with its schema
    w = KeyedWriter(lake, "stages/blur")
    assert w.append([{"clip_id": "a", "laplacian_var": 1.0, "status": "ok"},
                     {"clip_id": "a", "laplacian_var": 2.0, "status": "ok"}]) == 1
    w2 = KeyedWriter(lake, "stages/blur")  # a re-run: keys come from the table
    assert w2.append([{"clip_id": "a", "status": "ok"}, {"clip_id": "b", "status": "error", "error": "x"}]) == 1
    rows = {r["clip_id"]: r for r in lake.read("stages/blur").to_pylist()}
    assert rows["a"]["laplacian_var"] == 1.0 and rows["b"]["error"] == "x"
    assert w2.status_written == {"error": 1}


def test_writer_rejects_unknown_columns_and_missing_keys(tmp_path):
    w = KeyedWriter(Lake(str(tmp_path)), "stages/blur")
    with pytest.raises(ValueError, match="not in the table schema"):
        w.append(pa.table({"clip_id": ["a"], "status": ["ok"], "sharpnesss": [1.0]}))
    with pytest.raises(ValueError, match="required column 'status'"):
        w.append(pa.table({"clip_id": ["a"]}))
    with pytest.raises(KeyError, match="unknown stage table"):
        KeyedWriter(Lake(str(tmp_path)), "stages/nope")


def test_ingest_flags_exact_duplicates_and_is_idempotent(tmp_path, corpus):
    media, _ = corpus
    src = sorted(media.glob("v*.mp4"))[:2]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for p in src:
        shutil.copy(p, folder / p.name)
    shutil.copy(src[0], folder / "sub" / "copy_of_first.mp4")
    (folder / "notes.txt").write_text("not media")  # skipped: not a media extension
    lake = Lake(str(tmp_path / "lake"))
    inp = InputConfig(paths=[str(folder)])
    assert len(list_inputs(inp)) == 3
    run_ingest(lake, inp, IngestConfig(), backend="local")
    rows = {r["uri"].split("/")[-1]: r for r in lake.read("videos").to_pylist()}
    assert [r["status"] for r in rows.values()].count("duplicate") == 1
    dup = rows["copy_of_first.mp4"] if rows["copy_of_first.mp4"]["status"] == "duplicate" else rows[src[0].name]
    assert dup["duplicate_of"].endswith(".mp4") and dup["video_id"] == rows[src[0].name]["video_id"]
    res = run_ingest(lake, inp, IngestConfig(), backend="local")
    assert res.count_in == 0 and lake.count("videos") == 3


def test_missing_input_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(InputConfig(paths=[str(tmp_path / "nope")]))


def _assert_same_rows(fresh: Lake, stored: Lake, tables: list[str]) -> None:
    for table in tables:
        a = {r["clip_id"]: r for r in fresh.read(table).to_pylist()}
        b = {r["clip_id"]: r for r in stored.read(table).to_pylist()}
        assert a.keys() == b.keys() and a, table
        for cid, row in a.items():
            for k, v in row.items():
                if isinstance(v, float):
                    assert math.isclose(v, b[cid][k], rel_tol=1e-4, abs_tol=1e-5), (table, k, cid)
                else:
                    assert v == b[cid][k], (table, k, cid)


def _write_cut_video(path, fps: float = 24.0) -> None:
    import av

    from curation.synth.scenes import render_scene

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=int(fps))
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        s.options = {"g": "12", "bf": "2"}  # keyframes every 12 frames, B-frames: cuts fall between keyframes
        for kind, seed, n in (("optimal", 1, 41), ("camera_driven", 2, 37), ("static", 3, 30)):
            for img in render_scene(kind, seed, 320, 180, n):
                c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        c.mux(s.encode(None))


@pytest.mark.parametrize("container", ["mp4", "ts", "mkv"])
def test_scorers_added_later_give_the_shot_pass_scores(tmp_path, container):
    """Scoring clips after they were cut (one decode per file, frames counted from the start) gives the same
    rows as scoring them inside the shot pass, whatever the container (MPEG-TS has no reliable seek)."""
    from curation.pipeline import run_curation

    media = tmp_path / "media"
    media.mkdir()
    _write_cut_video(media / f"cuts.{container}")
    scorers = ["duration_resolution", "borders", "exposure", "blur", "motion", "watermark", "phash"]
    local = {"execution.backend": "local"}
    run_curation(demo_config(tmp_path / "fused", media, stages=["ingest", "shots", *scorers], **local), report=False)
    later = tmp_path / "later"
    run_curation(demo_config(later, media, stages=["ingest", "shots"], **local), report=False)
    run_curation(demo_config(later, media, stages=scorers, **local), report=False)
    fused, rescored = Lake(str(tmp_path / "fused")), Lake(str(later))
    assert fused.count("clips") == 3
    _assert_same_rows(rescored, fused, [f"stages/{n}" for n in scorers])


def test_changing_a_scorer_config_rescores_its_rows_only(tmp_path):
    from curation.pipeline import run_curation

    media = tmp_path / "media"
    media.mkdir()
    _write_cut_video(media / "cuts.mp4")
    lake_dir, local = tmp_path / "lake", {"execution.backend": "local"}
    run_curation(demo_config(lake_dir, media, stages=["ingest", "shots", "blur", "motion"], **local), report=False)
    lake = Lake(str(lake_dir))
    motion_version = lake.version("stages/motion")
    before = {r["clip_id"]: r for r in lake.read("stages/blur").to_pylist()}
    run_curation(demo_config(lake_dir, media, stages=["blur", "motion"], **{**local, "blur.reference_var": 30.0}),
                 report=False)
    after = {r["clip_id"]: r for r in lake.read("stages/blur").to_pylist()}
    assert after.keys() == before.keys()
    for cid in after:
        assert after[cid]["stage_version"] != before[cid]["stage_version"]
        assert after[cid]["blur_score"] > before[cid]["blur_score"]  # a higher reference: blurrier scores
    assert lake.version("stages/motion") == motion_version  # untouched


def test_empty_input_folder_runs_every_stage_to_empty_tables(tmp_path):
    from curation.pipeline import run_curation

    (tmp_path / "media").mkdir()
    summary = run_curation(demo_config(tmp_path / "lake", tmp_path / "media", **{"execution.backend": "local"}))
    lake = Lake(str(tmp_path / "lake"))
    assert lake.count("curated") == 0 and summary.stages["select"]["in"] == 0
    assert "clips: 0" in open(f"{summary.report_dir}/summary.txt").read()


def test_dedup_without_phash_table_says_which_stage_is_missing(curated_lake, tmp_path):
    from curation.config import DedupConfig
    from curation.stages.dedup import run_dedup

    lake, _ = curated_lake
    copy = Lake(str(tmp_path / "lake"))
    KeyedWriter(copy, "clips").append(lake.read("clips"))
    with pytest.raises(RuntimeError, match="run stage 'phash' first"):
        run_dedup(copy, DedupConfig())
