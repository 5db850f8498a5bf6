"""The ``jobs.curate`` entrypoint as users run it: a subprocess on the local Ray (kill -9 and resume of this job is a
case of ``tests/jobs/test_kill_resume.py``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
