"""Model-backed stages end to end with tiny random-initialised models: embeddings, aesthetics, NSFW (NudeNet and a
CLIP head), expert heads trained on planted signals, select's thresholds, bad inputs, and resume."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import ClassVar

import cv2
import lance
import numpy as np
import pyarrow as pa
import pytest
import torch

from curation.config import ConfigError, SelectConfig, parse_config
from curation.lake import Lake
from curation.models import WeightsNotFoundError
from curation.models.expert_head import Head, load_head, train_head
from curation.stages.model_runner import ModelStageSpec, run_model_stage
from curation.stages.model_stages import build_spec, preflight
from curation.stages.select import run_select
from tests.curation.model_data import (
    jpeg,
    plain_frame,
    scene_clips,
    text_frame,
    tiny_clip,
    write_clips,
)

torch.set_num_threads(1)
N_CLIPS = 8
CORRUPT = (3,)
SELECT = {"train_stage": "s", "min_short_side": {"s": 100}, "min_duration_s": 1.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from curation.models.aesthetic import save_random_aesthetic_head

    root = tmp_path_factory.mktemp("models")
    clip = tiny_clip(root)
    return {"clip": clip, "aesthetic": save_random_aesthetic_head(root / "aesthetic.safetensors", 32, seed=1)}


def _config(lake: Lake, models: dict[str, Path], stages: list[str], **extra: object):
    return parse_config({"lake": lake.root, "stages": stages, "embed": {"clip": {"path": str(models["clip"])},
                                                                        "batch_size": 3},
                         "aesthetic": {"weights": str(models["aesthetic"])}, "select": SELECT, **extra})


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, models):
    """A lake of 8 generated clips (one with a truncated keyframe) after the embed stage."""
    lake = Lake(str(tmp_path_factory.mktemp("lake")))
    write_clips(lake, scene_clips(N_CLIPS, corrupt=CORRUPT))
    cfg = _config(lake, models, ["embed"])
    res = run_model_stage(lake, build_spec("embed", cfg), backend="local", commit_every=2)
    return lake, cfg, res


def test_embed_stage_writes_normalised_fp16_fixed_size_embeddings(embedded, models):
    from curation.models.clip import load_clip

    lake, _, res = embedded
    table = lake.read("stages/embed").sort_by("clip_id")
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), 32)
    assert res.status["stages/embed"] == {"ok": N_CLIPS - 1, "error": 1}
    ok = table.filter(pa.compute.equal(table.column("status"), "ok"))
    emb = np.asarray(ok.column("embedding").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, 32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    # Parity: the stored embedding is the normalised mean of the encoder's keyframe embeddings.
    enc = load_clip(path=str(models["clip"]))
    clips = {r["clip_id"]: r["keyframes"] for r in lake.read("clips").to_pylist()}
    cid = ok.column("clip_id")[0].as_py()
    frames = [cv2.cvtColor(cv2.imdecode(np.frombuffer(k, np.uint8), 1), cv2.COLOR_BGR2RGB) for k in clips[cid]]
    mean = enc.encode_images(frames).mean(0)
    assert np.allclose(emb[0], mean / np.linalg.norm(mean), atol=2e-3)
    bad = table.filter(pa.compute.equal(table.column("status"), "error")).to_pylist()
    assert len(bad) == 1 and "truncated JPEG" in bad[0]["error"] and bad[0]["clip_id"].startswith("v003")


def test_aesthetic_stage_is_the_laion_head_on_each_keyframe(embedded, models):
    from curation.models.aesthetic import aesthetic_scores, load_aesthetic_head

    lake, cfg, _ = embedded
    res = run_model_stage(lake, build_spec("aesthetic", cfg), backend="local")
    assert res.status["stages/aesthetic"] == {"ok": N_CLIPS - 1}  # the clip without an embedding is not input
    head = load_aesthetic_head(models["aesthetic"])
    emb = {r["clip_id"]: np.asarray(r["keyframe_embeddings"], np.float32)
           for r in lake.read("stages/embed", filter="status = 'ok'").to_pylist()}
    for row in lake.read("stages/aesthetic").to_pylist():
        expected = aesthetic_scores(head, emb[row["clip_id"]])
        assert row["aesthetic_score"] == pytest.approx(float(expected.mean()), abs=1e-5)
        assert len(row["aesthetic_scores"]) == 3


def test_released_aesthetic_layouts_load(tmp_path):
    """The improved predictor's .pth (keys layers.0 ... layers.7, 768 -> 1024 -> 128 -> 64 -> 16 -> 1) and the
    first linear LAION-5B predictor load and score like the modules they were saved from."""
    from curation.models.aesthetic import (
        AestheticMLP,
        aesthetic_scores,
        load_aesthetic_head,
    )

    torch.manual_seed(0)
    mlp = AestheticMLP(768)
    assert [tuple(m.weight.shape) for m in mlp.layers if isinstance(m, torch.nn.Linear)] == [
        (1024, 768), (128, 1024), (64, 128), (16, 64), (1, 16)]
    torch.save(mlp.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    linear = torch.nn.Linear(768, 1)
    torch.save(linear.state_dict(), tmp_path / "sa_0_4_vit_l_14_linear.pth")
    x = np.random.default_rng(0).normal(size=(5, 768)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        want_mlp = mlp.eval()(torch.from_numpy(x)).numpy()
        want_lin = linear(torch.from_numpy(x)).squeeze(-1).numpy()
    assert np.allclose(aesthetic_scores(load_aesthetic_head(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"), x),
                       want_mlp, atol=1e-5)
    assert np.allclose(aesthetic_scores(load_aesthetic_head(tmp_path / "sa_0_4_vit_l_14_linear.pth"), x), want_lin,
                       atol=1e-5)
    with pytest.raises(ValueError, match="expects 768-d CLIP embeddings"):
        aesthetic_scores(load_aesthetic_head(tmp_path / "sa_0_4_vit_l_14_linear.pth"), x[:, :32])


def _random_binary_head(embeddings: np.ndarray, seed: int) -> Head:
    """A random-initialised linear head, standardising its inputs with these embeddings' statistics (as a
    trained head does)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(embeddings.shape[1], 1))
    return Head("binary", net.eval(), embeddings.mean(0), embeddings.std(0) + 1e-6)


def test_nsfw_clip_head_scores_and_select_threshold(embedded, tmp_path):
    """A tiny random CLIP-embedding head: the stage's clip score is the max over keyframes, and select rejects
    exactly the clips scoring above ``max_nsfw``, with reason "nsfw"."""
    lake, _, _ = embedded
    emb = {r["clip_id"]: np.asarray(r["keyframe_embeddings"], np.float32)
           for r in lake.read("stages/embed", filter="status = 'ok'").to_pylist()}
    head = _random_binary_head(np.concatenate(list(emb.values())), seed=3)
    path = head.save(tmp_path / "nsfw_head")
    cfg = _config(lake, {"clip": Path("unused"), "aesthetic": Path("unused")}, ["nsfw"],
                  nsfw={"backend": "clip_head", "head": str(path)})
    run_model_stage(lake, build_spec("nsfw", cfg), backend="local")
    rows = {r["clip_id"]: r for r in lake.read("stages/nsfw").to_pylist()}
    for cid, e in emb.items():
        assert rows[cid]["nsfw_score"] == pytest.approx(float(head.predict(e).max()), abs=1e-6)
        assert rows[cid]["nsfw_backend"] == "clip_head"
    scores = sorted(r["nsfw_score"] for r in rows.values())
    assert scores[-1] - scores[0] > 0.1, scores  # the random head separates the clips enough to threshold
    limit = float(np.median(scores))
    run_select(lake, ["embed", "nsfw"], SelectConfig(**SELECT, max_nsfw=limit, max_text_coverage=None))
    curated = {r["clip_id"]: r for r in lake.read("curated").to_pylist()}
    flagged = {c for c, r in curated.items() if "nsfw" in r["reject_reasons"]}
    assert flagged == {c for c, r in rows.items() if r["nsfw_score"] > limit}
    assert flagged and all(not curated[c]["keep"] for c in flagged)


def test_nudenet_scores_generated_benign_frames_low():
    """NudeNet's bundled detector on generated scenes (with and without text) finds nothing unsafe, and our
    batched input matches the one nudenet prepares itself."""
    from nudenet import nudenet as nn_module

    from curation.models.nsfw import NudeNetScorer, nudenet_input

    scorer = NudeNetScorer(threads=1)
    frames = [plain_frame(s) for s in range(4)] + [text_frame(s)[0] for s in range(2)] + [plain_frame(9, 640, 360)]
    scores = scorer(frames)
    assert scores.shape == (7,) and float(scores.max()) < 0.2, scores
    theirs = nn_module._read_image(frames[-1], 320)[0]
    assert np.array_equal(nudenet_input(frames[-1]), theirs)


def test_nudenet_stage_writes_max_over_keyframes(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_clips(lake, scene_clips(3, seed=5, corrupt=(1,)))
    cfg = parse_config({"lake": lake.root, "stages": ["nsfw"], "select": SELECT})
    res = run_model_stage(lake, build_spec("nsfw", cfg), backend="local")
    assert res.status["stages/nsfw"] == {"ok": 2, "error": 1}
    ok = lake.read("stages/nsfw", filter="status = 'ok'").to_pylist()
    assert all(0.0 <= r["nsfw_score"] < 0.2 and r["nsfw_backend"] == "nudenet" for r in ok)


def _planted_embeddings(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in a narrow cone (like CLIP's); positives are shifted along one hidden direction by a
    few times the spread."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    x = base + 0.3 * rng.normal(size=(n, dim))
    y = (rng.random(n) < 0.5).astype(np.float32)
    direction = rng.normal(size=dim)
    x += np.outer(y, direction / np.linalg.norm(direction)) * 1.0  # 3.3 noise sds: Bayes accuracy ~0.95
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_expert_heads_learn_a_planted_signal_and_round_trip(tmp_path):
    x, y = _planted_embeddings(600, 32, seed=0)
    head = train_head(x[:400], y[:400], "binary", seed=0)
    held_out = float(((head.predict(x[400:]) >= 0.5) == (y[400:] == 1)).mean())
    assert held_out >= 0.9 and head.metrics["val_accuracy"] >= 0.85, (held_out, head.metrics)
    loaded = load_head(head.save(tmp_path / "synthetic.safetensors"))
    assert np.allclose(loaded.predict(x[400:]), head.predict(x[400:]), atol=1e-6)
    assert (tmp_path / "synthetic.json").exists()
    # Regression (the quality expert's kind): 1-5 ratings that depend linearly on the embedding.
    proj = (x - x.mean(0)) @ np.random.default_rng(1).normal(size=32)
    target = 3 + 1.5 * np.tanh(proj / proj.std())  # ratings within 1.5-4.5
    reg = train_head(x[:400], target[:400], "regression", seed=0)
    assert np.corrcoef(reg.predict(x[400:]), target[400:])[0, 1] >= 0.9
    with pytest.raises(ValueError, match="both classes"):
        train_head(x[:10], np.zeros(10), "binary")
    with pytest.raises(ValueError, match="0 or 1"):
        train_head(x[:10], np.arange(10), "binary")


def test_overexposure_expert_learns_from_images_through_tiny_clip(models, tmp_path):
    """`wan curate train-expert` on a labelled table of images (generated scenes, half blown out with the
    generator's overexposure gain): the head on tiny random CLIP embeddings beats chance by far on held-out
    images, and the experts stage and select apply it."""
    from curation.synth import degrade as dg
    from jobs.cli import main as wan

    rows = []
    for i in range(80):
        frame = plain_frame(500 + i, 192, 108)
        label = i % 2
        if label:
            frame = dg.apply_overexposure(frame, dg.overexposure_gain(frame, (0, 0, 192, 108)))
        rows.append({"image": jpeg(frame), "label": label})
    rows.append({"image": b"not an image", "label": 1})  # skipped, not fatal
    table = str(tmp_path / "labels.lance")
    lance.write_dataset(pa.Table.from_pylist(rows), table)
    out = tmp_path / "heads" / "overexposure.safetensors"
    assert wan(["curate", "train-expert", "--name", "overexposure", "--table", table, "--out", str(out),
                "--clip", str(models["clip"]), "--hidden", "0"]) == 0
    head = load_head(out)
    assert head.metrics["val_accuracy"] >= 0.85 and head.info["skipped"] == 1, head.metrics
    # The experts stage on a lake: overexposed clips score high, and select rejects them.
    lake = Lake(str(tmp_path / "lake"))
    clips = {}
    for i in range(6):
        frames = [plain_frame(900 + 3 * i + k) for k in range(3)]
        if i % 2:
            frames = [dg.apply_overexposure(f, dg.overexposure_gain(f, (0, 0, 384, 216))) for f in frames]
        clips[f"c{i}:000000-000120"] = [jpeg(f) for f in frames]
    write_clips(lake, clips)
    cfg = _config(lake, models, ["embed", "experts"], experts={"heads": {"overexposure": str(out)}})
    for stage in ("embed", "experts"):
        run_model_stage(lake, build_spec(stage, cfg), backend="local")
    scores = {r["clip_id"]: dict(zip(r["expert_names"], r["expert_scores"]))["overexposure"]
              for r in lake.read("stages/experts").to_pylist()}
    run_select(lake, ["embed", "experts"], SelectConfig(**SELECT, max_expert_score={"overexposure": 0.5}))
    rejected = {r["clip_id"] for r in lake.read("curated").to_pylist() if "expert:overexposure" in r["reject_reasons"]}
    assert rejected == {c for c, s in scores.items() if s > 0.5}
    truth = {c for c in clips if int(c[1]) % 2}
    assert len(rejected ^ truth) <= 1, (scores, truth)


def test_train_expert_cli_errors_are_clear(tmp_path, capsys):
    from jobs.cli import main as wan

    assert wan(["curate", "train-expert", "--name", "x", "--table", str(tmp_path / "none.lance"),
                "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "labelled table not found" in capsys.readouterr().err
    lance.write_dataset(pa.table({"clip_id": ["a"], "y": [1]}), str(tmp_path / "t.lance"))
    assert wan(["curate", "train-expert", "--name", "x", "--table", str(tmp_path / "t.lance"),
                "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no 'label' column" in capsys.readouterr().err


def test_missing_weights_and_settings_are_clear_errors(tmp_path, models):
    from curation.models.aesthetic import load_aesthetic_head
    from curation.models.clip import load_clip

    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "no_clip")):
        load_clip(path=str(tmp_path / "no_clip"))
    with pytest.raises(WeightsNotFoundError, match="ViT-L-14"):
        load_clip(architecture="ViT-L-14", weights=str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(WeightsNotFoundError, match="aes.pth"):
        load_aesthetic_head(tmp_path / "aes.pth")
    lake = Lake(str(tmp_path / "lake"))
    cfg = _config(lake, {"clip": models["clip"], "aesthetic": tmp_path / "missing.pth"}, ["embed", "aesthetic"])
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        preflight(cfg, cfg.stages)
    with pytest.raises(ConfigError, match="embed.clip.path"):
        preflight(parse_config({"lake": lake.root, "stages": ["embed"]}), ["embed"])
    with pytest.raises(ConfigError, match="experts.heads"):
        preflight(parse_config({"lake": lake.root, "stages": ["experts"]}), ["experts"])


@pytest.mark.parametrize("patch, fragment", [
    ({"ocr": {"treshold": 0.3}}, "unknown key 'ocr.treshold'"),
    ({"embed": {"clip": {"path": "/m", "architecture": "ViT-L-14", "weights": "/w"}}}, "either 'path'"),
    ({"embed": {"clip": {"architecture": "ViT-L-14"}}}, "either 'path'"),
    ({"nsfw": {"labels": ["FACE_CAT"]}}, "unknown NudeNet label"),
    ({"nsfw": {"backend": "magic"}}, "'nsfw.backend'"),
    ({"embed": {"num_gpus": -1}}, "'embed.num_gpus'"),
    ({"select": {"max_expert_score": {"synthetic": 1.5}}}, "probabilities"),
    ({"experts": {"heads": {"bad name": "/x"}}}, "expert names"),
])
def test_bad_model_config_is_a_config_error(patch, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config({"lake": "/tmp/x", "stages": ["ocr"], **patch})
    assert fragment in str(e.value)


class _CountingModel:
    """Scores a clip by its keyframe count; raises KeyboardInterrupt (not an Exception: it stops the run like a
    kill) once ``stop_after`` batches have been scored."""

    calls: ClassVar[list[str]] = []

    def __init__(self, stop_after: int | None) -> None:
        self.stop_after, self.batches = stop_after, 0

    def prepare(self, row):
        from curation.stages.model_stages import decode_keyframes

        return row["clip_id"], len(decode_keyframes(row["keyframes"]))

    def score(self, prepared):
        if self.stop_after is not None and self.batches >= self.stop_after:
            raise KeyboardInterrupt
        self.batches += 1
        _CountingModel.calls += [cid for cid, _ in prepared]
        return [{"nsfw_score": float(n), "nsfw_backend": "count"} for _, n in prepared]


def test_interrupted_run_resumes_without_duplicates_or_recomputation(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_clips(lake, scene_clips(10, seed=7, corrupt=(4,)))

    def spec(stop_after):
        return ModelStageSpec("nsfw", "test-1", functools.partial(_CountingModel, stop_after), batch_size=2)

    _CountingModel.calls = []
    with pytest.raises(KeyboardInterrupt):
        run_model_stage(lake, spec(stop_after=3), backend="local", commit_every=4)
    first = lake.read("stages/nsfw", columns=["clip_id"]).column("clip_id").to_pylist()
    assert 0 < len(first) < 10  # committed every 4 rows, interrupted in the 4th batch
    scored_before = set(_CountingModel.calls)
    _CountingModel.calls = []
    res = run_model_stage(lake, spec(stop_after=None), backend="local", commit_every=4)
    ids = lake.read("stages/nsfw", columns=["clip_id"]).column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == 10
    assert not set(_CountingModel.calls) & set(first)  # committed rows were not scored again
    assert res.count_in == 10 - len(first) and set(first) <= scored_before
    assert run_model_stage(lake, spec(stop_after=None), backend="local").count_in == 0
    # Another stage version (new weights or settings) recomputes every row, still once each.
    res = run_model_stage(lake, ModelStageSpec("nsfw", "test-2", functools.partial(_CountingModel, None)),
                          backend="local")
    assert res.extra["stale_dropped"] == 10 and lake.count("stages/nsfw") == 10


def test_ray_actor_pool_gives_the_local_rows(embedded, models, local_ray, tmp_path):
    lake, _, _ = embedded
    ray_lake = Lake(str(tmp_path / "ray_lake"))
    write_clips(ray_lake, scene_clips(N_CLIPS, corrupt=CORRUPT))
    cfg = _config(ray_lake, models, ["embed"], embed={"clip": {"path": str(models["clip"])}, "batch_size": 2,
                                                      "concurrency": 2})
    res = run_model_stage(ray_lake, build_spec("embed", cfg), backend="ray", commit_every=3)
    assert res.status["stages/embed"] == {"ok": N_CLIPS - 1, "error": 1}
    a = {r["clip_id"]: r for r in lake.read("stages/embed").to_pylist()}
    b = {r["clip_id"]: r for r in ray_lake.read("stages/embed").to_pylist()}
    assert a.keys() == b.keys()
    for cid in a:
        assert a[cid]["status"] == b[cid]["status"]
        if a[cid]["embedding"] is not None:
            assert np.allclose(a[cid]["embedding"], b[cid]["embedding"], atol=1e-3)


def test_ocr_stage_and_text_threshold(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    texts = {}
    for i in range(2):
        _, lines, truth = text_frame(40 + i, n_lines=2)
        texts[f"t{i}:000000-000120"] = (lines, truth)
    clips = {cid: [jpeg(plain_frame(60)), jpeg(text_frame(40 + i, n_lines=2)[0])]
             for i, cid in enumerate(texts)}
    clips["plain:000000-000120"] = [jpeg(plain_frame(61))]
    clips["broken:000000-000120"] = [b"\xff\xd8garbage\xff\xd9"]
    write_clips(lake, clips)
    cfg = parse_config({"lake": lake.root, "stages": ["ocr"], "ocr": {"batch_size": 2}, "select": SELECT})
    run_model_stage(lake, build_spec("ocr", cfg), backend="local")
    rows = {r["clip_id"]: r for r in lake.read("stages/ocr").to_pylist()}
    for cid, (lines, truth) in texts.items():
        r = rows[cid]
        assert r["text_coverages"][0] == 0.0 and math.isclose(r["text_coverage_max"], truth, rel_tol=0.2)
        assert r["text_coverage_mean"] == pytest.approx(r["text_coverage_max"] / 2)
        assert {"".join(t.split()) for t in r["texts"]} == {"".join(x.split()) for x in lines}
    assert rows["plain:000000-000120"]["text_coverage_max"] == 0.0
    assert rows["broken:000000-000120"]["status"] == "error" and "could not be decoded" in \
        rows["broken:000000-000120"]["error"]
    run_select(lake, ["ocr"], SelectConfig(**SELECT, max_text_coverage=0.02))
    curated = {r["clip_id"]: r["reject_reasons"] for r in lake.read("curated").to_pylist()}
    assert all(curated[c] == ["text"] for c in texts) and curated["plain:000000-000120"] == []
    assert curated["broken:000000-000120"] == ["error:ocr"]


def test_curate_job_with_a_missing_weight_fails_before_any_work(tmp_path, capsys):
    from jobs.curate import main as curate

    config = tmp_path / "job.yaml"
    config.write_text(f"lake: {tmp_path / 'lake'}\nstages: [embed, aesthetic]\n"
                      f"embed: {{clip: {{path: {tmp_path / 'clip'}}}}}\naesthetic: {{weights: /nope.pth}}\n")
    assert curate(["--config", str(config)]) == 2
    assert f"expected a directory at {tmp_path / 'clip'}" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_replacing_weights_at_the_same_path_changes_the_stage_version(tmp_path) -> None:
    """Config paths alone would keep stale scores after `train-expert --out` overwrote a head."""
    from curation.config import ExpertsConfig
    from curation.stages.model_stages import settings_hash

    head = tmp_path / "overexposure.safetensors"
    head.write_bytes(b"first head")
    cfg = ExpertsConfig(heads={"overexposure": str(head)})
    before = settings_hash(cfg)
    assert settings_hash(cfg) == before  # stable while nothing changes
    head.write_bytes(b"a retrained head")
    assert settings_hash(cfg) != before
    assert settings_hash(cfg.model_copy(update={"batch_size": 7})) == settings_hash(cfg)  # how it runs: no rescoring
