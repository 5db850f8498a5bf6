"""Lake writers, ingest's exact duplicates, and the two scoring paths agreeing."""
from __future__ import annotations

import math
import shutil

import pyarrow as pa
import pytest

from curation.config import IngestConfig, InputConfig
from curation.lake import KeyedWriter, Lake
from curation.stages.analyze import clip_frames_from_file, score_clip
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


def test_rescoring_a_clip_alone_gives_the_shot_pass_scores(curated_lake):
    """The per-clip pass (used when a scorer is added later) samples the same frames as the shot pass."""
    from curation.pipeline import analysis_settings

    lake, _ = curated_lake
    settings = analysis_settings(demo_config(lake.root, "/unused"))
    clips = lake.read("clips", filter="status = 'ok'").to_pylist()
    picked = [c for c in clips if c["start_frame"] > 0][:2] + [c for c in clips if c["media_type"] == "image"][:1]
    picked += [c for c in clips if c["start_frame"] == 0 and c["media_type"] == "video"][:2]
    for clip in picked:
        fresh = score_clip(clip_frames_from_file(clip, settings), settings)
        for table, (row,) in fresh.items():
            stored = lake.read(table, filter=f"clip_id = '{clip['clip_id']}'").to_pylist()[0]
            for k, v in row.items():
                if isinstance(v, float):
                    assert math.isclose(v, stored[k], rel_tol=1e-4, abs_tol=1e-5), (table, k, clip["clip_id"])
                else:
                    assert v == stored[k], (table, k, clip["clip_id"])


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
