"""The README's cluster example, run as written: `ray get-auth-token --generate`, `ray start --head` (token
authentication on), then the submit block (`wan synth`, two `ray job submit ... python -m jobs.curate`) as one
bash script. The test changes only what isolates it on a shared machine: the head gets ports of its own and a temp
folder (and runs with --block so the test can stop it), HOME is a temporary folder (the token lives there), and
the README's addresses and /shared paths point at those. A job given the demo config's relative lake is refused."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curation.lake import Lake
from tests.conftest import REPO

README_DASHBOARD = "http://127.0.0.1:8265"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_cluster_blocks() -> list[list[str]]:
    """The bash blocks of the README's "Curation on a cluster" section, as lists of commands (continuation lines
    joined, comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Curation on a cluster\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = body.replace("\\\n", " ")
        lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
        blocks.append([" ".join(ln.split()) for ln in lines if ln and not ln.startswith("#")])
    return blocks


def _start_head(env: dict[str, str], cwd: Path, ray_tmp: str, gcs: int, dash: int) -> subprocess.Popen:
    own_ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")]
    return subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs), "--dashboard-host",
         "127.0.0.1", "--dashboard-port", str(dash), "--disable-usage-stats", "--temp-dir", ray_tmp, *own_ports],
        env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for_job_server(env: dict[str, str], address: str, head: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while True:  # the dashboard's job server takes a few seconds to come up
        r = subprocess.run(["ray", "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            return
        assert head.poll() is None and time.time() < deadline, r.stderr[-2000:]
        time.sleep(2)


def _stop(head: subprocess.Popen) -> None:
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def _run_script(commands: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\n" + "\n".join(commands)
    for _ in range(10):  # the job agent registers a little after the job server answers
        r = subprocess.run(["bash", "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        if "No available agent" not in r.stderr:
            return r
        time.sleep(3)
    return r


def test_readme_cluster_blocks_are_what_this_test_runs():
    head_block, submit_block = readme_cluster_blocks()[:2]
    assert head_block == ["ray get-auth-token --generate", "ray start --head"]
    assert any(c.startswith("ray job submit --address " + README_DASHBOARD) for c in submit_block)
    assert any("--lake /shared/demo/lake" in c for c in submit_block)


@pytest.mark.slow
def test_readme_cluster_example_runs_as_written(tmp_path: Path):
    head_block, submit_block = readme_cluster_blocks()[:2]
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home))
    gcs, dash = _free_port(), _free_port()
    address = f"http://127.0.0.1:{dash}"
    shared = tmp_path / "shared"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's unix sockets need a short path
    assert head_block[0] == "ray get-auth-token --generate"
    subprocess.run(head_block[0].split(), env=env, check=True, capture_output=True)
    assert (home / ".ray" / "auth_token").is_file()
    head = _start_head(env, tmp_path, ray_tmp, gcs, dash)
    try:
        _wait_for_job_server({**env, "RAY_AUTH_MODE": "token"}, address, head)
        without_token = subprocess.run(["ray", "job", "list", "--address", address], env=env,
                                       capture_output=True, text=True)
        assert without_token.returncode != 0 and "Authentication required" in without_token.stderr
        commands = [c.replace(README_DASHBOARD, address).replace("/shared", str(shared)) for c in submit_block]
        r = _run_script(commands, env)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert r.stdout.count("succeeded") + r.stderr.count("succeeded") >= 2
        refused = _run_script([commands[0], f"ray job submit --address {address} --working-dir . -- python -m "
                               "jobs.curate --config jobs/configs/demo.yaml --stages select"], env)
    finally:
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert refused.returncode != 0
    assert "'out/demo/lake' is a relative local path" in refused.stdout + refused.stderr
    lake = Lake(str(shared / "demo" / "lake"))
    media = [p for p in (shared / "demo" / "media").iterdir()]
    assert lake.count("videos") == len(media) > 0
    assert lake.count("curated") == lake.count("clips") == lake.count("stages/blur") > 0
    assert lake.count("runs", "stage = 'select'") == 2
