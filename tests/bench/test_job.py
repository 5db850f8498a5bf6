"""The Wan-Bench scoring job on generated media with known scores (two toy dimensions, ``tests.bench.toy_dims``):
an mp4 folder and a ``samples`` table scored into ``bench_scores`` with the right values, a corrupt sample is an
error row for each of its dimensions while the rest are scored, a re-run adds nothing, kill -9 then re-run leaves
every (sample, dimension) exactly once with the uninterrupted run's values, and the summary's weighted total."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curation.lake import Lake
from tests.bench.toy_dims import flicker_video, gray_video, write_folder

DIMS = ["toy_brightness", "toy_motion"]
MODULES = ["tests.bench.toy_dims"]


def _config(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"lake": str(tmp / "lake"), "run": "toy", "dimensions": DIMS, "dimension_modules": MODULES,
            "execution": "local", "commit_every": 1, "max_frames": 8, **extra}


def _folder(tmp: Path) -> Path:
    root = write_folder(tmp / "videos", {"dark-0": gray_video(64), "bright-0": gray_video(192),
                                         "flicker-0": flicker_video(), "still.png": gray_video(128, frames=1)})
    (root / "corrupt-0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


def _scores(lake: Lake, run: str = "toy") -> dict[tuple[str, str], dict[str, Any]]:
    rows = lake.read("bench_scores", filter=f"run = '{run}'").to_pylist()
    keys = [(r["sample_id"], r["dimension"]) for r in rows]
    assert len(keys) == len(set(keys)), "a (sample, dimension) was written twice"
    return {(r["sample_id"], r["dimension"]): r for r in rows}


def _run(data: dict[str, Any]) -> dict[str, Any]:
    from bench.job import BenchJobConfig, run_bench

    return run_bench(BenchJobConfig(**data))


def test_folder_known_scores_corrupt_error_rows_and_rerun(tmp_path: Path) -> None:
    result = _run(_config(tmp_path, videos_dir=str(_folder(tmp_path))))
    lake = Lake(str(tmp_path / "lake"))
    scores = _scores(lake)
    assert len(scores) == 10  # 5 samples x 2 dimensions, errors included
    assert scores[("dark-0.mp4", "toy_brightness")]["score"] == pytest.approx(64 / 255, abs=2 / 255)
    assert scores[("bright-0.mp4", "toy_brightness")]["score"] == pytest.approx(192 / 255, abs=2 / 255)
    assert scores[("flicker-0.mp4", "toy_motion")]["score"] == pytest.approx(1.0, abs=0.02)
    assert scores[("dark-0.mp4", "toy_motion")]["score"] == pytest.approx(0.0, abs=0.01)
    assert scores[("dark-0.mp4", "toy_motion")]["group"] == "dynamic_quality"
    for dim in DIMS:  # the corrupt video: an error row for each dimension, naming the decode failure
        row = scores[("corrupt-0.mp4", dim)]
        assert row["status"] == "error" and row["score"] is None and row["error"].startswith("decode:")
    still = scores[("still.png", "toy_motion")]  # the dimension refuses one frame: that pair only is an error
    assert still["status"] == "error" and "at least 2 frames" in still["error"]
    assert scores[("still.png", "toy_brightness")]["score"] == pytest.approx(128 / 255, abs=2 / 255)
    assert json.loads(scores[("dark-0.mp4", "toy_brightness")]["evidence_json"])["judge"][0]["answer"] == "brightness of dark"
    summary = result["summary"]
    bright = np.mean([64, 192, 127.5, 128]) / 255  # the four videos that decoded
    assert summary.means["toy_brightness"] == pytest.approx(bright, abs=0.01)
    assert summary.counts["toy_motion"] == {"ok": 3, "error": 2}
    assert summary.total == pytest.approx((summary.means["toy_brightness"] + summary.means["toy_motion"]) / 2)
    samples = lake.read("bench_samples").to_pylist()
    assert {s["sample_id"] for s in samples if s["thumbnail"]} == {"dark-0.mp4", "bright-0.mp4", "flicker-0.mp4",
                                                                   "still.png"}
    assert {s["prompt"] for s in samples} >= {"dark", "flicker"}  # VBench's {prompt}-{n}.mp4 naming
    again = _run(_config(tmp_path, videos_dir=str(tmp_path / "videos")))
    assert again["pending_samples"] == 0 and again["written"] == 0 and len(_scores(lake)) == 10


def test_suite_picks_dimensions_and_metadata_and_fitted_weights(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    suite = tmp_path / "suite.jsonl"
    suite.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "dark", "dimensions": ["toy_brightness"], "meta": {"style": "noir"}},
        {"prompt": "flicker", "dimension": "toy_motion"}]) + "\n")
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"weights": {"toy_brightness": 3.0, "toy_motion": 1.0}}))
    result = _run(_config(tmp_path, videos_dir=str(folder), prompts_file=str(suite), weights_file=str(weights)))
    scores = _scores(Lake(str(tmp_path / "lake")))
    assert ("dark-0.mp4", "toy_motion") not in scores and ("flicker-0.mp4", "toy_brightness") not in scores
    assert ("bright-0.mp4", "toy_motion") in scores  # a prompt the suite does not name: every dimension
    meta = {s["sample_id"]: json.loads(s["meta_json"]) for s in Lake(str(tmp_path / "lake")).read(
        "bench_samples").to_pylist()}
    assert meta["dark-0.mp4"] == {"style": "noir"}
    s = result["summary"]
    assert s.weights_source == str(weights)
    assert s.total == pytest.approx((3 * s.means["toy_brightness"] + s.means["toy_motion"]) / 4)


def _samples_lake(lake_dir: Path, videos: dict[str, np.ndarray], model: str = "m") -> None:
    from curation.lake.tables import KeyedWriter
    from wanmodel.pipelines.common import mp4_bytes

    rows = [{"sample_id": sid, "task": "t2v", "prompt": f"prompt {sid}", "model": model, "media_format": "mp4",
             "video": mp4_bytes(v, 8) if v is not None else b"not a video", "num_frames": 6, "fps": 8.0,
             "status": "ok", "created_at": dt.datetime.now(dt.UTC)} for sid, v in videos.items()]
    KeyedWriter(Lake(str(lake_dir)), "samples").append(rows)


def test_samples_table_on_ray_actor_pools(tmp_path: Path, local_ray: None) -> None:
    _samples_lake(tmp_path / "lake", {"a": gray_video(32), "b": flicker_video(), "bad": None})
    result = _run(_config(tmp_path, execution="ray", ray={"num_cpus": 2}, decode={"concurrency": 1, "num_cpus": 0.5},
                          score={"concurrency": 1, "num_cpus": 0.5}, batch_size=2))
    scores = _scores(Lake(str(tmp_path / "lake")))
    assert len(scores) == 6 and result["written"] == 6
    assert scores[("a", "toy_brightness")]["score"] == pytest.approx(32 / 255, abs=2 / 255)
    assert scores[("b", "toy_motion")]["score"] == pytest.approx(1.0, abs=0.02)
    assert {scores[("bad", d)]["status"] for d in DIMS} == {"error"}


def test_unknown_dimension_and_bad_run_name_are_refused(tmp_path: Path) -> None:
    from bench.job import BenchJobConfig, check_dimensions

    with pytest.raises(ValueError, match="unknown dimensions"):
        check_dimensions(BenchJobConfig(**_config(tmp_path, dimensions=["toy_brightness", "no_such"])))
    with pytest.raises(ValueError, match="'@'"):
        BenchJobConfig(**_config(tmp_path, run="a@b"))


def test_a_run_name_with_scores_of_other_samples_is_refused(tmp_path: Path) -> None:
    """A second sample set (another model's videos) under a run name that holds scores of the first is refused
    before anything is scored, since the run's total would average both; a new run name scores it."""
    _run(_config(tmp_path, videos_dir=str(_folder(tmp_path))))
    lake = Lake(str(tmp_path / "lake"))
    before = lake.count("bench_scores")
    other = write_folder(tmp_path / "other", {"dark-1": gray_video(32), "bright-1": gray_video(224)})
    with pytest.raises(ValueError, match=r"bench run 'toy' .* already holds scores of 5 samples this job does not"):
        _run(_config(tmp_path, videos_dir=str(other)))
    assert lake.count("bench_scores") == before
    fresh = _run(_config(tmp_path, videos_dir=str(other), run="toy-other"))
    assert fresh["written"] == 4 and fresh["summary"].means["toy_brightness"] == pytest.approx(128 / 255, abs=0.01)
    grown = write_folder(tmp_path / "videos", {"dark-2": gray_video(16)})  # more samples of the same set: scored
    assert _run(_config(tmp_path, videos_dir=str(grown)))["written"] == 2


@pytest.mark.slow
def test_kill9_then_rerun_scores_every_pair_once(tmp_path: Path) -> None:
    from tests.jobs.test_kill_resume import Case, kill_at_random_commit

    folder = _folder(tmp_path)
    for i in range(4):  # more commits to land the kill between
        write_folder(folder, {f"gray{i}-0": gray_video(40 * i + 20)})
    reference = tmp_path / "reference"
    _run(_config(tmp_path, lake=str(reference), videos_dir=str(folder)))
    lake = tmp_path / "lake"
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, videos_dir=str(folder))))
    case = Case("jobs.bench", ["--config", str(config)], lake, reference, ("bench_scores",), "bench_scores")
    kill = kill_at_random_commit(case, 9, np.random.default_rng(3), tmp_path)
    assert kill.at_commit >= 1
    partial = len(_scores(Lake(str(lake)))) if Lake(str(lake)).exists("bench_scores") else 0
    assert partial < 18
    _run(_config(tmp_path, videos_dir=str(folder)))
    got, want = _scores(Lake(str(lake))), _scores(Lake(str(reference)))
    assert got.keys() == want.keys() and len(got) == 18
    for key, row in want.items():
        assert got[key]["status"] == row["status"] and got[key]["score"] == row["score"], key
    shutil.rmtree(reference)


def test_real_dimensions_end_to_end_through_the_suite(tmp_path: Path, bench_models: dict[str, Path]) -> None:
    """The registered dimensions (no toy): a static video scores near 0 on large motion and near 1 on pixel
    stability, a pan is recognised as the suite's camera move, and image quality runs on the tiny random CLIP and
    heads through the real loading code; each sample only on its suite prompt's dimensions."""
    from curation.synth.bench_videos import camera_video, static_video

    folder = write_folder(tmp_path / "videos", {"still": static_video(), "pan": camera_video("pan_left", speed=3.0)},
                          fps=16.0)
    suite = tmp_path / "suite.jsonl"
    suite.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a quiet room", "file": "still.mp4", "dimensions": ["large_motion", "pixel_stability",
                                                                        "image_quality"]},
        {"prompt": "the camera pans left", "file": "pan.mp4", "dimension": "camera_control",
         "meta": {"camera": "pan_left"}}]) + "\n")
    quality = {"clip": {"path": str(bench_models["clip"])}, "aesthetic_weights": str(bench_models["aesthetic"]),
               "maniqa_weights": str(bench_models["maniqa"]), "musiq_weights": str(bench_models["musiq"])}
    result = _run({"lake": str(tmp_path / "lake"), "run": "real", "videos_dir": str(folder),
                   "prompts_file": str(suite), "execution": "local", "max_side": 128,
                   "dimensions": ["large_motion", "pixel_stability", "image_quality", "camera_control"],
                   "dimension_config": {"image_quality": quality}})
    scores = _scores(Lake(str(tmp_path / "lake")), "real")
    assert set(scores) == {("still.mp4", "large_motion"), ("still.mp4", "pixel_stability"),
                           ("still.mp4", "image_quality"), ("pan.mp4", "camera_control")}
    assert all(r["status"] == "ok" for r in scores.values()), [r["error"] for r in scores.values()]
    assert scores[("still.mp4", "large_motion")]["score"] < 0.05
    assert scores[("still.mp4", "pixel_stability")]["score"] > 0.9
    assert scores[("pan.mp4", "camera_control")]["score"] > 0.9
    assert set(json.loads(scores[("still.mp4", "image_quality")]["evidence_json"])["parts"]) == \
        {"maniqa", "aesthetic", "musiq"}
    assert result["summary"].groups["camera_control"] == "instruction_following"


def test_suite_sampled_by_the_sample_job_then_scored(tmp_path: Path) -> None:
    """The loop: ``wan bench sample`` turns a suite into a sample job (tiny random Wan), runs it, and ``wan bench
    score`` scores the samples table with each prompt's own dimensions."""
    from jobs.bench import main

    suite = tmp_path / "suite.jsonl"
    suite.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a red fox in snow", "dimension": "toy_brightness"},
        {"prompt": "a lighthouse at night", "dimensions": ["toy_brightness", "toy_motion"]}]) + "\n")
    lake, job = tmp_path / "lake", tmp_path / "sample.yaml"
    assert main(["sample", "--suite", str(suite), "--lake", str(lake), "--out", str(job), "--random-tiny", "--run",
                 "--local", "--set", "sampling={height: 32, width: 32, num_frames: 5, num_steps: 2}",
                 "--set", f"models.tiny_dir={tmp_path / 'tiny'}"]) == 0
    assert yaml.safe_load(job.read_text())["prompts_file"] == str(suite.resolve())
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({**_config(tmp_path), "prompts_file": str(suite)}))
    assert main(["score", "--config", str(config)]) == 0
    rows = Lake(str(lake)).read("bench_scores").to_pylist()
    prompts = {s["sample_id"]: s["prompt"] for s in Lake(str(lake)).read("samples").to_pylist()}
    got = sorted((prompts[r["sample_id"]], r["dimension"], r["status"]) for r in rows)
    assert got == [("a lighthouse at night", "toy_brightness", "ok"), ("a lighthouse at night", "toy_motion", "ok"),
                   ("a red fox in snow", "toy_brightness", "ok")]
    assert main(["sample", "--suite", str(tmp_path / "none.jsonl"), "--lake", str(lake), "--out", str(job)]) == 2
