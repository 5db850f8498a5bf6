"""Captioner training: stage freezing and learning rates, data from the lake, checkpoints, exact resume, Ray Train."""
from __future__ import annotations

import json
from pathlib import Path

import lance
import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from captioner.data import (
    CaptionExample,
    read_clip_examples,
    read_examples,
    synthetic_rows,
    write_examples,
)
from captioner.synthetic import make_clips
from captioner.train import CaptionTrainConfig, build_optimizer, train_captioner
from curation.jobconfig import ConfigError

TINY = dict(init="tiny", batch_size=2, device="cpu", log_every=1)


@pytest.fixture(scope="module")
def sft_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """caption_sft: 8 train examples (videos and images), 3 hq, one train example whose frame does not decode."""
    lake = tmp_path_factory.mktemp("sft_lake")
    write_examples(lake, synthetic_rows(make_clips(range(8), ("video", "image")), "train"))
    write_examples(lake, synthetic_rows(make_clips(range(100, 103)), "hq", prefix="hq"))
    bad = synthetic_rows(make_clips([999]), "train", prefix="bad")[0] | {"frames": [b"not a jpeg"] * 5}
    write_examples(lake, [bad])
    return lake


def _params(model, group: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameter_groups()[group]]


def test_stage_one_trains_only_the_projector(sft_lake: Path) -> None:
    cfg = CaptionTrainConfig(stage=1, lake=str(sft_lake), steps=2, **TINY)
    from captioner.tiny import build_tiny_captioner

    model, _ = build_tiny_captioner(0)
    optimizer = build_optimizer(model, cfg.learning_rates())
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("projector", 1e-3)]
    projector = {id(p) for p in model.multi_modal_projector.parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == projector
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.language_model.parameters())

    before = {g: _params(model, g) for g in ("vision", "projector", "llm")}
    result = train_captioner(cfg)  # builds the same tiny model (seed 0) and trains it 2 steps
    after = {g: _params(result.model, g) for g in ("vision", "projector", "llm")}
    assert all(torch.equal(a, b) for a, b in zip(before["vision"], after["vision"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before["llm"], after["llm"], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before["projector"], after["projector"], strict=True))


@pytest.mark.parametrize("stage", [2, 3])
def test_stages_two_and_three_train_everything_at_the_report_rates(stage: int) -> None:
    from captioner.tiny import build_tiny_captioner

    model, _ = build_tiny_captioner(0)
    cfg = CaptionTrainConfig(stage=stage, lake="unused", **TINY)
    optimizer = build_optimizer(model, cfg.learning_rates())
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {"vision": 1e-6, "projector": 1e-5, "llm": 1e-5}
    assert {id(p) for p in groups["vision"]["params"]} == {id(p) for p in model.vision_tower.parameters()}
    assert {id(p) for p in groups["llm"]["params"]} == {id(p) for p in model.language_model.parameters()}
    assert all(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert cfg.data_split == ("hq" if stage == 3 else "train")
    custom = CaptionTrainConfig(stage=stage, lake="unused", lr_llm=2e-3, **TINY).learning_rates()
    assert custom == {"vision": 1e-6, "projector": 1e-5, "llm": 2e-3}


@pytest.mark.parametrize("bad", [dict(stage=1, lr_llm=1e-4), dict(stage=1, lr_vision=1e-4), dict(stage=4),
                                 dict(stage=2, steps=0), dict(stage=2, lr_llm=-1.0), dict(stage=2, typo_key=1),
                                 dict(stage=2, source="parquet")])
def test_bad_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        CaptionTrainConfig(**{"lake": "x", "init": "tiny", **bad})


def test_data_splits_and_bad_examples_are_skipped(sft_lake: Path, tmp_path: Path) -> None:
    train = read_examples(sft_lake, "train")
    assert len(train) == 9 and {e.media_type for e in train} == {"video", "image"}
    assert len(read_examples(sft_lake, "hq")) == 3
    assert write_examples(sft_lake, synthetic_rows(make_clips(range(8), ("video", "image")), "train")) == 0
    video = next(e for e in train if e.media_type == "video" and not e.example_id.startswith("bad"))
    assert video.frame_times == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3]) and video.facts
    with pytest.raises(FileNotFoundError, match="caption_sft"):
        read_examples(tmp_path / "empty_lake")
    cfg = CaptionTrainConfig(stage=2, lake=str(sft_lake), steps=6, **TINY)
    result = train_captioner(cfg)
    assert result.skipped == {"CaptionInputError": 1}  # the undecodable example: seen once in 12 draws, skipped
    assert all(row["caption_tokens"] > 0 for row in result.history)


def test_a_lake_with_no_decodable_example_is_a_clear_error(tmp_path: Path) -> None:
    from captioner.train import NoUsableExamplesError

    lake = tmp_path / "bad_lake"
    rows = [r | {"frames": [b"not a jpeg"] * len(r["frames"])}
            for r in synthetic_rows(make_clips(range(3)), "train", prefix="bad")]
    assert write_examples(lake, rows) == 3
    cfg = CaptionTrainConfig(stage=2, lake=str(lake), steps=2, **TINY)
    with pytest.raises(NoUsableExamplesError, match=r"split 'train' .*all 3 examples .*CaptionInputError: 3"):
        train_captioner(cfg)


def test_checkpoints_resume_exactly_and_chain_stages(sft_lake: Path, tmp_path: Path) -> None:
    base = dict(stage=2, lake=str(sft_lake), lr_llm=1e-3, lr_projector=1e-3, lr_vision=1e-3, **TINY)
    straight = train_captioner(CaptionTrainConfig(steps=4, checkpoint_dir=str(tmp_path / "a"), **base))
    first = train_captioner(CaptionTrainConfig(steps=2, checkpoint_dir=str(tmp_path / "b"), **base))
    assert (tmp_path / "b" / "latest").read_text().strip() == "step_000002"
    resumed = train_captioner(CaptionTrainConfig(steps=4, checkpoint_dir=str(tmp_path / "b"), **base))
    assert [h["step"] for h in resumed.history] == [3, 4]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history[2:]], abs=1e-5)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    meta = json.loads((tmp_path / "b" / "step_000004" / "meta.json").read_text())
    # 4 steps x 2 samples, plus the undecodable example the stream skipped on the way
    assert meta["stage"] == 2 and meta["step"] == 4 and meta["next_index"] == 8 + sum(straight.skipped.values())
    assert first.checkpoint.name == "step_000002"

    # stage 3 starts from stage 2's final checkpoint (as its init, at step 0) on the hq split
    stage3 = train_captioner(CaptionTrainConfig(stage=3, init=str(tmp_path / "b"), lake=str(sft_lake), steps=1,
                                                batch_size=2, device="cpu", checkpoint_dir=str(tmp_path / "c")))
    assert [h["step"] for h in stage3.history] == [1]
    from captioner.model import load_captioner

    loaded, _ = load_captioner(tmp_path / "c" / "step_000001")
    for a, b in zip(stage3.model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_clip_examples_join_keyframes_with_reference_captions(tmp_path: Path) -> None:
    from captioner.data import encode_jpeg_rgb
    from curation.lake import KeyedWriter, Lake

    lake = Lake(str(tmp_path / "lake"))
    clip = make_clips([5])[0]
    jpegs = [encode_jpeg_rgb(f) for f in clip.frames[:3]]
    rows = [{"clip_id": f"v{i}:000030-000090", "video_id": f"v{i}", "media_type": "video", "start_frame": 30,
             "end_frame": 90, "fps": 30.0, "keyframes": jpegs, "keyframe_indices": [30, 60, 89], "status": "ok"}
            for i in range(3)]
    rows[2]["status"] = "error"
    KeyedWriter(lake, "clips").append(rows)
    KeyedWriter(lake, "clips").append([{**rows[0], "clip_id": "v3:000030-000090", "video_id": "v3"}])
    KeyedWriter(lake, "captions").append([
        {"clip_id": "v0:000030-000090", "caption": "A red circle.", "status": "ok"},
        {"clip_id": "v1:000030-000090", "caption": "  ", "status": "ok"},
        {"clip_id": "v2:000030-000090", "caption": "An error clip.", "status": "ok"},
        {"clip_id": "v3:000030-000090", "caption": None, "status": "error", "error": "could not decode"}])
    examples = read_clip_examples(lake)
    # the blank caption, the clip with status error and the failed caption row are left out
    assert [e.example_id for e in examples] == ["clip-v0:000030-000090"]
    # a plain reference-caption table (clip_id, caption) works too
    lance.write_dataset(pa.table({"clip_id": ["v1:000030-000090"], "caption": ["Two blue squares."]}),
                        lake.uri("reference_captions"))
    assert [e.caption for e in read_clip_examples(lake, "reference_captions")] == ["Two blue squares."]
    # once the lake is curated, only kept clips train
    lake.overwrite("curated", pa.Table.from_pylist([{"clip_id": "v0:000030-000090", "keep": False},
                                                    {"clip_id": "v1:000030-000090", "keep": True}]))
    assert read_clip_examples(lake) == []
    assert len(read_clip_examples(lake, "reference_captions")) == 1
    (example,) = examples
    assert example.frame_times == pytest.approx([0.0, 1.0, 59 / 30]) and example.caption == "A red circle."
    media = example.media()
    assert media.timestamps == example.frame_times and len(media.frames) == 3
    assert CaptionExample("x", "text", [], [], "Say hi.", "Hi.").media() is None


@pytest.mark.slow
def test_ray_train_one_cpu_worker(sft_lake: Path, tmp_path: Path, local_ray) -> None:
    from captioner.model import load_captioner
    from captioner.train import train_captioner_ray

    cfg = CaptionTrainConfig(stage=1, lake=str(sft_lake), steps=2, checkpoint_dir=str(tmp_path / "ray_ckpt"),
                             **TINY)
    result = train_captioner_ray(cfg, num_workers=1)
    assert result.error is None and result.metrics["step"] == 2
    assert result.metrics["loss"] == result.metrics["loss"]  # finite, not NaN
    model, processor = load_captioner(Path(result.checkpoint.path))
    assert model.config.max_tiles == 7 and processor.tokenizer is not None
    assert (tmp_path / "ray_ckpt" / "latest").is_file()


def test_yaml_config_and_command(sft_lake: Path, tmp_path: Path, capsys) -> None:
    from captioner.train import load_train_config, main

    good = tmp_path / "stage1.yaml"
    good.write_text(f"stage: 1\ninit: tiny\nlake: {sft_lake}\nsteps: 1\nbatch_size: 2\ndevice: cpu\n"
                    f"checkpoint_dir: {tmp_path / 'ckpt'}\n")
    assert load_train_config(good, {"steps": 3}).steps == 3
    main(["--config", str(good)])
    assert "stage 1: final loss" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "step_000001" / "model.safetensors").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 2\ninit: tiny\nlake: x\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):  # the one loader's error
        load_train_config(bad)
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping"):
        load_train_config(tmp_path / "list.yaml")


@pytest.mark.slow
def test_ray_train_two_cpu_workers_share_one_model_through_ddp(sft_lake: Path, tmp_path: Path, local_ray) -> None:
    """Two gloo workers on different shards end with identical weights (without DDP each would train its own
    copy on its own shard and they would differ), and the weights moved from the shared initialisation."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from captioner.train import _ray_train_loop

    out = tmp_path / "ranks"
    out.mkdir()

    def loop(config: dict) -> None:
        import ray.train

        result = _ray_train_loop(config)
        rank = ray.train.get_context().get_world_rank()
        torch.save({"params": [p.detach().clone() for p in result.model.parameters()],
                    "wrapped": type(result.model).__name__}, out / f"rank{rank}.pt")

    import ray.data

    rows = synthetic_rows(make_clips(range(8), ("video", "image")), "train")  # 4 per worker
    cfg = CaptionTrainConfig(stage=2, lake=str(sft_lake), steps=2, lr_llm=1e-2, lr_projector=1e-2, lr_vision=1e-2,
                             **TINY)
    trainer = TorchTrainer(loop, train_loop_config={"cfg": cfg.model_dump(mode="json")},
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                           datasets={"train": ray.data.from_items(rows)})
    assert trainer.fit().error is None
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert all(r["wrapped"] == "SlowFastCaptioner" for r in ranks)
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True))
    from captioner.tiny import build_tiny_captioner

    initial = list(build_tiny_captioner(0)[0].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(initial, ranks[0]["params"], strict=True))
