"""The ``jobs.curate`` entrypoint as users run it: a subprocess on the local Ray, killed mid-run and re-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curation.lake import Lake
from tests.conftest import REPO


def _config(tmp: Path, media: Path, **execution: object) -> Path:
    cfg = yaml.safe_load((REPO / "jobs/configs/demo.yaml").read_text())
    cfg["lake"] = str(tmp / "lake")
    cfg["input"] = {"paths": [str(media)]}
    cfg["execution"] = {"items_per_task": 1, "commit_every": 1, **execution}
    cfg["ray"] = {"num_cpus": 2}
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(config: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.curate", "--config", str(config), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _assert_exactly_once(lake: Lake, n_inputs: int) -> None:
    uris = lake.read("videos", columns=["uri"]).column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == n_inputs
    clips = lake.read("clips", columns=["clip_id", "video_id"])
    ids = clips.column("clip_id").to_pylist()
    assert len(ids) == len(set(ids))
    ok_videos = set(lake.read("videos", columns=["video_id"], filter="status = 'ok'").column("video_id").to_pylist())
    assert set(clips.column("video_id").to_pylist()) == ok_videos
    for table in [t for t in lake.tables() if t.startswith("stages/")]:
        keys = lake.read(table, columns=["clip_id"]).column("clip_id").to_pylist()
        assert len(keys) == len(set(keys)), table
        assert set(keys) == set(ids), table


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_every_input_exactly_once(corpus, tmp_path):
    media, labels = corpus
    n_inputs = len(set(labels.column("file").to_pylist()))
    config = _config(tmp_path, media)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.curate", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lake = Lake(str(tmp_path / "lake"))
    deadline = time.time() + 300
    try:
        # Kill once the shot pass has committed some videos but not all.
        while time.time() < deadline and proc.poll() is None:
            done = len(set(lake.read("clips", columns=["video_id"]).column("video_id").to_pylist()))
            if done >= 5:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished before it could be killed: make the corpus larger"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_at_kill = len(set(lake.read("clips", columns=["video_id"]).column("video_id").to_pylist()))
    assert 0 < done_at_kill < n_inputs
    result = _run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_exactly_once(lake, n_inputs)
    # A third run has nothing left to do and changes nothing.
    before = {t: lake.count(t) for t in lake.tables()}
    assert _run(config, "--stages", "ingest,shots,borders,blur").returncode == 0
    assert {t: lake.count(t) for t in before if t != "runs"} == {t: n for t, n in before.items() if t != "runs"}


def test_stage_subset_and_adding_a_scorer_later(corpus, tmp_path):
    """Run ingest+shots with two scorers, then add motion: only the new scorer runs, on every clip."""
    media, _ = corpus
    config = _config(tmp_path, media, backend="local")
    r = _run(config, "--stages", "ingest,shots,blur,phash")
    assert r.returncode == 0, r.stderr[-3000:]
    lake = Lake(str(tmp_path / "lake"))
    assert set(lake.tables()) == {"videos", "clips", "stages/blur", "stages/phash", "runs"}
    blur_version = lake.version("stages/blur")
    r = _run(config, "--stages", "blur,motion")
    assert r.returncode == 0, r.stderr[-3000:]
    assert lake.version("stages/blur") == blur_version  # nothing to redo
    assert sorted(lake.keys("stages/motion")) == sorted(lake.keys("clips"))


def test_bad_config_fails_before_any_work(tmp_path, corpus):
    cfg = yaml.safe_load((REPO / "jobs/configs/demo.yaml").read_text())
    cfg["lake"] = str(tmp_path / "lake")
    cfg["blur"] = {"refernce_var": 10}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _run(path, timeout=120)
    assert r.returncode == 2
    assert "unknown key 'blur.refernce_var'" in r.stderr
    assert not (tmp_path / "lake").exists()
