"""Batch sampling into the ``samples`` table on local Ray: bad inputs as error rows, resume without duplicates,
config validation, and the Lance prompt source."""
from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from curation.lake import Lake
from wanmodel.cli_vae import read_video
from wanmodel.pipelines.batch import (
    SampleJobConfig,
    load_sample_config,
    run_sampling,
    sample_items,
)

SAMPLING = {"height": 32, "width": 32, "num_frames": 5, "num_steps": 2}


def _config(tmp_path: Path, **overrides) -> SampleJobConfig:
    data = {"lake": str(tmp_path / "lake"), "models": {"random_tiny": True, "tiny_dir": str(tmp_path.parent / "tiny")},
            "sampling": SAMPLING, "torch_threads": 1, "commit_every": 2, **overrides}
    return SampleJobConfig(**data)


def _prompts_file(tmp_path: Path) -> Path:
    lines = [json.dumps({"prompt": "a corgi surfing a wave"}),
             json.dumps({"prompt": "a red fox in snow", "seed": 7, "negative_prompt": "blurry"}),
             "{not json",
             json.dumps({"prompt": "   "}),
             json.dumps({"prompt": "a boat", "seed": -3}),
             json.dumps({"caption": "no prompt key"}),
             json.dumps({"prompt": "the camera follows dolphins"})]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_sample_job_on_ray_records_errors_and_resumes(local_ray, tmp_path: Path) -> None:
    cfg = _config(tmp_path, prompts_file=str(_prompts_file(tmp_path)), seeds=[0, 1], batch_size=2, limit=5)
    items = sample_items(cfg, Lake(cfg.lake))
    # 6 records sampled once per configured seed (a bad seed falls back to them), the fox once with its own seed
    prompts_and_seeds = [(i["prompt"], i["seed"]) for i in items]
    assert ("a red fox in snow", 7) in prompts_and_seeds and len(items) == 13  # 6 records x 2 seeds + 1 own seed
    first = run_sampling(cfg)  # a partial run: at most 5 samples
    assert first.attempted == 5 and first.written == 5
    lake = Lake(cfg.lake)
    assert lake.count("samples") == 5

    rest = run_sampling(cfg.model_copy(update={"limit": None}))  # resume: only the 8 missing
    assert rest.already_done == 5 and rest.attempted == 8 and rest.written == 8
    again = run_sampling(cfg.model_copy(update={"limit": None}))
    assert again.attempted == 0 and again.written == 0

    table = lake.read("samples")
    assert table.num_rows == 13 and len(set(table.column("sample_id").to_pylist())) == 13
    rows = table.to_pylist()
    errors = {r["prompt"]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"{not json", "   ", "a boat", json.dumps({"caption": "no prompt key"})}
    assert "invalid JSON" in errors["{not json"] and "line 3" in errors["{not json"]
    assert "prompt 0 is empty" in errors["   "]
    assert "seed must be an integer" in errors["a boat"]
    assert "no prompt string" in errors[json.dumps({"caption": "no prompt key"})]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5 and {r["seed"] for r in ok} == {0, 1, 7}
    fox = next(r for r in ok if r["prompt"] == "a red fox in snow")
    assert fox["negative_prompt"] == "blurry" and fox["model"] == "random-tiny:0" and fox["media_format"] == "mp4"
    assert json.loads(fox["settings_json"])["num_steps"] == 2
    video_path = tmp_path / "fox.mp4"
    video_path.write_bytes(fox["video"])
    frames, _ = read_video(video_path)
    assert frames.shape == (5, 32, 32, 3) and frames.std() > 5
    runs = lake.read("runs").to_pylist()
    assert [r["count_in"] for r in runs if r["stage"] == "sample/t2v"] == [5, 8, 0]


def test_same_sample_is_the_same_video_and_settings_change_the_key(tmp_path: Path) -> None:
    cfg = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3])
    run_sampling(cfg, backend="local")
    other_lake = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3], lake=str(tmp_path / "lake2"))
    run_sampling(other_lake, backend="local")
    a, b = Lake(cfg.lake).read("samples").to_pylist()[0], Lake(other_lake.lake).read("samples").to_pylist()[0]
    assert a["sample_id"] == b["sample_id"]
    (tmp_path / "a.mp4").write_bytes(a["video"])
    (tmp_path / "b.mp4").write_bytes(b["video"])
    # the pixels are bit-identical (test_pipelines); the H.264 bytes of these noise-like frames are not always
    # (x264's rate control flips on them between calls in one process), so compare decoded luma
    luma = np.array([0.299, 0.587, 0.114])
    decoded_a, decoded_b = (read_video(tmp_path / name)[0].astype(float) @ luma for name in ("a.mp4", "b.mp4"))
    assert np.abs(decoded_a - decoded_b).mean() < 6 and decoded_a.std() > 10  # another seed: about 35
    more_steps = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3],
                         sampling={**SAMPLING, "num_steps": 3})
    assert sample_items(more_steps, Lake(cfg.lake))[0]["sample_id"] != a["sample_id"]


def test_t2i_and_lance_prompt_table(tmp_path: Path) -> None:
    lance.write_dataset(pa.table({"caption": ["a red apple", "a blue cup"], "seed": [5, 6]}),
                        str(tmp_path / "prompts.lance"))
    cfg = _config(tmp_path, task="t2i", prompts_table=str(tmp_path / "prompts.lance"), prompt_column="caption",
                  sampling={"height": 32, "width": 32, "num_steps": 2})
    summary = run_sampling(cfg, backend="local")
    assert summary.written == 2
    rows = Lake(cfg.lake).read("samples").to_pylist()
    assert sorted(r["seed"] for r in rows) == [5, 6] and all(r["media_format"] == "png" for r in rows)
    assert all(r["video"][:8] == b"\x89PNG\r\n\x1a\n" and r["num_frames"] == 1 for r in rows)


def test_sample_job_entrypoint_and_bad_configs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from jobs.sample import main

    config = tmp_path / "job.yaml"
    config.write_text(Path("jobs/configs/sample_tiny.yaml").read_text())
    code = main(["--config", str(config), "--lake", str(tmp_path / "lake"), "--local",
                 "--set", f"models.tiny_dir={tmp_path / 'tiny'}", "--set", "sampling.num_steps=1",
                 "--set", "sampling.height=32", "--set", "sampling.width=32", "--set", "limit=1"])
    assert code == 0 and "1 written" in capsys.readouterr().out
    assert load_sample_config(config).seeds == [0, 1]
    for override, message in (("sampling.num_frames=6", "1 + 4k"), ("sampling.steps=3", "unknown sampling"),
                              ("batch_size=0", "batch_size"), ("colour=red", "colour"),
                              ("prompts_file=/nonexistent.txt", "exactly one of"),
                              ("models={}", "random_tiny"), ("task=t2i", "single frames"),
                              ("speed={fp8: int4}", "fp8 must be one of"), ("speed={disk: 1}", "speed:")):
        assert main(["--config", str(config), "--set", override]) == 2, override
        assert message in capsys.readouterr().err, override
    with pytest.raises(ValidationError, match="no such file"):
        SampleJobConfig(lake=str(tmp_path), prompts_file="/nonexistent.txt")


def test_speed_options_sample_the_same_latents_and_fp8_changes_the_key(tmp_path: Path) -> None:
    """Block offload with the FP8 fallback (this CPU has no FP8 GEMM) samples what the plain job samples; FP8 is
    in the sample id (it changes the output where the GPU has FP8), offload is not (it never does)."""
    from wanmodel.pipelines.batch import build_pipeline

    plain = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3])
    fast = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3], speed={"fp8": "fp8", "offload": "blocks"})
    offload_only = _config(tmp_path, prompts=["a lighthouse at night"], seeds=[3], speed={"offload": "model"})
    lake = Lake(str(tmp_path / "lake"))
    ids = [sample_items(cfg, lake)[0]["sample_id"] for cfg in (plain, fast, offload_only)]
    assert ids[0] != ids[1] and ids[0] == ids[2]
    pipelines = [build_pipeline(cfg) for cfg in (plain, fast)]
    assert pipelines[1].block_offload is not None
    latents = [p.generate(["a lighthouse at night"], seed=3).latents for p in pipelines]
    assert np.array_equal(latents[0].numpy(), latents[1].numpy())
