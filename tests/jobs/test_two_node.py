"""A simulated 2-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPUs, so every task runs on one of
two worker nodes) runs the curation job (classical and model stages) and the caption job, and the lake ends with
the same keys and values as the same jobs on one node.

Each run happens in its own process (``python -m tests.jobs.test_two_node``): a process holds one Ray, and the
test session's embedded Ray stays untouched."""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

SUBSET = ("v0002.mp4", "v0011.mp4", "v0000.mp4", "i0000.png", "i0001.jpg")  # 8 clips, 3 of them after cuts
STAGES = ["ingest", "shots", "borders", "exposure", "blur", "embed", "aesthetic", "select"]
TABLES = ["videos", "clips", "stages/borders", "stages/exposure", "stages/blur", "stages/embed", "stages/aesthetic",
          "curated", "captions"]
REPO = Path(__file__).resolve().parents[2]


def run_jobs(media: str, lake: str, models: str, nodes: int) -> None:
    """The curation job then the caption job over ``media`` into ``lake``: on the embedded one-node Ray (2 CPUs)
    or on a ``Cluster`` of a CPU-less head and ``nodes`` worker nodes with one CPU each."""
    import ray
    from ray.cluster_utils import Cluster

    from captioner.batch import CaptionJobConfig, run_caption_job
    from curation.pipeline import run_curation
    from tests.conftest import demo_config
    from tests.jobs.s3_server import free_port

    cluster, ray_cfg = None, {"ray.num_cpus": 2}
    if nodes > 1:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 150 << 20,
                                                                "dashboard_port": free_port()})
        for _ in range(nodes):
            cluster.add_node(num_cpus=1, object_store_memory=150 << 20)
        cluster.wait_for_nodes()
        ray_cfg = {"ray.address": cluster.address}
    cfg = demo_config(Path(lake), Path(media), stages=STAGES, **ray_cfg, **{
        "embed.clip.path": f"{models}/clip", "aesthetic.weights": f"{models}/aesthetic.safetensors",
        "report.html": False})
    run_curation(cfg)  # joins the cluster at cfg.ray.address (or starts the embedded Ray)
    alive = [n for n in ray.nodes() if n["Alive"]]
    print("nodes", len(alive), "cpus", sum(n["Resources"].get("CPU", 0) for n in alive))
    run_caption_job(CaptionJobConfig(lake=lake, model=f"{models}/captioner", backend="hf", max_new_tokens=6,
                                     batch_size=2, commit_every=2, use_ocr=False,
                                     ray={"address": cluster.address} if cluster else {}), progress=False)
    if cluster is not None:  # which nodes ran the jobs' tasks and actors (Ray's state API)
        from ray.util.state import list_actors, list_tasks

        workers = {n["NodeID"] for n in alive if n["Resources"].get("CPU", 0) > 0}
        ran = {t.node_id for t in list_tasks(limit=10_000, detail=True)}
        ran |= {a.node_id for a in list_actors(limit=10_000, detail=True)}
        print("worker nodes used", len(ran & workers))
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


def _close(a: object, b: object) -> bool:
    """Equal, floats (and lists of them, embeddings in float16) to a relative 1e-3."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _rows(lake_root: str, table: str) -> dict[str, dict]:
    from curation.lake import Lake
    from curation.lake.schemas import key_for

    t = Lake(lake_root).read(table)
    key = key_for(table)
    names = [f.name for f in t.schema if not pa.types.is_timestamp(f.type)]
    return {r[key]: r for r in t.select(names).to_pylist()}


def _run(nodes: int, media: Path, lake: Path, models: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=tempfile.mkdtemp(prefix="rn", dir="/tmp"), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "tests.jobs.test_two_node", str(media), str(lake), str(models),
                        str(nodes)], env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return r.stdout


@pytest.mark.slow
def test_two_node_cluster_gives_the_one_node_lake(corpus, tmp_path: Path):
    from captioner.tiny import save_tiny_captioner
    from curation.config import ClipModelConfig, EmbedConfig
    from curation.models.aesthetic import save_random_aesthetic_head
    from curation.models.clip import save_tiny_clip
    from curation.stages.model_stages import embedding_dim

    media_all, _ = corpus
    media, models = tmp_path / "media", tmp_path / "models"
    media.mkdir()
    for name in SUBSET:
        shutil.copy(media_all / name, media / name)
    clip = save_tiny_clip(models / "clip")
    save_random_aesthetic_head(models / "aesthetic.safetensors",
                               embedding_dim(EmbedConfig(clip=ClipModelConfig(path=str(clip)))))
    save_tiny_captioner(models / "captioner", seed=0)

    one = _run(1, media, tmp_path / "one", models)
    two = _run(2, media, tmp_path / "two", models)
    assert "nodes 1 cpus 2.0" in one and "nodes 3 cpus 2.0" in two and "worker nodes used 2" in two
    for table in TABLES:
        a, b = _rows(str(tmp_path / "one"), table), _rows(str(tmp_path / "two"), table)
        assert a and sorted(a) == sorted(b), table
        for key, row in a.items():
            diff = [c for c in row if not _close(row[c], b[key][c])]
            assert not diff, (table, key, {c: (row[c], b[key][c]) for c in diff})
    clips_ok = [k for k, r in _rows(str(tmp_path / "two"), "clips").items() if r["status"] == "ok"]
    assert len(clips_ok) == 8


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("media", "lake", "models"):
        parser.add_argument(name)
    parser.add_argument("nodes", type=int)
    a = parser.parse_args()
    run_jobs(a.media, a.lake, a.models, a.nodes)
