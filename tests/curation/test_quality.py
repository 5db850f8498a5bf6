"""The quality expert: ratings sampled per cluster, a regression head on embeddings, scores for every row."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from curation.embeddings.kmeans import assign_clusters, fit_kmeans
from curation.embeddings.ratings import mean_ratings, sample_for_rating
from curation.models.expert_head import train_head
from tests.curation.embedding_data import gaussian_mixture, single_threaded


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _planted_quality(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A nonlinear quality latent of the embedding: a saturating direction plus a quadratic term."""
    rng = np.random.default_rng(seed + 100)
    w, v = rng.standard_normal((2, x.shape[1]))
    return np.tanh(2.0 * x @ w / np.sqrt(x.shape[1]) * 3) + 0.5 * (x @ v / np.sqrt(x.shape[1]) * 3) ** 2


def _ratings(latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-5 human-like ratings: the latent rescaled, with rater noise, rounded and clipped."""
    z = (latent - latent.mean()) / latent.std()
    return np.clip(np.round(3 + 1.2 * z + rng.normal(0, 0.4, len(z))), 1, 5)


def test_head_trained_on_per_cluster_ratings_ranks_held_out_clips():
    rng = np.random.default_rng(0)
    x, _ = gaussian_mixture(20, 150, dim=32, spread=1.2, seed=0)
    latent = _planted_quality(x)
    ids = [f"c{i}" for i in range(len(x))]
    clusters, _ = assign_clusters(x, fit_kmeans(x, 20, seed=0))
    rated = sample_for_rating(ids, clusters, per_cluster=40, seed=0)
    assert len(rated) == sum(min(40, int((clusters == c).sum())) for c in range(20))
    ratings = _ratings(latent[rated], rng)
    head = train_head(x[rated], ratings, kind="regression", hidden=64, seed=0)
    held_out = np.setdiff1d(np.arange(len(x)), rated)
    quality = head.predict(x[held_out])
    assert quality.shape == (len(held_out),) and np.isfinite(quality).all()
    assert 1.0 <= np.median(quality) <= 5.0  # on the rating scale
    pearson = np.corrcoef(quality, latent[held_out])[0, 1]
    spearman = spearmanr(quality, latent[held_out]).statistic
    assert pearson > 0.8 and spearman > 0.8, (pearson, spearman)


def test_rating_sample_takes_every_cluster_and_skips_done_clips():
    ids = [f"c{i}" for i in range(10)]
    clusters = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    picked = sample_for_rating(ids, clusters, per_cluster=3, seed=1)
    by_cluster = [clusters[i] for i in picked]
    assert by_cluster.count(0) == 3 and by_cluster.count(1) == 2 and by_cluster.count(2) == 2
    again = sample_for_rating(ids, clusters, per_cluster=3, seed=1, exclude=[ids[i] for i in picked])
    assert not set(again) & set(picked) and [clusters[i] for i in again] == [0, 0, 0]
    with pytest.raises(ValueError, match="per_cluster"):
        sample_for_rating(ids, clusters, per_cluster=0)


def test_ratings_are_averaged_per_clip_and_bad_ones_are_named():
    assert mean_ratings(["a", "b", "a"], [5, 2, 4]) == {"a": 4.5, "b": 2.0}
    with pytest.raises(ValueError, match=r"2 rating\(s\) missing or outside 1..5: b=6, c=None"):
        mean_ratings(["a", "b", "c"], [3, 6, None])


def _rate_todo(lake, latent_of: dict[str, float], path, rng) -> None:
    """Simulated raters: every clip of ``ratings_todo`` rated from the planted latent, two raters for some."""
    todo = lake.read("ratings_todo").column("clip_id").to_pylist()
    lat = np.array([latent_of[c] for c in todo])
    ratings = _ratings(lat, rng)
    lines = ["clip_id,rating,rater"] + [f"{c},{int(r)},ann1" for c, r in zip(todo, ratings)]
    lines += [f"{c},{int(min(5, r + 1))},ann2" for c, r in list(zip(todo, ratings))[:10]]
    path.write_text("\n".join(lines) + "\n")


def test_quality_stage_asks_for_ratings_per_cluster_then_trains_and_scores_every_clip(tmp_path):
    from curation.config import ClusterConfig, QualityConfig
    from curation.stages.cluster import run_cluster
    from curation.stages.quality import import_ratings, run_quality
    from tests.curation.embedding_data import write_embedded_lake

    rng = np.random.default_rng(1)
    x, _ = gaussian_mixture(10, 80, dim=32, spread=1.2, seed=1)
    latent = _planted_quality(x, seed=1)
    lake, ids = write_embedded_lake(tmp_path / "lake", x)
    latent_of = dict(zip(ids, latent))
    run_cluster(lake, ClusterConfig(n_clusters=10, sample_size=800), backend="local")
    cfg = QualityConfig(ratings_per_cluster=40, min_ratings=100, epochs=300)

    waiting = run_quality(lake, cfg, backend="local")
    sizes = np.bincount(lake.read("stages/cluster").column("cluster_id").to_numpy(), minlength=10)
    asked = int(np.minimum(sizes, 40).sum())  # 40 from each cluster, all of a smaller one
    assert waiting["todo_added"] == asked and waiting["waiting_for"] == 100 and not lake.exists("stages/quality")
    todo = lake.read("ratings_todo")
    assert np.array_equal(np.bincount(todo.column("cluster_id").to_numpy(), minlength=10), np.minimum(sizes, 40))
    assert todo.column("uri").to_pylist()[0].startswith("/media/")
    assert run_quality(lake, cfg, backend="local")["todo_added"] == 0  # every cluster already asked

    _rate_todo(lake, latent_of, tmp_path / "ratings.csv", rng)
    assert import_ratings(lake, str(tmp_path / "ratings.csv")) == asked + 10
    assert import_ratings(lake, str(tmp_path / "ratings.csv")) == 0  # the same file twice adds nothing
    done = run_quality(lake, cfg, backend="local")
    assert done["trained"] and done["rated"] == asked and done["ok"] == 800
    assert (tmp_path / "lake/models/quality_head.safetensors").exists()
    scored = dict(zip(*(lake.read("stages/quality").column(c).to_pylist() for c in ("clip_id", "quality"))))
    rated = set(lake.read("ratings").column("clip_id").to_pylist())
    held_out = [c for c in ids if c not in rated]
    pearson = np.corrcoef([scored[c] for c in held_out], [latent_of[c] for c in held_out])[0, 1]
    assert pearson > 0.8, pearson

    again = run_quality(lake, cfg, backend="local")
    assert again["trained"] is False and again["in"] == 0  # same ratings: same head, nothing rescored


def test_bad_rating_files_are_clear_errors(tmp_path):
    from curation.stages.quality import import_ratings
    from tests.curation.embedding_data import write_embedded_lake

    lake, ids = write_embedded_lake(tmp_path / "lake", np.eye(3, 8))
    cases = {
        "out_of_range.csv": (f"clip_id,rating\n{ids[0]},7\n", r"outside 1..5: c00000=7"),
        "not_a_number.csv": (f"clip_id,rating\n{ids[0]},great\n", "ratings must be numbers"),
        "unknown_clip.csv": ("clip_id,rating\nnope,3\n", r"not in the lake's clips table: \['nope'\]"),
        "no_rating.csv": (f"clip_id,score\n{ids[0]},3\n", r"missing column\(s\) \['rating'\]"),
        "ratings.json": ("{}", "must be .csv, .tsv or .parquet"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            import_ratings(lake, str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="ratings file not found"):
        import_ratings(lake, str(tmp_path / "missing.csv"))
    assert lake.count("ratings") == 0


def test_simulated_rater_of_the_demo_takes_points_per_known_defect():
    from curation.embeddings.demo_truth import rating_from_label

    clean = {"blurred": False, "overexposed": False, "logo": False, "text_strings": [], "border_top": 0,
             "motion_kind": "optimal"}
    assert rating_from_label(clean) == 5
    assert rating_from_label({**clean, "blurred": True}) == 3
    assert rating_from_label({**clean, "logo": True, "text_strings": ["HI"], "border_top": 20}) == 2
    assert rating_from_label({**clean, "blurred": True, "overexposed": True, "motion_kind": "shaky"}) == 1


def test_wan_ratings_todo_and_import_round_trip(tmp_path, capsys):
    import csv

    from curation.config import ClusterConfig, QualityConfig
    from curation.stages.cluster import run_cluster
    from curation.stages.quality import write_ratings_todo
    from jobs.cli import main
    from tests.curation.embedding_data import write_embedded_lake

    x, _ = gaussian_mixture(3, 10, dim=8, spread=0.5, seed=2)
    lake, _ = write_embedded_lake(tmp_path / "lake", x)
    run_cluster(lake, ClusterConfig(n_clusters=3, sample_size=30), backend="local")
    assert write_ratings_todo(lake, QualityConfig(ratings_per_cluster=4)) == 12
    todo = tmp_path / "todo.csv"
    assert main(["ratings", "todo", "--lake", lake.root, "--out", str(todo)]) == 0
    rows = list(csv.DictReader(todo.open()))
    assert len(rows) == 12 and rows[0]["uri"].startswith("/media/") and rows[0]["rating"] == ""
    for i, r in enumerate(rows[:8]):  # a rater rates 8 of the 12 and leaves the rest blank
        r["rating"] = str(1 + i % 5)
    with todo.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["ratings", "import", str(todo), "--lake", lake.root, "--rater", "ann"]) == 0
    assert lake.count("ratings") == 8 and set(lake.read("ratings").column("rater").to_pylist()) == {"ann"}
    assert main(["ratings", "todo", "--lake", lake.root, "--out", str(todo)]) == 0
    assert len(list(csv.DictReader(todo.open()))) == 4  # only the unrated ones are left
    (tmp_path / "bad.csv").write_text(f"clip_id,rating\n{rows[0]['clip_id']},0\n")
    assert main(["ratings", "import", str(tmp_path / "bad.csv"), "--lake", lake.root]) == 2
    assert "outside 1..5" in capsys.readouterr().err


def test_a_named_quality_head_is_used_as_is_and_a_wrong_one_is_a_clear_error(tmp_path):
    from curation.config import QualityConfig, parse_config
    from curation.models import WeightsNotFoundError
    from curation.stages import embedding_stages
    from curation.stages.quality import run_quality
    from tests.curation.embedding_data import write_embedded_lake

    x, _ = gaussian_mixture(2, 20, dim=8, spread=0.5, seed=3)
    lake, _ = write_embedded_lake(tmp_path / "lake", x)
    y = np.arange(40) % 5 + 1.0
    train_head(x, y, kind="regression", hidden=0, epochs=20).save(tmp_path / "q.safetensors")
    counts = run_quality(lake, QualityConfig(head=str(tmp_path / "q.safetensors")), backend="local")
    assert counts["ok"] == 40 and counts["todo_added"] == 0 and not lake.exists("ratings_todo")
    train_head(x, (y > 3).astype(float), kind="binary", hidden=0, epochs=20).save(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="regression head"):
        run_quality(lake, QualityConfig(head=str(tmp_path / "b.safetensors")), backend="local")
    cfg = parse_config({"lake": lake.root, "stages": ["quality"], "quality": {"head": str(tmp_path / "nope")}})
    with pytest.raises(WeightsNotFoundError, match="quality head"):
        embedding_stages.preflight(cfg, cfg.stages)


def test_clusters_and_rating_sample_do_not_depend_on_row_order(tmp_path):
    """Ray commits batches in whatever order they finish: the same clips in another row order must give the same
    centroids, cluster ids and clips to rate (seeded draws run over clip_id order)."""
    from curation.config import ClusterConfig, QualityConfig
    from curation.lake import KeyedWriter
    from curation.lake.schemas import embedding_schema
    from curation.stages.cluster import run_cluster
    from curation.stages.quality import run_quality
    from tests.curation.embedding_data import write_embedded_lake

    x, _ = gaussian_mixture(6, 40, dim=16, spread=1.5, seed=3)
    first, _ = write_embedded_lake(tmp_path / "a", x)
    second, _ = write_embedded_lake(tmp_path / "b", x[:0])  # the same tables, empty
    order = np.random.default_rng(0).permutation(len(x))
    clips, embed = first.read("clips"), first.read("stages/embed")
    KeyedWriter(second, "clips").append(clips.take(order))
    writer = KeyedWriter(second, "stages/embed")
    writer.schema = embedding_schema(x.shape[1])
    writer.append(embed.take(order))
    assert second.read("stages/embed").column("clip_id").to_pylist() != embed.column("clip_id").to_pylist()

    results = []
    for lake in (first, second):
        run_cluster(lake, ClusterConfig(n_clusters=6, sample_size=150), backend="local")
        run_quality(lake, QualityConfig(ratings_per_cluster=5, min_ratings=100), backend="local")
        cluster = lake.read("stages/cluster").sort_by("clip_id")
        results.append((cluster.column("clip_id").to_pylist(), cluster.column("cluster_id").to_pylist(),
                        sorted(lake.read("ratings_todo").column("clip_id").to_pylist())))
    assert results[0] == results[1]
