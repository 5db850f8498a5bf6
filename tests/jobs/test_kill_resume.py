"""kill -9 proven for every job: each stage after the classical pass (ocr ... split), the caption job and the sample
job is started as users start it (``python -m jobs.<job>``, in its own process group), killed with SIGKILL at a
seeded random commit, run again to completion (the entry point's ``main`` in this process; on the local Ray where
the victim used Ray) and compared with an uninterrupted run: every key exactly once, the same values. A third run
changes nothing. The classical pass (ingest, shots with the scorers, dedup) is one more case.

The inputs are built once (``kill_resume_lakes.build_snapshots``): the lake just before each stage, and after it
the uninterrupted reference. The victim runs under ``kill_target``, which announces every Lance commit and pauses
before it, so the kill lands at a chosen commit whatever the stage's speed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curation.jobconfig import apply_overrides
from curation.lake import Lake
from tests.conftest import REPO
from tests.jobs.kill_resume_lakes import (
    COMMIT_EVERY,
    GLOBAL_STAGES,
    GLOBAL_TABLES,
    KILLED_STAGES,
    Snapshots,
    assert_same_rows,
    build_snapshots,
    half_columns,
    output_tables,
    stage_list,
    table_rows,
)
from tests.jobs.kill_target import DELAY_VAR, LOG_VAR

SEED = int(os.environ.get("KILL_RESUME_SEED", "15"))  # another seed, other kill points
DELAY = 0.3  # seconds before each commit of the victim
RAY_CASES = {"classical", "embed", "quality", "semantic_dedup"}  # on the local Ray (actor pools, tasks); the rest in-process
CASES = (*KILLED_STAGES, "caption", "sample")
SMALL_CORPUS = {"n_videos": 12, "n_multi": 2, "n_images": 4, "n_dup_originals": 1, "n_lowres": 1, "n_large": 0,
                "min_each": 1}  # about twenty clips


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshots]:
    import torch

    from curation.synth import generate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the victims (OMP_NUM_THREADS=1): a head trained on 1 or 2 threads differs in bits
    root = tmp_path_factory.mktemp("kill_resume")
    labels = generate(root / "corpus", preset="test", seed=0, **SMALL_CORPUS)
    yield build_snapshots(root, root / "corpus" / "media", labels)
    torch.set_num_threads(threads)


@dataclass
class Case:
    """One job to kill: its entry point, its config, the tables it writes and the lake it starts from."""

    module: str
    args: list[str]
    lake: Path
    reference: Path
    tables: tuple[str, ...]
    watched: str  # the table whose commits pick the kill point
    ray: bool = False
    local_flag: list[str] = field(default_factory=list)


def _yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def curation_case(stage: str, snaps: Snapshots, tmp: Path) -> Case:
    lake = tmp / "lake"
    shutil.copytree(snaps.before[stage], lake)
    cfg = apply_overrides(yaml.safe_load((REPO / "jobs/configs/demo.yaml").read_text()),
                          {**snaps.overrides, "lake": str(lake), "stages": stage_list(stage),
                           "execution.backend": "ray" if stage in RAY_CASES else "local", "ray.num_cpus": 2})
    tables = output_tables(stage)
    watched = {"select": "curated", "split": "curated", "classical": "clips"}.get(stage, f"stages/{stage}")
    return Case("jobs.curate", ["--config", str(_yaml(tmp / "job.yaml", cfg))], lake, snaps.after(stage), tables,
                watched, ray=stage in RAY_CASES)


def caption_case(snaps: Snapshots, tmp: Path) -> Case:
    from captioner.batch import load_caption_config, run_caption_job
    from captioner.tiny import save_tiny_captioner

    model = snaps.models / "tiny_captioner"
    if not (model / "config.json").exists():
        save_tiny_captioner(model, seed=0)
    data = {"model": str(model), "backend": "hf", "execution": "local", "max_new_tokens": 6, "batch_size": 1,
            "commit_every": 1, "video_max_side": 64, "decode": {"concurrency": 1, "num_cpus": 1},
            "caption": {"concurrency": 1, "num_cpus": 1, "num_gpus": 0}}
    reference = snaps.final.parent / "caption_reference"
    if not reference.exists():  # one uninterrupted run, in this process
        shutil.copytree(snaps.final, reference)
        run_caption_job(load_caption_config(_yaml(tmp / "ref.yaml", {**data, "lake": str(reference)})),
                        progress=False)
    lake = tmp / "lake"
    shutil.copytree(snaps.final, lake)
    config = _yaml(tmp / "caption.yaml", {**data, "lake": str(lake)})
    return Case("jobs.caption", ["--config", str(config)], lake, reference, ("captions",), "captions")


def sample_case(snaps: Snapshots, tmp: Path) -> Case:
    from wanmodel.pipelines.batch import load_sample_config, run_sampling

    data = {"task": "t2v", "prompts": ["a corgi surfing a wave", "a red fox in snow", "a lighthouse at night",
                                       "dolphins chase a boat"], "seeds": [0, 1],
            "models": {"random_tiny": True, "tiny_dir": str(snaps.models / "tiny_wan")},
            "sampling": {"height": 32, "width": 32, "num_frames": 5, "num_steps": 2}, "torch_threads": 1,
            "batch_size": 1, "commit_every": 1}
    reference = snaps.final.parent / "sample_reference"
    if not reference.exists():
        run_sampling(load_sample_config(_yaml(tmp / "ref.yaml", {**data, "lake": str(reference)})), backend="local")
    lake = tmp / "lake"
    config = _yaml(tmp / "sample.yaml", {**data, "lake": str(lake)})
    return Case("jobs.sample", ["--config", str(config)], lake, reference, ("samples",), "samples",
                local_flag=["--local"])


# ------------------------------------------------------------------------------------------------ the kill
def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Ray's workers and raylet included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _commits(log: Path, event: str, table: str) -> int:
    """How many commits of ``table`` the victim has announced with ``event`` ("before" or "after")."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines()
               if line.startswith(f"{event} ") and line.rstrip("/").endswith(f"/{table}.lance"))


@dataclass
class Kill:
    """Where the victim was killed: ``offset_s`` after it announced ``event`` ("before"/"after") of its commit
    ``at_commit`` of the watched table; ``commits_done`` of them had completed."""

    at_commit: int
    event: str
    offset_s: float
    commits_done: int


def _kill_family(proc: subprocess.Popen) -> None:
    """SIGKILL the victim's process group and every process below it (Ray's raylet and workers)."""
    family = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def kill_at_random_commit(case: Case, n_commits: int, rng: np.random.Generator, tmp: Path) -> Kill:
    """Start the job in its own session; wait until it announces the start ("before") or the end ("after") of its
    ``k``-th commit of the watched table (both seeded; ``k`` in 1..n_commits - 1, not the last), then a seeded
    fraction of the pause before a commit more, and SIGKILL it. The kill lands while rows are computed, just before
    a commit, during one, or after the last one but before the ``runs`` row."""
    k = int(rng.integers(1, max(2, n_commits)))
    event, offset = str(rng.choice(["before", "after"])), float(rng.uniform(0, DELAY * 1.2))
    log = tmp / "commits.log"
    # The victim starts its own Ray (none of this process's RAY_* settings, its own short temp folder), so the
    # kill takes its whole Ray with it.
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    env = {**{name: value for name, value in os.environ.items() if not name.startswith("RAY_")},
           "RAY_TMPDIR": ray_tmp, LOG_VAR: str(log), DELAY_VAR: str(DELAY), "OMP_NUM_THREADS": "1"}
    with open(tmp / "victim.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.jobs.kill_target", case.module, *case.args,
                                 *case.local_flag], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    deadline = time.time() + 300
    try:
        while _commits(log, event, case.watched) < k and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(offset)
        alive = proc.poll() is None
    finally:
        _kill_family(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    kill = Kill(k, event, offset, _commits(log, "after", case.watched))
    assert alive, (f"the job ended before it could be killed at {kill} (rc {proc.returncode}): "
                   f"{(tmp / 'victim.err').read_text()[-3000:]}")
    return kill


# ------------------------------------------------------------------------------------------------ the runs
def run_to_completion(case: Case) -> None:
    """The same entry point in this process (``main(argv)``), as a user's second run."""
    import importlib

    main = importlib.import_module(case.module).main
    assert main([*case.args, *case.local_flag]) == 0


def expected_commits(case: Case, stage: str) -> int:
    """Commits of the watched table an uninterrupted run makes (a lower bound; at least 1)."""
    if stage in GLOBAL_STAGES:
        return 1
    counted = "videos" if stage == "classical" else case.watched  # the shot pass commits per video, not per clip
    rows = Lake(str(case.reference)).count(counted) - Lake(str(case.lake)).count(counted)
    every = 1 if stage in ("caption", "sample") else COMMIT_EVERY
    return max(1, rows // every)


def _decoded(rows: dict[str, dict[str, Any]], tmp: Path) -> dict[str, np.ndarray]:
    """Each sample's video decoded (luma): x264 may encode the same frames to other bytes from call to call."""
    from wanmodel.cli_vae import read_video

    out = {}
    for key, row in rows.items():
        video = row.pop("video")
        if video is not None:
            path = tmp / "decoded.mp4"
            path.write_bytes(video)
            out[key] = read_video(path)[0].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return out


def assert_same_tables(stage: str, lake: Lake, reference: Lake, tables: tuple[str, ...], tmp: Path) -> None:
    """Every key exactly once, each row as in the uninterrupted run; sample videos within a few grey levels (the
    same prompt with another seed differs by about 35)."""
    for table in tables:
        got, want = table_rows(lake, table), table_rows(reference, table)
        if stage == "sample":
            got_video, want_video = _decoded(got, tmp), _decoded(want, tmp)
            assert got_video.keys() == want_video.keys()
            for key, frames in want_video.items():
                assert got_video[key].shape == frames.shape and np.abs(got_video[key] - frames).mean() < 3, key
        assert_same_rows(got, want, table, half_columns(lake, table))


def make_case(stage: str, snaps: Snapshots, tmp: Path) -> Case:
    if stage == "caption":
        return caption_case(snaps, tmp)
    if stage == "sample":
        return sample_case(snaps, tmp)
    return curation_case(stage, snaps, tmp)


@pytest.mark.slow
@pytest.mark.parametrize("stage", CASES)
def test_sigkill_at_a_random_commit_then_resume_equals_an_uninterrupted_run(stage, snapshots, tmp_path, request):
    case = make_case(stage, snapshots, tmp_path)
    if case.ray:
        request.getfixturevalue("local_ray")  # the resumed run joins this process's Ray, as a second job would
    rng = np.random.default_rng([SEED, CASES.index(stage)])
    kill = kill_at_random_commit(case, expected_commits(case, stage), rng, tmp_path)
    lake, reference = Lake(str(case.lake)), Lake(str(case.reference))
    print(f"{stage}: {kill}")
    if stage not in GLOBAL_STAGES:  # killed mid-run: a keyed table holds some whole commits, each key once
        partial = table_rows(lake, case.watched)
        assert len(partial) < reference.count(case.watched), f"the kill came after the last commit: {kill}"

    run_to_completion(case)
    assert_same_tables(stage, lake, reference, case.tables, tmp_path)

    versions = lake.versions(case.tables)
    counts = {t: lake.count(t) for t in case.tables}
    run_to_completion(case)  # a third run: nothing left to do
    assert {t: lake.count(t) for t in case.tables} == counts
    keyed = [t for t in case.tables if t not in GLOBAL_TABLES]  # the others are rewritten whole by every run
    assert lake.versions(keyed) == {t: versions[t] for t in keyed}, f"a run with nothing to do committed ({kill})"
    assert_same_tables(stage, lake, reference, case.tables, tmp_path)
