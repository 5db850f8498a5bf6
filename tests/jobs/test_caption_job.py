"""The caption job end to end on the session's curated lake (copied per test): vLLM on Ray, the transformers
reference in-process, resume, a corrupt clip, OCR-prior instructions, config errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import lance
import pyarrow as pa
import pytest

from captioner.batch import (
    CaptionJobConfig,
    load_caption_config,
    pending_work,
    run_caption_job,
)
from curation.lake import Lake
from curation.lake.schemas import stage_schema
from curation.lake.tables import KeyedWriter

REPO = Path(__file__).resolve().parents[2]
OCR_TEXT = "GRAND OPENING"


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from captioner.tiny import save_tiny_captioner

    return save_tiny_captioner(tmp_path_factory.mktemp("caption_job_model") / "tiny_captioner", seed=0)


def lake_copy(curated_lake, dest: Path) -> Lake:
    lake, _ = curated_lake
    shutil.copytree(lake.root, dest)
    return Lake(str(dest))


def kept_clips(lake: Lake) -> dict[str, str]:
    """clip_id -> media_type of the clips the curation kept."""
    t = lake.read("curated", columns=["clip_id", "keep", "media_type"])
    return {c: m for c, k, m in zip(*(t.column(n).to_pylist() for n in ("clip_id", "keep", "media_type"))) if k}


def job_config(lake: Lake, model: Path, **fields) -> CaptionJobConfig:
    return CaptionJobConfig(lake=lake.root, model=str(model), max_new_tokens=12, batch_size=4, commit_every=3,
                            **fields)


def plant_bad_inputs(lake: Lake, tmp: Path) -> tuple[str, str]:
    """Point one kept video clip's file at a corrupt copy, and give one kept image clip OCR text.
    Returns (corrupt clip id, OCR clip id)."""
    kept = kept_clips(lake)
    video = min(c for c, m in kept.items() if m == "video")
    image = min(c for c, m in kept.items() if m == "image")
    clips = lance.dataset(lake.uri("clips"))
    uri = clips.to_table(columns=["uri"], filter=f"clip_id = '{video}'").column(0)[0].as_py()
    corrupt = tmp / "corrupt.mp4"
    data = Path(uri).read_bytes()
    corrupt.write_bytes(data[:64] + bytes(len(data) - 64))  # the header survives, the stream is zeros
    clips.update({"uri": f"'{corrupt}'"}, where=f"uri = '{uri}'")
    KeyedWriter(lake, "stages/ocr").append(pa.Table.from_pylist([{
        "clip_id": image, "texts": [OCR_TEXT], "text_coverage_max": 0.05, "ocr_backend": "rapidocr",
        "stage_version": "test", "status": "ok"}], schema=stage_schema("ocr")))
    return video, image


@pytest.mark.slow
def test_caption_job_vllm_on_ray_equals_reference(curated_lake, captioner_dir, tmp_path):
    from captioner.processor import video_token_count
    from captioner.templates import PROMPT_VERSION
    from tests.captioner.test_vllm_backend import require_vllm

    require_vllm()
    lake = lake_copy(curated_lake, tmp_path / "lake")
    corrupt_id, ocr_id = plant_bad_inputs(lake, tmp_path)
    kept = kept_clips(lake)
    assert len(kept) >= 4 and ocr_id in kept

    summary = run_caption_job(job_config(lake, captioner_dir, backend="vllm"), progress=False)
    rows = {r["clip_id"]: r for r in lake.read("captions").to_pylist()}
    assert sorted(rows) == sorted(kept) and lake.count("captions") == len(kept)  # each kept clip exactly once
    assert (summary.ok, summary.failed, summary.written) == (len(kept) - 1, 1, len(kept))
    bad = rows[corrupt_id]
    assert bad["status"] == "error" and bad["error"].startswith("decode:") and bad["caption"] is None
    for cid, row in rows.items():
        assert (row["model_id"], row["prompt_version"], row["backend"]) == ("tiny_captioner", PROMPT_VERSION, "vllm")
        assert row["media_type"] == kept[cid]
        if cid == corrupt_id:
            continue
        assert row["status"] == "ok" and row["caption"], row
        if row["media_type"] == "video":
            assert 1 <= row["num_frames"] <= 129
            assert row["num_visual_tokens"] == video_token_count(row["num_frames"])
        else:
            assert row["num_frames"] == 1 and row["num_visual_tokens"] % 144 == 0
    assert rows[ocr_id]["template"] == "image_ocr"
    assert {rows[c]["template"] for c in kept if c != ocr_id} <= {"image", "video"}
    runs = lake.read("runs", filter="stage = 'caption'")
    assert runs.num_rows == 1 and runs.column("count_failed")[0].as_py() == 1

    # The transformers reference through the same job (in-process) writes the same captions.
    ref_lake = lake_copy(curated_lake, tmp_path / "ref_lake")
    (tmp_path / "ref_media").mkdir()
    plant_bad_inputs(ref_lake, tmp_path / "ref_media")  # the same corruption, the same OCR row
    run_caption_job(job_config(ref_lake, captioner_dir, backend="hf", execution="local"), progress=False)
    ref = {r["clip_id"]: r for r in ref_lake.read("captions").to_pylist()}
    assert {c: r["caption"] for c, r in rows.items()} == {c: r["caption"] for c, r in ref.items()}

    # Nothing left to do: a re-run writes nothing.
    again = run_caption_job(job_config(lake, captioner_dir, backend="vllm"), progress=False)
    assert (again.pending, again.written) == (0, 0) and lake.count("captions") == len(kept)


def test_caption_job_resumes_without_duplicates(curated_lake, captioner_dir, tmp_path):
    from jobs.cli import main as wan

    lake = lake_copy(curated_lake, tmp_path / "lake")
    kept = kept_clips(lake)
    first = run_caption_job(job_config(lake, captioner_dir, backend="hf", execution="local", limit=3), progress=False)
    assert first.written == 3
    before = {r["clip_id"]: (r["caption"], r["captioned_at"]) for r in lake.read("captions").to_pylist()}
    config = tmp_path / "caption.yaml"
    config.write_text((REPO / "jobs/configs/caption_tiny.yaml").read_text())
    rc = wan(["caption", "--config", str(config), "--lake", lake.root, "--model", str(captioner_dir),
              "--set", "backend=hf", "--set", "execution=local", "--set", "max_new_tokens=12"])
    assert rc == 0
    after = lake.read("captions").to_pylist()
    ids = [r["clip_id"] for r in after]
    assert len(ids) == len(set(ids)) and set(ids) == set(kept)
    assert {r["clip_id"]: (r["caption"], r["captioned_at"]) for r in after if r["clip_id"] in before} == before


def test_retry_errors_and_limit_select_the_pending_clips(curated_lake, captioner_dir, tmp_path):
    lake = lake_copy(curated_lake, tmp_path / "lake")
    corrupt_id, ocr_id = plant_bad_inputs(lake, tmp_path)
    cfg = job_config(lake, captioner_dir, backend="hf", execution="local")
    items, count, _ = pending_work(lake, cfg, done=set())
    assert count == len(kept_clips(lake))
    instruction = next(c["instruction"] for it in items for c in it["clips"] if c["clip_id"] == ocr_id)
    assert OCR_TEXT in instruction
    _, limited, _ = pending_work(lake, job_config(lake, captioner_dir, limit=2), done=set())
    assert limited == 2
    KeyedWriter(lake, "captions").append([{"clip_id": corrupt_id, "status": "error", "error": "decode: earlier"}])
    _, after_error, _ = pending_work(lake, cfg, done=lake.keys("captions"))
    assert after_error == count - 1  # an error row counts as done...
    run_caption_job(job_config(lake, captioner_dir, backend="hf", execution="local", retry_errors=True),
                    progress=False)
    row = lake.read("captions", filter=f"clip_id = '{corrupt_id}'").to_pylist()
    assert len(row) == 1 and row[0]["error"].startswith("decode:") and row[0]["error"] != "decode: earlier"
    # ...until retry_errors deletes it: the clip was tried again (and its file is still corrupt)


def test_config_errors_name_the_problem(tmp_path, captioner_dir):
    from curation.config import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text("lake: x\nmodel: y\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match="batch_sise"):
        load_caption_config(path)
    path.write_text("lake: x\nmodel: y\nmax_new_tokens: 0\n")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_caption_config(path)
    cfg = load_caption_config(REPO / "jobs/configs/caption_tiny.yaml",
                              {"lake": str(tmp_path / "lake"), "model": str(tmp_path / "missing_model")})
    with pytest.raises(FileNotFoundError, match="missing_model/config.json"):
        run_caption_job(cfg, progress=False)
