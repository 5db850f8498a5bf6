"""Post-training selection: zero-shot categories (planted and through a tiny open_clip), top fraction per
group, simple/complex motion, category balance; and the ``split`` stage writing ``curated``."""
from __future__ import annotations

import numpy as np
import pytest

from curation.config import (
    DEFAULT_CATEGORIES,
    CategoryConfig,
    SelectConfig,
    SplitConfig,
)
from curation.embeddings.kmeans import l2_normalize
from curation.embeddings.post_train import (
    PostTrainRules,
    select_post_training,
    top_fraction_per_group,
)
from curation.embeddings.zero_shot import build_label_set, prompts_for
from tests.curation.embedding_data import single_threaded


@pytest.fixture(autouse=True)
def _one_thread():
    with single_threaded():
        yield


def _planted_encoder(dim: int, names: list[str], descriptions: dict[str, list[str]], seed: int = 0):
    """A text encoder whose every prompt about a category lands near that category's known unit vector."""
    rng = np.random.default_rng(seed)
    centre = dict(zip(names, l2_normalize(rng.standard_normal((len(names), dim)))))
    owner = {p: n for n in names for p in prompts_for(descriptions[n], ["a photo of {}.", "a video of {}."])}

    def encode(texts: list[str]) -> np.ndarray:
        return l2_normalize(np.stack([centre[owner[t]] + 0.1 * rng.standard_normal(dim) / np.sqrt(dim)
                                      for t in texts]))
    return encode, centre


def test_twelve_default_categories_and_planted_zero_shot_labels():
    assert len(DEFAULT_CATEGORIES) == 12
    assert {"technology", "animals", "arts", "humans", "vehicles"} <= set(DEFAULT_CATEGORIES)  # named by the report
    names = list(DEFAULT_CATEGORIES)
    encode, centre = _planted_encoder(64, names, DEFAULT_CATEGORIES)
    labels = build_label_set(DEFAULT_CATEGORIES, ["a photo of {}.", "a video of {}."], encode)
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 12, 600)
    images = l2_normalize(np.stack([centre[names[t]] for t in truth]) + 0.9 * rng.standard_normal((600, 64)) / 8)
    found, prob = labels.labels(images)
    assert np.mean([f == names[t] for f, t in zip(found, truth)]) >= 0.95
    assert ((prob > 0) & (prob <= 1)).all()


def test_zero_shot_through_a_tiny_random_open_clip_text_tower(tmp_path):
    from curation.models.clip import load_clip, save_tiny_clip

    encoder = load_clip(str(save_tiny_clip(tmp_path / "clip", seed=0)))
    cfg = CategoryConfig()
    labels = build_label_set(cfg.categories, cfg.templates, encoder.encode_text)
    assert labels.names == tuple(DEFAULT_CATEGORIES) and labels.embeddings.shape == (12, encoder.embed_dim)
    assert np.allclose(np.linalg.norm(labels.embeddings, axis=1), 1, atol=1e-5)
    # Planted through the real encoder: an image embedding equal to a category's averaged prompt embedding
    # (plus a little noise) is labelled with that category.
    rng = np.random.default_rng(0)
    images = l2_normalize(labels.embeddings + 0.01 * rng.standard_normal(labels.embeddings.shape))
    found, _ = labels.labels(images)
    assert found == list(labels.names)
    again = build_label_set(cfg.categories, cfg.templates, encoder.encode_text)
    assert np.array_equal(again.embeddings, labels.embeddings)  # deterministic


def test_top_fraction_per_group_takes_the_best_and_at_least_one():
    groups = ["a"] * 10 + ["b"] * 3 + ["c"]
    quality = [float(q) for q in range(10)] + [5.0, None, 1.0] + [None]
    mask = top_fraction_per_group(groups, quality, 0.2)
    assert np.nonzero(mask)[0].tolist() == [8, 9, 10]  # two of a, one of b (ceil), none of unscored c
    with pytest.raises(ValueError, match="top fraction"):
        top_fraction_per_group(groups, quality, 0.0)


def test_select_post_training_known_answer():
    rows = []  # (keep, media, quality, category, tier)
    rows += [(True, "image", float(q), "animals", None) for q in range(1, 11)]  # 10 images: top 2 = q 10, 9
    rows += [(True, "image", float(q), "food", None) for q in range(1, 6)]  # 5 images: top 1 = q 5
    rows += [(False, "image", 99.0, "food", None)]  # rejected: never selected
    rows += [(True, "video", float(q), "sports", "optimal" if q % 2 else "medium") for q in range(1, 11)]
    rows += [(True, "video", 50.0, "sports", "static")]  # top quality, but neither simple nor complex motion
    rows += [(True, "video", None, "sports", "optimal")]  # no quality score: pretraining only
    keep, media, quality, category, tier = map(list, zip(*rows))
    rules = PostTrainRules(top_fraction=0.2, group_by=("category",))
    splits = select_post_training(keep, media, quality, category, [None] * len(rows), tier, rules)
    chosen = {(m, q, c): s for m, q, c, s in zip(media, quality, category, splits) if s not in ("pretrain", None)}
    # Videos of sports: top ceil(0.2 * 12) = 3 of the 12 scored: 50 (static), 10 (medium), 9 (optimal).
    assert chosen == {("image", 10.0, "animals"): "posttrain_image", ("image", 9.0, "animals"): "posttrain_image",
                      ("image", 5.0, "food"): "posttrain_image", ("video", 10.0, "sports"): "posttrain_complex",
                      ("video", 9.0, "sports"): "posttrain_simple"}
    assert splits[15] is None and splits.count("pretrain") == len(rows) - 1 - 5
    # Category balance: 2 image slots over animals (2 picked) and food (1 picked): one each, the best of each.
    balanced = select_post_training(keep, media, quality, category, [None] * len(rows), tier,
                                    PostTrainRules(top_fraction=0.2, group_by=("category",), max_images=2))
    assert [(q, c) for q, c, s in zip(quality, category, balanced) if s == "posttrain_image"] == \
        [(10.0, "animals"), (5.0, "food")]


def test_split_config_rejects_bad_values():
    from pydantic import ValidationError

    for bad in ({"top_fraction": 0}, {"top_fraction": 1.5}, {"simple_motion_tiers": ["wobbly"]},
                {"simple_motion_tiers": ["optimal"], "complex_motion_tiers": ["optimal"]},
                {"group_by": ["colour"]}, {"max_per_cluster": 0}, {"max_images": -1}):
        with pytest.raises(ValidationError):
            SplitConfig(**bad)
    with pytest.raises(ValidationError, match="exactly one"):
        CategoryConfig(templates=["a photo"])
    with pytest.raises(ValidationError, match="non-empty description"):
        CategoryConfig(categories={"animals": []})


def _lake_for_split(tmp_path):
    """12 kept video clips and 8 images in 2 clusters with known quality, tiers, categories; 2 semantic dups."""
    from curation.lake import KeyedWriter
    from tests.curation.embedding_data import write_embedded_lake

    n_video, n_image = 12, 8
    x = l2_normalize(np.random.default_rng(0).standard_normal((n_video + n_image, 8)))
    lake, ids = write_embedded_lake(tmp_path, x, ["video"] * n_video + ["image"] * n_image)
    ok = {"stage_version": "test", "status": "ok"}
    cluster = {c: (0 if i < 15 else 1) for i, c in enumerate(ids)}  # cluster 1: the long tail (5 clips)
    quality = {c: float(i % 10) / 2 + 0.5 for i, c in enumerate(ids)}
    KeyedWriter(lake, "stages/cluster").append([{"clip_id": c, "cluster_id": k, **ok} for c, k in cluster.items()])
    KeyedWriter(lake, "stages/quality").append([{"clip_id": c, "quality": q, **ok} for c, q in quality.items()])
    KeyedWriter(lake, "stages/category").append([
        {"clip_id": c, "category": "animals" if i % 2 else "vehicles", "category_score": 0.9, "style": "photo",
         "style_score": 0.9, **ok} for i, c in enumerate(ids)])
    dups = {ids[1]: ids[0], ids[3]: ids[2]}
    KeyedWriter(lake, "stages/semantic_dedup").append([
        {"clip_id": c, "is_duplicate": c in dups, "duplicate_of": dups.get(c), **ok} for c in ids])
    # motion statistics that select's default rules read as optimal, medium, static; an image has no frame pairs
    tiers = [{"camera_motion": 0.001, "subject_motion": 0.2, "moving_fraction": 0.05, "num_movers": 1.0},
             {"camera_motion": 0.001, "subject_motion": 0.2, "moving_fraction": 0.05, "num_movers": 2.0},
             {"camera_motion": 0.001, "subject_motion": 0.01, "moving_fraction": 0.001, "num_movers": 1.0}]
    KeyedWriter(lake, "stages/motion").append([
        {"clip_id": c, **(tiers[i % 3] if i < n_video else {}), "num_pairs": 12 if i < n_video else 0, **ok}
        for i, c in enumerate(ids)])
    return lake, ids, cluster, quality, dups


def test_split_stage_writes_cluster_quality_and_split_into_curated(tmp_path):
    from curation.stages.select import run_select
    from curation.stages.split import run_split

    lake, ids, cluster, quality, dups = _lake_for_split(tmp_path)
    select_cfg = SelectConfig(train_stage="s", min_short_side={"s": 144}, exclude_tiers=[])
    run_select(lake, ["motion"], select_cfg)
    counts = run_split(lake, SplitConfig(max_per_cluster=6, group_by=["category"]))
    rows = {r["clip_id"]: r for r in lake.read("curated").to_pylist()}
    assert all(rows[c]["cluster_id"] == cluster[c] and rows[c]["quality"] == pytest.approx(quality[c]) for c in ids)
    for d in dups:
        assert not rows[d]["keep"] and rows[d]["reject_reasons"] == ["semantic_duplicate"] and rows[d]["split"] is None
    kept_by_cluster = [sum(rows[c]["keep"] for c in ids if cluster[c] == k) for k in (0, 1)]
    assert kept_by_cluster == [6, 5]  # the big cluster capped, the long tail kept whole
    capped = [c for c in ids if "cluster_quota" in rows[c]["reject_reasons"]]
    assert len(capped) == 15 - 2 - 6
    kept_q = [quality[c] for c in ids if cluster[c] == 0 and rows[c]["keep"]]
    assert min(kept_q) >= max(quality[c] for c in capped)  # best quality first
    assert counts["semantic_duplicate"] == 2 and counts["cluster_quota"] == 7
    # Kept videos (cluster 0, best 6 minus images): animals c9 (q 5.0, optimal), c7 (medium), c5 (static);
    # vehicles c8 (q 4.5, static), c6 (optimal) and maybe c4. Top ceil(20%) per category: c9 and c8; c8 is static.
    posttrain = {c: r["split"] for c, r in rows.items() if r["split"] not in (None, "pretrain")}
    assert {c: s for c, s in posttrain.items() if s != "posttrain_image"} == {ids[9]: "posttrain_simple"}
    # Kept images: c12 (vehicles), c13 (animals), maybe c14 (vehicles) in cluster 0; c15-c19 in cluster 1.
    images = [c for c in ids[12:] if rows[c]["keep"]]
    for category in ("animals", "vehicles"):
        mine = [c for i, c in enumerate(ids) if c in images and (i % 2 == 1) == (category == "animals")]
        best = max(mine, key=quality.get)
        assert posttrain.get(best) == "posttrain_image"
    assert '"category.category"' in rows[ids[0]]["scores_json"]
    # Idempotent: a second run (other settings) recomputes its own reasons instead of stacking them.
    run_split(lake, SplitConfig(group_by=["category"]))
    rows = {r["clip_id"]: r for r in lake.read("curated").to_pylist()}
    assert not any("cluster_quota" in r["reject_reasons"] for r in rows.values())
    assert sum(r["keep"] for r in rows.values()) == len(ids) - 2


def test_split_before_select_is_a_clear_error(tmp_path):
    from curation.lake import Lake
    from curation.stages.split import run_split

    with pytest.raises(RuntimeError, match="run stage 'select' first"):
        run_split(Lake(str(tmp_path)), SplitConfig())


def test_category_stage_labels_every_embedded_clip_with_the_embed_models_text_tower(tmp_path):
    from curation.config import ClipModelConfig
    from curation.models.clip import load_clip, save_tiny_clip
    from curation.stages.category import run_category
    from tests.curation.embedding_data import write_embedded_lake

    clip_dir = save_tiny_clip(tmp_path / "clip", seed=0)
    clip_cfg = ClipModelConfig(path=str(clip_dir))
    cfg = CategoryConfig(batch_size=8)
    encoder = load_clip(str(clip_dir))
    cats = build_label_set(cfg.categories, cfg.templates, encoder.encode_text)
    lake, ids = write_embedded_lake(tmp_path / "lake", np.repeat(cats.embeddings, 2, axis=0))  # planted
    counts = run_category(lake, cfg, clip_cfg, backend="local")
    assert counts["ok"] == 24
    rows = {r["clip_id"]: r for r in lake.read("stages/category").to_pylist()}
    assert [rows[c]["category"] for c in ids] == [n for n in cats.names for _ in range(2)]
    assert all(r["style"] in cfg.styles for r in rows.values())
    assert run_category(lake, cfg, clip_cfg, backend="local")["in"] == 0  # same labels: nothing to redo
    fewer = CategoryConfig(categories={k: v for k, v in list(cfg.categories.items())[:3]})
    assert run_category(lake, fewer, clip_cfg, backend="local")["in"] == 24  # other labels: all relabelled

    narrow, _ = write_embedded_lake(tmp_path / "narrow", l2_normalize(np.ones((2, 16))))
    run_category(narrow, cfg, clip_cfg, backend="local")
    bad = narrow.read("stages/category").to_pylist()
    assert [r["status"] for r in bad] == ["error", "error"] and "width" in bad[0]["error"]


def test_pipeline_runs_the_embedding_stages_and_records_them(tmp_path):
    from curation.config import ConfigError, parse_config
    from curation.lake import Lake
    from curation.models.clip import save_tiny_clip
    from curation.pipeline import run_curation
    from curation.stages.quality import import_ratings
    from tests.curation.embedding_data import gaussian_mixture, write_embedded_lake

    x, _ = gaussian_mixture(4, 30, dim=32, spread=0.6, seed=7)
    lake, ids = write_embedded_lake(tmp_path / "lake", x)
    stages = ["cluster", "quality", "semantic_dedup", "category", "select", "split"]
    data = {"lake": lake.root, "stages": stages, "execution": {"backend": "local"},
            "cluster": {"n_clusters": 4, "sample_size": 120},
            "quality": {"ratings_per_cluster": 6, "min_ratings": 12, "hidden": 0, "epochs": 50},
            "select": {"train_stage": "s", "min_short_side": {"s": 144}}}
    with pytest.raises(ConfigError, match="embed.clip"):  # category needs the CLIP text tower: caught up front
        run_curation(parse_config(data), report=False)
    assert not Lake(lake.root).exists("stages/cluster")
    data["embed"] = {"clip": {"path": str(save_tiny_clip(tmp_path / "clip"))}}

    def rate() -> None:  # the human round, between ratings_todo and training
        from curation.config import QualityConfig
        from curation.stages.quality import write_ratings_todo

        write_ratings_todo(lake, QualityConfig(ratings_per_cluster=6))
        todo = lake.read("ratings_todo").column("clip_id").to_pylist()
        (tmp_path / "r.csv").write_text("clip_id,rating\n" + "".join(f"{c},{1 + ids.index(c) % 5}\n" for c in todo))
        import_ratings(lake, str(tmp_path / "r.csv"))

    summary = run_curation(parse_config(data), report=False, before_stage={"quality": rate})
    assert list(summary.stages) == stages
    assert summary.stages["cluster"]["ok"] == 120 and summary.stages["quality"]["rated"] == 24
    curated = lake.read("curated").to_pylist()
    assert len(curated) == 120 and all(r["cluster_id"] is not None and r["quality"] is not None for r in curated)
    assert {r["split"] for r in curated} <= {"pretrain", "posttrain_simple", "posttrain_complex", "posttrain_image"}
    runs = lake.read("runs").column("stage").to_pylist()
    assert [s for s in runs if s in stages] == stages
