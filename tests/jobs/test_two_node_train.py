"""DiT training across a simulated 2-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and two
worker nodes of 3 CPUs): ``train_dit_ray`` with 2 workers, one per node, runs to a checkpoint; the same config run
again resumes from it and continues; the losses of the two runs together equal an uninterrupted run of the same
config on one node.

Each cluster lives in its own process (``python -m tests.jobs.test_two_node_train``, as in ``test_two_node``): a
process holds one Ray, and the test session's embedded Ray stays untouched. The checkpoint folder is under the
test's temporary folder, which both simulated nodes (one machine) see, as they would see shared storage.

Placement: each worker asks for 2 CPUs (``cpus_per_worker``), so no node holds two of them, and the third CPU of
each node is left to the Ray Data task that reads the ``latents`` index (Ray Train keeps the workers' CPUs out of
Ray Data's budget, and a read task needs a whole CPU on one node: with 2-CPU nodes it would wait forever).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STOP, STEPS = 3, 6  # the first run stops at its checkpoint at STOP; the second continues to STEPS
RESULT = "result "


def train_config(lake: str, out: str, steps: int, address: str | None) -> Any:
    """The one config of every run here but for its steps: 2 workers, FSDP2 over both, a checkpoint every STOP."""
    from wanmodel.train.dit_config import DiTTrainConfig

    return DiTTrainConfig(lake=lake, buckets=["img_4x4", "vid_4x6"], steps=steps, global_batch_size=4, seed=3,
                          log_every=1, checkpoint_every=STOP, checkpoint_dir=f"{out}/ckpt",
                          metrics_dir=f"{out}/metrics", optim={"lr": 2e-3}, peak_tflops=0.1, ray=True,
                          num_workers=2, cpus_per_worker=2, ray_address=address)


def _start_cluster(nodes: int) -> Any:
    """A CPU-less head and ``nodes`` worker nodes of 3 CPUs, or None for one node (the embedded Ray)."""
    if nodes == 1:
        return None
    from ray.cluster_utils import Cluster

    from tests.jobs.s3_server import free_port

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 << 20,
                                                            "dashboard_port": free_port()})
    for _ in range(nodes):
        cluster.add_node(num_cpus=3, object_store_memory=150 << 20)
    cluster.wait_for_nodes()
    return cluster


def _worker_nodes() -> dict[str, Any]:
    """Ray's state API: the nodes with CPUs, and the nodes that ran a Ray Train worker actor."""
    import ray
    from ray.util.state import list_actors

    cpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
    address = ray.get_runtime_context().gcs_address  # this run's Ray, not another one on the machine
    workers = [a for a in list_actors(address=address, limit=10_000, detail=True)
               if "RayTrainWorker" in a.class_name]
    return {"cpu_nodes": len(cpu_nodes), "train_workers": len(workers),
            "worker_nodes": sorted({a.node_id for a in workers} & cpu_nodes)}


def run_fits(lake: str, out: str, nodes: int, stops: list[int]) -> dict[str, Any]:
    """``train_dit_ray`` to each of ``stops`` in turn with the same config and checkpoint folder."""
    import ray

    from wanmodel.train.dit import train_dit_ray

    cluster = _start_cluster(nodes)
    fits = []
    try:
        for steps in stops:
            result = train_dit_ray(train_config(lake, out, steps, cluster.address if cluster else None))
            fits.append({"steps": steps, "checkpoint": result.checkpoint})
        placement = _worker_nodes() if cluster else {}  # the embedded Ray has no dashboard for the state API
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    records = [json.loads(line) for line in Path(out, "metrics", "metrics.jsonl").read_text().splitlines()]
    return {"fits": fits, **placement, "records": [{"step": r["step"], "loss": r["loss"]} for r in records]}


def _run(nodes: int, lake: Path, out: Path, stops: list[int]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="rt", dir="/tmp"), PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "tests.jobs.test_two_node_train", str(lake), str(out), str(nodes),
               *map(str, stops)]
    r = subprocess.run(command, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    line = next(x for x in reversed(r.stdout.splitlines()) if x.startswith(RESULT))
    return json.loads(line[len(RESULT):])


@pytest.mark.slow  # three Ray Train runs on two fresh Ray clusters: about a minute and a half on 2 cores
def test_two_node_training_checkpoints_and_resumes(tmp_path: Path) -> None:
    from tests.wanmodel.test_dit_train import write_lake

    lake = write_lake(tmp_path / "lake")
    two = _run(2, Path(lake.root), tmp_path / "two", [STOP, STEPS])
    one = _run(1, Path(lake.root), tmp_path / "one", [STEPS])

    assert two["cpu_nodes"] == 2 and two["train_workers"] == 4  # 2 workers in each of the 2 runs
    assert len(two["worker_nodes"]) == 2, two  # both worker nodes ran a worker
    assert [Path(f["checkpoint"]).name for f in two["fits"]] == [f"step_{STOP:06d}", f"step_{STEPS:06d}"]
    meta = json.loads((tmp_path / "two" / "ckpt" / f"step_{STEPS:06d}" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == STEPS
    # the second run resumed at STOP: every step logged once over both runs, none replayed from step 1
    assert [r["step"] for r in two["records"]] == list(range(1, STEPS + 1))
    reference = {r["step"]: r["loss"] for r in one["records"]}
    assert sorted(reference) == list(range(1, STEPS + 1))
    resumed = {r["step"]: r["loss"] for r in two["records"]}
    assert resumed == reference  # bit for bit (CPU, the same seed; JSON keeps a float's every bit)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("lake")
    parser.add_argument("out")
    parser.add_argument("nodes", type=int)
    parser.add_argument("stops", type=int, nargs="+")
    a = parser.parse_args()
    print(RESULT + json.dumps(run_fits(a.lake, a.out, a.nodes, a.stops)))
