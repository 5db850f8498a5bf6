"""Which Ray a job gets: its own embedded Ray despite a stale cluster file, a clear error within a minute for a
dead cluster address, and the lake-location check every job makes before it runs on a cluster."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curation.jobconfig import ConfigError
from curation.ray_runtime import (RAY_JOBS_MARKER, RayClusterUnreachable, check_lake_location, ensure_ray,
                                  joins_cluster, requested_address)
from tests.conftest import REPO


def _dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("RAY_ADDRESS", RAY_JOBS_MARKER):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if this process had not started Ray yet (the test session's Ray, when earlier tests started it, is
    left running: ensure_ray must fail before it would call ray.init)."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def _ray_env(tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", RAY_JOBS_MARKER)}
    return {**env, "RAY_TMPDIR": tmp, "HOME": tmp, "PYTHONPATH": str(REPO), **extra}


def test_stale_cluster_file_does_not_capture_the_embedded_ray():
    """Ray's temp folder records a cluster whose head died without `ray stop`: the job starts its own Ray."""
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets need a short path
    dead = f"127.0.0.1:{_dead_port()}"
    os.makedirs(os.path.join(tmp, "ray"), exist_ok=True)
    Path(tmp, "ray", "ray_current_cluster").write_text(dead)
    code = ("import ray; from ray._private import services; from curation.ray_runtime import ensure_ray\n"
            "assert services.find_bootstrap_address(None) == %r, 'the stale file is not where Ray reads it'\n"
            "ensure_ray()\n"
            "print('answer', ray.get(ray.remote(lambda: 6 * 7).remote()))\n"
            "ray.shutdown()\n") % dead
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], env=_ray_env(tmp), cwd=REPO, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "answer 42" in r.stdout
    assert time.monotonic() - t0 < 120


def test_dead_cluster_address_fails_fast_naming_it(clean_env, fresh_process):
    address = f"127.0.0.1:{_dead_port()}"
    t0 = time.monotonic()
    with pytest.raises(RayClusterUnreachable, match=address):
        ensure_ray(address, connect_timeout_s=3)
    assert time.monotonic() - t0 < 10


def test_dead_cluster_from_the_job_command_line_fails_within_a_minute(tmp_path: Path):
    """`python -m jobs.curate` told to join a cluster that is not there: exit code, message, under a minute."""
    address = f"127.0.0.1:{_dead_port()}"
    config = tmp_path / "job.yaml"
    config.write_text(f"lake: {tmp_path / 'lake'}\ninput: {{paths: [{tmp_path}]}}\nstages: [ingest]\n"
                      f"ray: {{address: '{address}'}}\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "jobs.curate", "--config", str(config)], cwd=REPO,
                       env=_ray_env(tempfile.mkdtemp(prefix="rt", dir="/tmp")), capture_output=True, text=True,
                       timeout=120)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"no Ray cluster at {address}" in r.stderr


def test_auto_with_a_stale_file_fails_fast_naming_the_recorded_address(monkeypatch: pytest.MonkeyPatch,
                                                                        fresh_process: None):
    from ray._private import services

    dead = f"127.0.0.1:{_dead_port()}"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: dead)
    with pytest.raises(RayClusterUnreachable, match=dead):
        ensure_ray("auto", connect_timeout_s=2)


def test_which_ray_a_job_joins(clean_env):
    assert requested_address(None) is None and not joins_cluster(None)
    assert requested_address("local") is None
    assert requested_address("10.0.0.5:6379") == "10.0.0.5:6379" and joins_cluster("auto")
    clean_env.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # a job server for `ray job submit`, not a cluster
    assert requested_address(None) is None and not joins_cluster(None)
    clean_env.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert requested_address(None) == "10.0.0.5:6379"
    assert requested_address("local") is None
    clean_env.delenv("RAY_ADDRESS")
    clean_env.setenv(RAY_JOBS_MARKER, "{}")
    assert joins_cluster(None)


@pytest.mark.parametrize("lake", ["out/lake", "lake", "./lake", "file://out/lake"])
def test_relative_lake_refused_under_ray_jobs(clean_env, lake: str):
    clean_env.setenv(RAY_JOBS_MARKER, "{}")
    with pytest.raises(ConfigError) as e:
        check_lake_location(lake, None)
    message = str(e.value)
    assert repr(lake) in message and "temporary copy of the working directory" in message
    assert "absolute path" in message and "s3://" in message


def test_relative_lake_refused_against_a_cluster(clean_env):
    with pytest.raises(ConfigError, match="on the Ray cluster at 10.0.0.5:6379"):
        check_lake_location("out/lake", "10.0.0.5:6379")


@pytest.mark.parametrize("lake", ["/mnt/shared/lake", "file:///mnt/shared/lake", "s3://bucket/lake",
                                  "gs://bucket/lake"])
def test_absolute_or_object_store_lake_accepted_on_a_cluster(clean_env, lake: str):
    clean_env.setenv(RAY_JOBS_MARKER, "{}")
    check_lake_location(lake, None)
    check_lake_location(lake, "10.0.0.5:6379")


def test_relative_lake_fine_for_the_embedded_ray(clean_env):
    check_lake_location("out/lake", None)
    check_lake_location("out/lake", "local")


@pytest.mark.parametrize("job,config", [
    ("jobs.curate", "lake: out/x\ninput: {paths: [out/y]}\nstages: [ingest]\n"),
    ("jobs.caption", None),
    ("jobs.sample", None),
])
def test_every_job_entry_point_refuses_a_relative_lake_under_ray_jobs(tmp_path: Path, job: str,
                                                                      config: str | None):
    configs = {"jobs.caption": "caption_tiny.yaml", "jobs.sample": "sample_tiny.yaml"}
    path = tmp_path / "job.yaml"
    if config is None:
        path = REPO / "jobs/configs" / configs[job]
    else:
        path.write_text(config)
    env = {**_ray_env(str(tmp_path)), RAY_JOBS_MARKER: "{}"}
    r = subprocess.run([sys.executable, "-m", job, "--config", str(path), "--lake", "rel/lake"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    assert "'rel/lake' is a relative local path" in r.stderr
    assert not (tmp_path / "rel").exists()
