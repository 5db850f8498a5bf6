"""The README's command, for real: `ray job submit --working-dir . -- python -m jobs.curate --config ...` against a
local Ray cluster started with `ray start --head`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from curation.lake import Lake
from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_the_curation_job(corpus, tmp_path: Path):
    media, labels = corpus
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    # Every port of its own: the test session's embedded Ray already holds the defaults (agent 52365, ...).
    own_ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")]
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's unix sockets need a short path
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--disable-usage-stats",
         "--temp-dir", ray_tmp, *own_ports],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cfg = yaml.safe_load((REPO / "jobs/configs/demo.yaml").read_text())
        cfg.update(lake=str(tmp_path / "lake"), input={"paths": [str(media)]}, ray={"address": "auto"},
                   stages=["ingest", "shots", "borders", "blur", "select"])
        config = tmp_path / "job.yaml"
        config.write_text(yaml.safe_dump(cfg))
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 120
        while True:  # the dashboard's job server takes a few seconds to come up
            r = subprocess.run([str(bin_dir / "ray"), "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            assert head.poll() is None and time.time() < deadline, r.stderr[-2000:]
            time.sleep(2)
        for _ in range(15):  # the job agent comes up after the job server
            r = subprocess.run(
                [str(bin_dir / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
                 "python", "-m", "jobs.curate", "--config", str(config)],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
            if "No available agent" not in r.stderr:
                break
            time.sleep(2)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "succeeded" in r.stdout + r.stderr
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lake = Lake(str(tmp_path / "lake"))
    assert lake.count("videos") == len(set(labels.column("file").to_pylist()))
    assert lake.count("curated") == lake.count("clips") == lake.count("stages/blur") == labels.num_rows
