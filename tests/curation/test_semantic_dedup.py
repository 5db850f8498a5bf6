"""Semantic dedup finds generated near-duplicates (recall and precision >= 0.95) and keeps the best member."""
from __future__ import annotations

import numpy as np
import pytest

from curation.embeddings.kmeans import assign_clusters, fit_kmeans
from curation.embeddings.semantic_dedup import (
    dedup_group,
    find_semantic_duplicates,
    similar_pairs,
)
from tests.curation.embedding_data import gaussian_mixture, near_copies, single_threaded


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _planted_corpus(seed: int = 0):
    """1000 distinct clips in 20 topics (cosine within a topic about 0.6) plus 1-3 near copies (cosine about
    0.99) of 150 of them; returns ids, embeddings, planted group (None for a clip without copies), quality."""
    rng = np.random.default_rng(seed)
    base, _ = gaussian_mixture(20, 50, dim=64, spread=0.8, seed=seed)
    ids = [f"c{i:04d}" for i in range(len(base))]
    group: list[str | None] = [None] * len(base)
    rows = [base]
    for orig in rng.choice(len(base), 150, replace=False):
        n_copies = int(rng.integers(1, 4))
        rows.append(near_copies(np.repeat(base[orig:orig + 1], n_copies, axis=0), 0.15, rng))
        group[orig] = ids[orig]
        for k in range(n_copies):
            ids.append(f"{ids[orig]}_copy{k}")
            group.append(ids[orig])
    x = np.concatenate(rows).astype(np.float16)  # as stored in the lake
    quality = rng.uniform(1, 5, len(ids)).tolist()
    return ids, x, group, quality


def test_recall_and_precision_on_generated_near_duplicates():
    ids, x, group, quality = _planted_corpus()
    clusters, _ = assign_clusters(x, fit_kmeans(x.astype(np.float32), 20, seed=0))
    decisions = find_semantic_duplicates(ids, x, clusters, quality, threshold=0.95)
    assert [d.clip_id for d in decisions] == ids
    grp = dict(zip(ids, group))
    dropped = [d for d in decisions if d.is_duplicate]
    correct = [d for d in dropped if grp[d.clip_id] is not None and grp[d.clip_id] == grp[d.duplicate_of]]
    should_drop = len(ids) - len({g for g in group if g is not None}) - sum(g is None for g in group)
    precision = len(correct) / max(len(dropped), 1)
    recall = len(correct) / should_drop
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # The kept member of each planted set is its best-quality clip.
    q = dict(zip(ids, quality))
    members: dict[str, list[str]] = {}
    for cid, g in zip(ids, group):
        if g is not None:
            members.setdefault(g, []).append(cid)
    kept_best = sum(max(m, key=q.get) in {d.clip_id for d in decisions if not d.is_duplicate}
                    for m in members.values())
    assert kept_best / len(members) >= 0.95


def test_a_chain_keeps_its_far_end_and_records_the_kept_id():
    # a~b and b~c are above the threshold, a~c is not: quality order a > b > c keeps a, drops b, keeps c.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.25), np.sin(0.25), 0.0])
    c = np.array([np.cos(0.5), np.sin(0.5), 0.0])
    out = dedup_group(["a", "b", "c"], np.stack([a, b, c]), [3.0, 2.0, 1.0], threshold=float(np.cos(0.3)))
    by_id = {d.clip_id: d for d in out}
    assert not by_id["a"].is_duplicate and by_id["a"].dup_group == "a"
    assert by_id["b"].duplicate_of == "a" and by_id["b"].similarity == pytest.approx(np.cos(0.25), abs=1e-5)
    assert not by_id["c"].is_duplicate and by_id["c"].dup_group is None


def test_missing_quality_ranks_last_and_ties_go_to_the_tie_break():
    x = np.array([[1.0, 0.0], [1.0, 0.001]])
    out = dedup_group(["p", "q"], x, [None, 2.0], threshold=0.99)
    assert out[0].duplicate_of == "q" and not out[1].is_duplicate
    out = dedup_group(["p", "q"], x, None, threshold=0.99, tie_break=[1.0, 5.0])  # e.g. pixel area
    assert out[0].duplicate_of == "q"


def test_threshold_is_inclusive_and_validated():
    x = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    i, j, s = similar_pairs(x, 0.6)
    assert (i.tolist(), j.tolist()) == ([0], [1]) and s[0] == pytest.approx(0.6)
    assert len(similar_pairs(x, 0.61)[0]) == 0
    with pytest.raises(ValueError, match="threshold"):
        find_semantic_duplicates(["a", "b"], x, [0, 0], None, threshold=1.5)
    with pytest.raises(ValueError, match="2 clip ids but 3 embeddings"):
        dedup_group(["a", "b"], np.ones((3, 2)), None, 0.9)


def _write_quality(lake, quality: dict[str, float]) -> None:
    from curation.lake import KeyedWriter

    KeyedWriter(lake, "stages/quality").append([{"clip_id": c, "quality": q, "stage_version": "test",
                                                 "status": "ok"} for c, q in quality.items()])


def _score(lake, group: dict[str, str | None]) -> tuple[float, float]:
    rows = lake.read("stages/semantic_dedup").to_pylist()
    dropped = [r for r in rows if r["is_duplicate"]]
    correct = [r for r in dropped if group[r["clip_id"]] is not None
               and group[r["clip_id"]] == group[r["duplicate_of"]]]
    should = len(group) - len({g for g in group.values() if g}) - sum(g is None for g in group.values())
    return len(correct) / max(len(dropped), 1), len(correct) / should


def test_semantic_dedup_stage_over_the_lake_keeps_the_best_quality_member(tmp_path):
    from curation.config import ClusterConfig, SemanticDedupConfig
    from curation.stages.cluster import run_cluster
    from curation.stages.semantic_dedup import run_semantic_dedup
    from tests.curation.embedding_data import write_embedded_lake

    ids, x, group, quality = _planted_corpus(seed=3)
    lake, lake_ids = write_embedded_lake(tmp_path, x.astype(np.float32))
    rename = dict(zip(ids, lake_ids))
    group_of = {rename[c]: (rename[g] if g else None) for c, g in zip(ids, group)}
    _write_quality(lake, dict(zip(lake_ids, quality)))
    run_cluster(lake, ClusterConfig(n_clusters=20, sample_size=1000), backend="local")
    counts = run_semantic_dedup(lake, SemanticDedupConfig(threshold=0.95), backend="local")
    assert counts["in"] == len(ids) and counts["clusters"] == 20
    precision, recall = _score(lake, group_of)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    q = dict(zip(lake_ids, quality))
    for r in lake.read("stages/semantic_dedup").to_pylist():
        if r["is_duplicate"]:
            assert q[r["duplicate_of"]] >= q[r["clip_id"]]  # the kept member is the better one


@pytest.mark.slow
def test_semantic_dedup_runs_one_ray_task_per_cluster(tmp_path, local_ray):
    from curation.config import ClusterConfig, SemanticDedupConfig
    from curation.stages.cluster import run_cluster
    from curation.stages.semantic_dedup import run_semantic_dedup
    from tests.curation.embedding_data import write_embedded_lake

    ids, x, group, _ = _planted_corpus(seed=4)
    lake, lake_ids = write_embedded_lake(tmp_path, x.astype(np.float32))
    rename = dict(zip(ids, lake_ids))
    run_cluster(lake, ClusterConfig(n_clusters=20, sample_size=1000), backend="local")
    run_semantic_dedup(lake, SemanticDedupConfig(threshold=0.95, concurrency=2), backend="ray")
    precision, recall = _score(lake, {rename[c]: (rename[g] if g else None) for c, g in zip(ids, group)})
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_near_duplicate_images_through_a_clip_model(tmp_path):
    """Generated stills and re-compressed, down- and up-scaled copies of a quarter of them, embedded by a tiny
    random open_clip model: at a threshold between the two similarity ranges the copies are found."""
    import cv2

    from curation.models.clip import load_clip, save_tiny_clip
    from curation.synth.scenes import render_still

    encoder = load_clip(str(save_tiny_clip(tmp_path / "clip", seed=0)))
    stills = [cv2.cvtColor(render_still(seed, 320, 180), cv2.COLOR_BGR2RGB) for seed in range(24)]

    def copy_of(img: np.ndarray) -> np.ndarray:
        _, jpeg = cv2.imencode(".jpg", cv2.resize(img, (240, 135)), [cv2.IMWRITE_JPEG_QUALITY, 40])
        return cv2.resize(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), (320, 180))

    copies = [copy_of(stills[i]) for i in range(0, 24, 4)]
    x = encoder.encode_images(stills + copies)
    ids = [f"s{i}" for i in range(24)] + [f"s{i}_copy" for i in range(0, 24, 4)]
    quality = [1.0] * 24 + [0.0] * len(copies)  # the originals are better
    decisions = find_semantic_duplicates(ids, x, [0] * len(ids), quality, threshold=0.997)
    dropped = {d.clip_id: d.duplicate_of for d in decisions if d.is_duplicate}
    assert dropped == {f"s{i}_copy": f"s{i}" for i in range(0, 24, 4)}
