"""``python -m jobs.train_vae`` under Ray Train: kill -9 after a checkpoint, then the same command again, continues
exactly.

The job trains the tiny Wan-VAE in its GAN phase (the discriminator and its optimizer are checkpointed too) on a
small curated lake, on one Ray Train worker. It runs in its own process group (Ray's processes with it) and is
killed with SIGKILL once its first checkpoint exists. The same command then resumes from the newest complete
checkpoint: its losses equal an uninterrupted in-process run's bit for bit, every step's clips are the
uninterrupted run's, and over both runs every clip window is trained on exactly once per epoch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.jobs.test_train_job import (
    EVERY,
    _jsonl,
    _start_killed_run,
    job_env,
    one_thread,
)
from tests.wanmodel.test_vae_train import small_lake  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jobs" / "configs" / "vae_tiny.yaml"
STEPS = 10  # the lake's usable five-frame clips give 7 batches of 2 per epoch: the run crosses an epoch boundary


def _overrides(lake: Path, out: Path) -> dict[str, object]:
    return {"lake": str(lake), "phase": "gan", "gan_start_step": 2, "disc_channels": 8, "disc_layers": 2,
            "steps": STEPS, "size": 32, "perceptual_weight": 1.0, "eval_clips": 0, "checkpoint_every": EVERY,
            "log_every": 1, "record_samples": True, "checkpoint_dir": str(out / "ckpt"),
            "metrics_dir": str(out / "metrics"), "device": "cpu", "cpu_threads": 1}


def _command(overrides: dict[str, object]) -> list[str]:
    command = [sys.executable, "-m", "jobs.train_vae", "--config", str(CONFIG)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    return command


@pytest.mark.slow  # two Ray runs in fresh processes and one in-process reference run
def test_kill_9_under_ray_then_same_command_resumes_exactly(small_lake: Path, tmp_path: Path) -> None:  # noqa: F811
    from wanmodel.train import load_train_config, train_vae

    with one_thread():
        reference = train_vae(load_train_config(CONFIG, _overrides(small_lake, tmp_path / "ref")))
    expected = {r["step"]: r for r in reference.history}
    out = tmp_path / "job"
    command = _command(_overrides(small_lake, out))
    _start_killed_run(command, out / "ckpt", tmp_path / "killed.log")
    killed_at = max(r["step"] for r in _jsonl(out / "metrics" / "metrics.jsonl"))
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=job_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    records = _jsonl(out / "metrics" / "metrics.jsonl")
    resumed = {r["step"]: r for r in records[killed_at:]}
    start = min(resumed) - 1
    assert start >= EVERY and start % EVERY == 0 and start <= killed_at, (start, killed_at)
    assert sorted(resumed) == list(range(start + 1, STEPS + 1))
    keys = ("loss", "l1", "kl", "perceptual", "g_loss", "d_loss")
    assert {s: [r[k] for k in keys] for s, r in resumed.items()} == {
        s: [expected[s][k] for k in keys] for s in resumed}  # bit for bit (JSON keeps a float's every bit)
    assert any(r["d_loss"] > 0 for r in resumed.values())  # the discriminator trained after the resume

    reference_clips = {r["step"]: r["clip_ids"] for r in _jsonl(tmp_path / "ref" / "metrics" / "samples.jsonl")}
    last_of_step: dict[int, dict] = {}
    for record in _jsonl(out / "metrics" / "samples.jsonl"):
        assert record["clip_ids"] == reference_clips[record["step"]]  # replayed steps take the very same clips
        last_of_step[record["step"]] = record
    assert sorted(last_of_step) == list(range(1, STEPS + 1))
    per_epoch: dict[int, list[str]] = defaultdict(list)
    for record in last_of_step.values():
        per_epoch[record["epoch"]] += record["clip_ids"]
    usable = _usable_clips(small_lake)
    assert max(per_epoch) >= 1
    for epoch, seen in per_epoch.items():
        assert len(seen) == len(set(seen)), f"epoch {epoch}: a clip window seen twice"
        if epoch < max(per_epoch):  # a finished epoch: every clip but the remainder short of a batch, once
            assert set(seen) <= usable and len(usable) - len(seen) < 2, f"epoch {epoch}: a clip skipped"


def _usable_clips(lake: Path) -> set[str]:
    from wanmodel.data.clips import read_clip_records
    from wanmodel.train.vae_data import usable_records

    return {r.clip_id for r in usable_records(read_clip_records(lake), 5)[0]}
