"""Stage ``cluster``: k-means over the CLIP embeddings (report 3.1 "Visual quality": 100 clusters, so that
selection can take data from every cluster and the long tail is not lost).

The centroids are fitted on a random sample of ``cluster.sample_size`` embedded clips and stored in the
``cluster_centroids`` table with a hash of the fit settings and the embed model; then an actor pool
(``curation.stages.model_runner``) assigns every embedded clip to its nearest centroid, writing
``stages/cluster``. A re-run with the same settings keeps the centroids and assigns only new clips; other
settings, another embed model or ``cluster.refit`` fit anew, and the rows of the old centroids are recomputed
(their ``stage_version`` is a hash of the centroids).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from curation.config import ClusterConfig
from curation.embeddings.kmeans import assign_clusters, fit_kmeans
from curation.embeddings.lake_io import EmbedIndex, embed_index
from curation.lake.schemas import CLUSTER_CENTROIDS, EMBED_TABLE, stage_schema
from curation.lake.tables import Lake
from curation.stages.model_runner import ModelStageSpec, run_model_stage

log = logging.getLogger(__name__)

STAGE = "cluster"
VERSION = "1"
CENTROIDS_TABLE = "cluster_centroids"
_FIT_FIELDS = ("n_clusters", "sample_size", "niter", "n_init", "max_swaps", "backend", "seed")


class ClusterAssigner:
    """Actor model: the nearest centroid of each clip's embedding."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.centroids = np.asarray(centroids, np.float32)

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        emb = row.get("embedding")
        if emb is None:
            raise ValueError("no embedding")
        emb = np.asarray(emb, np.float32)
        if emb.shape != (self.centroids.shape[1],):
            raise ValueError(f"embedding width {emb.shape} differs from the centroids' {self.centroids.shape[1]}")
        return emb

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        ids, sims = assign_clusters(np.stack(prepared), self.centroids)
        return [{"cluster_id": int(i), "centroid_similarity": float(s)} for i, s in zip(ids, sims)]


def fit_hash(cfg: ClusterConfig, index: EmbedIndex) -> str:
    """Hash of what determines the centroids: the fit settings and the embed stage's version."""
    blob = json.dumps({"fit": {k: getattr(cfg, k) for k in _FIT_FIELDS}, "embed": index.stage_versions},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def centroids_version(centroids: np.ndarray) -> str:
    """``stage_version`` of rows assigned with ``centroids``."""
    return f"{VERSION}-{hashlib.sha256(np.ascontiguousarray(centroids, np.float32).tobytes()).hexdigest()[:12]}"


def load_centroids(lake: Lake) -> tuple[np.ndarray, str] | None:
    """The stored centroids (ordered by cluster id) and their fit hash, or None."""
    if not lake.exists(CENTROIDS_TABLE):
        return None
    t = lake.read(CENTROIDS_TABLE).sort_by("cluster_id")
    if t.num_rows == 0:
        return None
    cent = np.array(t.column("centroid").to_pylist(), np.float32)
    return cent, t.column("fit_hash")[0].as_py()


def fit_centroids(lake: Lake, index: EmbedIndex, cfg: ClusterConfig) -> np.ndarray:
    """Fit on a seeded random sample of the embedded clips and store the centroids; returns them."""
    n = len(index)
    if n < cfg.n_clusters:
        raise ValueError(f"cluster: {n} embedded clips is fewer than cluster.n_clusters={cfg.n_clusters}; "
                         "lower cluster.n_clusters")
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(n, size=min(cfg.sample_size, n), replace=False))
    sample = index.read(index.positions[pick])
    log.info("cluster: fitting %d centroids on %d of %d embeddings (%s)", cfg.n_clusters, len(pick), n, cfg.backend)
    cent = fit_kmeans(sample, cfg.n_clusters, niter=cfg.niter, n_init=cfg.n_init, max_swaps=cfg.max_swaps,
                      seed=cfg.seed, backend=cfg.backend)
    members = np.bincount(assign_clusters(sample, cent)[0], minlength=cfg.n_clusters)
    now = dt.datetime.now(dt.UTC)
    lake.overwrite(CENTROIDS_TABLE, pa.table({
        "cluster_id": pa.array(np.arange(cfg.n_clusters), pa.int32()),
        "centroid": pa.array([c.tolist() for c in cent], pa.list_(pa.float32())),
        "fit_rows": pa.array([len(pick)] * cfg.n_clusters, pa.int64()),
        "sample_members": pa.array(members, pa.int64()),
        "fit_hash": pa.array([fit_hash(cfg, index)] * cfg.n_clusters, pa.string()),
        "fitted_at": pa.array([now] * cfg.n_clusters, pa.timestamp("us", tz="UTC")),
    }, schema=CLUSTER_CENTROIDS))
    return cent


def require_embeddings(lake: Lake, stage: str) -> EmbedIndex | None:
    """The embed index, or None when nothing is to be done yet (no clips); an error when clips exist but were
    never embedded."""
    index = embed_index(lake)
    if index is None:
        if lake.count("clips", "status = 'ok'") > 0:
            raise RuntimeError(f"{stage} needs the 'embed' stage's table: run stage 'embed' first")
        return None
    return index


def run_cluster(lake: Lake, cfg: ClusterConfig, *, backend: str = "ray", commit_every: int = 1024) -> dict[str, Any]:
    """Fit (when needed) and assign; returns counts for the summary and ``runs``."""
    index = require_embeddings(lake, STAGE)
    if index is None or len(index) == 0:
        if not lake.exists(f"stages/{STAGE}"):
            lake.overwrite(f"stages/{STAGE}", stage_schema(STAGE).empty_table())
        return {"in": 0, "ok": 0, "failed": 0, "refit": False}
    stored = load_centroids(lake)
    refit = cfg.refit or stored is None or stored[1] != fit_hash(cfg, index) or len(stored[0]) != cfg.n_clusters
    cent = fit_centroids(lake, index, cfg) if refit else stored[0]
    spec = ModelStageSpec(name=STAGE, version=centroids_version(cent),
                          make_model=functools.partial(ClusterAssigner, cent), input_table=EMBED_TABLE,
                          input_columns=("clip_id", "embedding"), batch_size=cfg.batch_size,
                          concurrency=cfg.concurrency, num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus)
    res = run_model_stage(lake, spec, backend=backend, commit_every=commit_every, record=False)
    st = res.status.get(spec.table, {})
    return {"in": res.count_in, "ok": st.get("ok", 0), "failed": st.get("error", 0), "refit": refit,
            "clusters": int(cent.shape[0]), "total": lake.count(spec.table)}
