"""``python -m jobs.train``: kill -9 after a checkpoint, then the same command again, continues exactly.

The job trains the tiny DiT on the ``tiny`` curriculum stage of jobs/configs/train_tiny.yaml over planted latents.
It runs in its own process group and is killed with SIGKILL once its first checkpoint exists. The same command
then resumes from the newest complete checkpoint: its losses equal an uninterrupted run's bit for bit, and over
both runs every sample is trained on exactly once per epoch (an epoch of its media type's stream: the stage mixes
images and videos half and half).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wanmodel.test_dit_train import write_lake

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jobs" / "configs" / "train_tiny.yaml"
TINY_STAGE = {"i32_1x1": (16, 1, 4, 4), "v32_1x1": (16, 2, 4, 4)}  # the tiny stage's buckets and latent shapes
STEPS, EVERY = 48, 4


def _overrides(lake: str, out: Path) -> dict[str, object]:
    return {"lake": lake, "steps": STEPS, "checkpoint_every": EVERY, "log_every": 1, "record_samples": True,
            "checkpoint_dir": str(out / "ckpt"), "metrics_dir": str(out / "metrics"), "export_dir": None,
            "peak_tflops": 0.1}


def _command(overrides: dict[str, object]) -> list[str]:
    command = [sys.executable, "-m", "jobs.train", "--config", str(CONFIG), "--local"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    return command


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def job_env() -> dict[str, str]:
    """A job process's environment: none of this session's RAY_* settings, and one torch thread, as the in-process
    reference runs under ``one_thread`` (CPU float sums depend on the thread count, and earlier tests may have
    changed this process's)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_killed_run(command: list[str], ckpt: Path, log: Path) -> None:
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=job_env())
    deadline = time.monotonic() + 240
    while not (ckpt / f"step_{EVERY:06d}").is_dir():
        assert proc.poll() is None, f"the job ended before its first checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # three training runs of 48 steps, two of them fresh processes
def test_kill_9_then_same_command_resumes_exactly(tmp_path: Path) -> None:
    from wanmodel.train.dit import train_dit
    from wanmodel.train.dit_config import load_dit_train_config

    lake = write_lake(tmp_path / "lake", buckets=TINY_STAGE)  # 8 rows each: 4 batches of 4 per epoch
    with one_thread():
        reference = train_dit(load_dit_train_config(CONFIG, {**_overrides(lake.root, tmp_path / "ref"),
                                                             "ray": False}))
    out = tmp_path / "job"
    command = _command(_overrides(lake.root, out))
    _start_killed_run(command, out / "ckpt", tmp_path / "killed.log")
    killed_at = max(r["step"] for r in _jsonl(out / "metrics" / "metrics.jsonl"))
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=job_env())
    assert done.returncode == 0, done.stderr[-3000:]
    start = int(done.stdout.split("done: steps ")[1].split("..")[0])
    assert start >= EVERY and start % EVERY == 0 and start < STEPS, done.stdout

    records = _jsonl(out / "metrics" / "metrics.jsonl")
    resumed = {r["step"]: r["loss"] for r in records[killed_at:]}
    assert sorted(resumed) == list(range(start + 1, STEPS + 1))
    assert resumed == {s: reference.losses[s] for s in resumed}  # bit for bit (JSON keeps a float's every bit)

    last_of_step: dict[int, dict] = {}
    for record in _jsonl(out / "metrics" / "samples.jsonl"):
        if record["step"] in last_of_step:  # replayed after the kill: the very same batch
            assert record["latent_ids"] == last_of_step[record["step"]]["latent_ids"]
        last_of_step[record["step"]] = record
    assert sorted(last_of_step) == list(range(1, STEPS + 1))
    per_epoch: dict[tuple[str, int], list[str]] = defaultdict(list)
    for record in last_of_step.values():
        per_epoch[record["stream"], record["epoch"]] += record["latent_ids"]
    rows = lake.read("latents", columns=["latent_id", "media_type"]).to_pylist()
    by_stream = {m: sorted(r["latent_id"] for r in rows if r["media_type"] == m) for m in ("image", "video")}
    last_epoch = {stream: max(e for s, e in per_epoch if s == stream) for stream in by_stream}
    assert set(last_epoch) == {"image", "video"}  # the tiny stage's mix: half images, half videos
    for (stream, epoch), seen in per_epoch.items():
        assert len(seen) == len(set(seen)), f"{stream} epoch {epoch}: a sample seen twice"
        if epoch < last_epoch[stream]:  # a finished epoch: every sample of the stream exactly once
            assert sorted(seen) == by_stream[stream], f"{stream} epoch {epoch}: a sample skipped"
