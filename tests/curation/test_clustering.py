"""k-means on generated mixtures recovers the planted clusters; quotas keep the long tail."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from curation.embeddings.kmeans import assign_clusters, fit_kmeans
from curation.embeddings.quotas import capped, take_by_quota, water_fill
from tests.curation.embedding_data import gaussian_mixture, single_threaded


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def test_faiss_kmeans_recovers_100_planted_clusters():
    x, planted = gaussian_mixture(100, 30, dim=64, spread=0.8, seed=1)
    centroids = fit_kmeans(x, 100, niter=20, seed=0, backend="faiss")
    assert centroids.shape == (100, 64)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    found, sims = assign_clusters(x, centroids)
    assert adjusted_rand_score(planted, found) >= 0.9
    assert np.allclose(sims, np.einsum("ij,ij->i", x, centroids[found]), atol=1e-5)
    assert sims.min() >= (x @ centroids.T).max(axis=1).min() - 1e-6  # the nearest centroid, not another


def test_torch_kmeans_recovers_a_long_tailed_mixture_and_agrees_with_faiss():
    # Long tail: Lloyd alone splits the 400 and merges the two 8s here; the centroid swaps undo that.
    sizes = [400, 200, 100, 50, 25, 12, 8, 8]
    x, planted = gaussian_mixture(len(sizes), sizes, dim=64, spread=0.5, seed=2)
    by_torch = assign_clusters(x, fit_kmeans(x, len(sizes), seed=0, backend="torch"))[0]
    by_faiss = assign_clusters(x, fit_kmeans(x, len(sizes), seed=0, backend="faiss"))[0]
    assert adjusted_rand_score(planted, by_torch) >= 0.9
    assert adjusted_rand_score(by_faiss, by_torch) >= 0.9


def test_fit_on_a_sample_assigns_every_row_and_fp16_input_gives_the_same_ids():
    x, planted = gaussian_mixture(10, 200, dim=32, spread=0.8, seed=3)
    sample = np.random.default_rng(0).choice(len(x), 300, replace=False)
    centroids = fit_kmeans(x[sample], 10, seed=0)
    ids32, _ = assign_clusters(x, centroids, batch_size=257)
    ids16, _ = assign_clusters(x.astype(np.float16), centroids)
    assert adjusted_rand_score(planted, ids32) >= 0.9
    assert (ids16 == ids32).mean() > 0.99


def test_bad_inputs_are_clear_errors():
    x, _ = gaussian_mixture(3, 5, dim=8, spread=0.5)
    with pytest.raises(ValueError, match="fewer than n_clusters=100"):
        fit_kmeans(x, 100)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_kmeans(bad, 3)
    with pytest.raises(ValueError, match="unknown k-means backend"):
        fit_kmeans(x, 3, backend="sklearn")


def test_water_fill_keeps_small_clusters_whole_and_caps_large_ones():
    counts = {"a": 1, "b": 5, "c": 100, "d": 100}
    assert water_fill(counts, 50) == {"a": 1, "b": 5, "c": 22, "d": 22}
    assert water_fill(counts, 51) == {"a": 1, "b": 5, "c": 23, "d": 22}  # the remainder to the largest
    assert water_fill(counts, 1000) == counts
    assert sum(water_fill({i: n for i, n in enumerate([3, 900, 7, 40, 1])}, 100).values()) == 100
    assert capped(counts, 10) == {"a": 1, "b": 5, "c": 10, "d": 10}
    with pytest.raises(ValueError, match="budget"):
        water_fill(counts, -1)


def test_take_by_quota_takes_the_best_of_each_group():
    groups = ["x", "x", "x", "y", "y", "z"]
    scores = [0.1, 0.9, 0.5, None, 0.3, 0.2]
    taken = take_by_quota(groups, scores, {"x": 2, "y": 1, "z": 0})
    assert taken.tolist() == [False, True, True, False, True, False]


def test_cluster_stage_fits_on_a_sample_assigns_every_clip_and_assigns_only_new_clips_later(tmp_path):
    from curation.config import ClusterConfig
    from curation.stages.cluster import load_centroids, run_cluster
    from tests.curation.embedding_data import write_embedded_lake

    x, planted = gaussian_mixture(6, 100, dim=32, spread=0.8, seed=4)
    lake, ids = write_embedded_lake(tmp_path, x)
    cfg = ClusterConfig(n_clusters=6, sample_size=150, batch_size=64)
    counts = run_cluster(lake, cfg, backend="local")
    assert counts["refit"] and counts["in"] == counts["ok"] == 600
    stored = {r["clip_id"]: r for r in lake.read("stages/cluster").to_pylist()}
    assert adjusted_rand_score(planted, [stored[c]["cluster_id"] for c in ids]) >= 0.9
    centroids, _ = load_centroids(lake)
    assert centroids.shape == (6, 32) and lake.read("cluster_centroids").column("fit_rows")[0].as_py() == 150

    more, _ = gaussian_mixture(6, 10, dim=32, spread=0.8, seed=4)  # same centres: same seed
    write_embedded_lake(tmp_path, more, start=600)
    again = run_cluster(lake, cfg, backend="local")
    assert not again["refit"] and again["in"] == 60 and lake.count("stages/cluster") == 660
    assert np.array_equal(load_centroids(lake)[0], centroids)

    refit = run_cluster(lake, cfg.model_copy(update={"n_clusters": 5}), backend="local")
    assert refit["refit"] and refit["in"] == 660  # rows of the old centroids are recomputed
    assert set(lake.read("stages/cluster").column("cluster_id").to_pylist()) == set(range(5))


def test_cluster_stage_with_too_few_clips_names_the_key_and_an_empty_lake_is_fine(tmp_path):
    from curation.config import ClusterConfig
    from curation.lake import Lake
    from curation.stages.cluster import run_cluster
    from tests.curation.embedding_data import write_embedded_lake

    assert run_cluster(Lake(str(tmp_path / "empty")), ClusterConfig(), backend="local")["in"] == 0
    x, _ = gaussian_mixture(2, 5, dim=8, spread=0.5)
    lake, _ = write_embedded_lake(tmp_path / "small", x)
    with pytest.raises(ValueError, match="fewer than cluster.n_clusters=100"):
        run_cluster(lake, ClusterConfig(), backend="local")


@pytest.mark.slow
def test_cluster_assignment_runs_as_a_ray_actor_pool(tmp_path, local_ray):
    from curation.config import ClusterConfig
    from curation.stages.cluster import run_cluster
    from tests.curation.embedding_data import write_embedded_lake

    x, planted = gaussian_mixture(4, 50, dim=16, spread=0.6, seed=5)
    lake, ids = write_embedded_lake(tmp_path, x)
    counts = run_cluster(lake, ClusterConfig(n_clusters=4, sample_size=100, batch_size=50, concurrency=2),
                         backend="ray")
    assert counts["ok"] == 200
    stored = dict(zip(*(lake.read("stages/cluster").column(c).to_pylist() for c in ("clip_id", "cluster_id"))))
    assert adjusted_rand_score(planted, [stored[c] for c in ids]) >= 0.9
