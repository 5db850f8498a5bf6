"""The encode job on the session's curated lake (copied per test, captions written as rows): latents and text
embeddings with known answers (a direct ``WanVAE.encode`` of the clip's frames decoded here with PyAV, a direct
umT5 encode of the caption), every kept clip exactly once, error rows, a re-run that writes nothing, Ray and local,
kill -9 then resume."""
from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

from curation.lake import Lake
from curation.lake.schemas import schema_for
from curation.lake.tables import KeyedWriter
from tests.conftest import REPO
from wanmodel.data.buckets import Curriculum, source_frame_indices
from wanmodel.data.encode import EncodeJobConfig, run_encode_job
from wanmodel.data.encode_pixels import crop_to_bucket
from wanmodel.data.tensor_bytes import from_bytes, text_key

COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wanmodel.pipelines.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("encode_models") / "tiny"
    build_tiny_models(root)
    return root


def kept(lake: Lake) -> list[dict]:
    rows = lake.read("curated").to_pylist()
    return sorted((r for r in rows if r["keep"]), key=lambda r: r["clip_id"])


def captioned_lake(curated_lake, dest: Path) -> Lake:
    """A copy of the curated lake with a caption row per kept clip (three distinct captions, so texts repeat)."""
    src, _ = curated_lake
    shutil.copytree(src.root, dest)
    lake = Lake(str(dest))
    now = dt.datetime.now(dt.UTC)
    rows = [{"clip_id": r["clip_id"], "media_type": r["media_type"], "caption": f"a {COLOURS[i % 3]} scene",
             "model_id": "test", "prompt_version": "t", "status": "ok", "captioned_at": now}
            for i, r in enumerate(kept(lake))]
    KeyedWriter(lake, "captions").append(pa.Table.from_pylist(rows, schema=schema_for("captions")))
    return lake


def config(lake: Lake, models: Path, **fields) -> EncodeJobConfig:
    return EncodeJobConfig(**{"lake": lake.root, "stage": "tiny", "random_tiny": str(models), "text_len": 16,
                              "commit_every": 3, "execution": "local", **fields})


def latents(lake: Lake) -> list[dict]:
    return lake.read("latents").to_pylist()


def source_frames(uri: str, media_type: str, indices: list[int]) -> list[np.ndarray]:
    """RGB frames at ``indices`` decoded here with PyAV (an image with OpenCV), apart from the job's decoder."""
    if media_type == "image":
        return [cv2.imread(uri)[..., ::-1]]
    with av.open(uri) as container:
        wanted, out = set(indices), {}
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return [out[i] for i in indices]


def direct_mean(row: dict, models: Path, bucket) -> torch.Tensor:
    from wanmodel.models.vae_adapters import load_vae

    n = row["end_frame"] - row["start_frame"]
    fps = float(lance.dataset(row["_clips"]).to_table(filter=f"clip_id = '{row['clip_id']}'",
                                                      columns=["fps"]).column(0)[0].as_py() or 1.0)
    picks = [row["start_frame"] + i for i in source_frame_indices(bucket, n, fps)]
    frames = [crop_to_bucket(f, row["crop"], bucket.height, bucket.width)
              for f in source_frames(row["uri"], row["media_type"], picks)]
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        return load_vae(models / "vae").encode(video[None]).mean[0]


def assert_each_kept_clip_once(lake: Lake) -> list[dict]:
    rows = latents(lake)
    counts = Counter(r["clip_id"] for r in rows)
    assert set(counts) == {r["clip_id"] for r in kept(lake)}
    assert set(counts.values()) == {1}, [c for c, n in counts.items() if n > 1]
    return rows


def test_encode_local_known_answers_and_rerun(curated_lake, tiny_models, tmp_path):
    lake = captioned_lake(curated_lake, tmp_path / "lake")
    stage = Curriculum.load(REPO / "jobs/configs/curriculum.yaml").stage("tiny")
    summary = run_encode_job(config(lake, tiny_models), progress=False)
    rows = assert_each_kept_clip_once(lake)
    assert summary.failed == 0 and summary.ok == len(rows) >= 4, summary.text()
    assert {r["media_type"] for r in rows} == {"image", "video"}
    for r in rows:
        bucket = stage.bucket(r["bucket"])
        assert r["status"] == "ok" and list(r["shape"]) == list(bucket.latent_shape())
        assert (r["num_frames"], r["height"], r["width"]) == (bucket.frames, bucket.height, bucket.width)
    # known answer: the stored mean is the VAE's mean of the clip's frames decoded, cropped and resized here
    curated = {c["clip_id"]: c for c in kept(lake)}
    upright = {c for c, row in curated.items() if not row["rotation"]}  # PyAV here does not turn frames
    for r in [next(r for r in rows if r["media_type"] == m and r["clip_id"] in upright) for m in ("video", "image")]:
        row = {**curated[r["clip_id"]], "crop": r["crop"], "_clips": lake.uri("clips")}
        mean = from_bytes(r["mean"], r["shape"], r["dtype"])
        expected = direct_mean(row, tiny_models, stage.bucket(r["bucket"]))
        torch.testing.assert_close(mean, expected, atol=1e-4, rtol=1e-4)
        logvar = from_bytes(r["logvar"], r["shape"], r["dtype"])
        assert torch.isfinite(logvar).all() and not torch.equal(logvar, mean)
    # every row carries its VAE's latent statistics (what the trainer normalises it with)
    from wanmodel.models.vae_adapters import load_vae

    stats = [torch.tensor(v, dtype=torch.float32).tolist() for v in load_vae(tiny_models / "vae").config.latent_stats]
    assert all([r["latents_mean"], r["latents_std"]] == stats for r in rows)
    # each distinct caption has one embedding row, equal to umT5 run directly
    embeddings = {e["text_key"]: e for e in lake.read("text_embeddings").to_pylist()}
    assert len(embeddings) == len({r["caption"] for r in rows}) == 3
    assert {r["text_key"] for r in rows} <= set(embeddings)
    from wanmodel.text.umt5 import UMT5TextEncoder

    encoder = UMT5TextEncoder(tiny_models / "umt5", text_len=16)
    for e in embeddings.values():
        assert e["text_key"] == text_key(e["encoder_id"], e["text"]) and e["status"] == "ok"
        torch.testing.assert_close(from_bytes(e["embedding"], e["shape"], e["dtype"]), encoder.encode([e["text"]])[0])
    # the trainer's reader accepts the caches: shapes of the stage's buckets, every caption embedded
    from wanmodel.train.dit_data import LatentIndex, check_text_keys, stage_buckets

    data = stage_buckets(SimpleNamespace(curriculum=str(REPO / "jobs/configs/curriculum.yaml"), stage="tiny"), 16)
    index = LatentIndex.from_lake(lake, data.buckets)
    index.check(in_dim=16, patch=(1, 2, 2), global_batch=1, expected=data.shapes)
    check_text_keys(lake, index)
    assert len(index.rows) == len(rows)
    stages = lake.read("runs", columns=["stage"]).column("stage").to_pylist()
    assert stages.count("encode") == 1 and stages.count("encode_text") == 1
    again = run_encode_job(config(lake, tiny_models), progress=False)
    assert (again.pending, again.written, again.texts_written) == (0, 0, 0)
    assert len(latents(lake)) == len(rows) and lake.count("text_embeddings") == 3


def test_encode_on_ray_with_a_deleted_file_and_too_short_clips(curated_lake, tiny_models, local_ray, tmp_path):
    lake = captioned_lake(curated_lake, tmp_path / "lake")
    videos = [r for r in kept(lake) if r["media_type"] == "video"]
    longest = max(videos, key=lambda r: r["duration_s"])  # long enough for the stage: only its decode can fail
    gone = longest["clip_id"]
    missing = tmp_path / "deleted.mp4"
    shutil.copy(longest["uri"], missing)
    lance.dataset(lake.uri("curated")).update({"uri": f"'{missing}'"}, where=f"clip_id = '{gone}'")
    missing.unlink()  # the file is deleted after curation
    curriculum = tmp_path / "curriculum.yaml"
    durations = sorted(r["duration_s"] for r in videos)
    need = (durations[len(durations) // 2] + durations[-1]) / 2  # some clips shorter, some longer
    curriculum.write_text(yaml.safe_dump({"stages": [{
        "name": "long", "mix": {"image": 0.5, "video": 0.5}, "image": {"size": 32, "aspect_ratios": ["1:1"]},
        "video": {"size": 32, "aspect_ratios": ["1:1"], "frames": 5, "fps": round(4 / need, 4)}}]}))
    summary = run_encode_job(config(lake, tiny_models, execution="ray", stage="long", curriculum=str(curriculum)),
                             progress=False)
    rows = {r["clip_id"]: r for r in assert_each_kept_clip_once(lake)}
    assert rows[gone]["status"] == "error" and "decode" in rows[gone]["error"]
    short = {c for c, r in rows.items() if r["status"] == "error" and r["error"].startswith("bucket: too short")}
    expected_short = {r["clip_id"] for r in videos if r["duration_s"] < need - 0.2}
    assert expected_short and expected_short <= short and gone not in short
    assert all(rows[c]["bucket"] is None for c in short)
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert {r["media_type"] for r in ok} == {"image", "video"}
    assert summary.failed == len(short) + 1 and summary.ok == len(ok)
    again = run_encode_job(config(lake, tiny_models, execution="ray", stage="long", curriculum=str(curriculum)),
                           progress=False)
    assert again.written == 0 and again.texts_written == 0


@pytest.mark.slow
def test_kill_9_then_resume_encodes_each_kept_clip_once(curated_lake, tiny_models, tmp_path):
    from tests.jobs.test_kill_resume import (
        Case,
        kill_at_random_commit,
        run_to_completion,
    )

    lake = captioned_lake(curated_lake, tmp_path / "lake")
    cfg_path = tmp_path / "encode.yaml"
    cfg_path.write_text(yaml.safe_dump(config(lake, tiny_models, commit_every=2).model_dump(mode="json")))
    case = Case("jobs.encode", ["--config", str(cfg_path)], tmp_path / "lake", tmp_path / "lake",
                ("latents", "text_embeddings"), "latents")
    n_commits = max(1, len(kept(lake)) // 2 - 1)
    kill = kill_at_random_commit(case, n_commits, np.random.default_rng(12), tmp_path)
    assert kill.commits_done < len(kept(lake)) // 2 + 1
    before = lake.count("latents") if lake.exists("latents") else 0
    run_to_completion(case)
    rows = assert_each_kept_clip_once(lake)
    assert all(r["status"] == "ok" for r in rows) and before < len(rows)
    assert len({r["text_key"] for r in rows}) == lake.count("text_embeddings") == 3


def test_bad_config_is_a_clear_error_before_any_work(tmp_path, tiny_models):
    from curation.jobconfig import ConfigError
    from jobs.encode import main
    from wanmodel.data.encode import load_encode_config

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"lake": str(tmp_path / "lake"), "stage": "tiny", "random_tiny": "x",
                                   "batch_sise": 4, "encode": {"num_gpu": 1}}))
    with pytest.raises(ConfigError) as e:
        load_encode_config(bad)
    assert "unknown key 'batch_sise'" in str(e.value) and "unknown key 'encode.num_gpu'" in str(e.value)
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"lake": str(tmp_path), "stage": "tiny", "vae": "v"}))
    with pytest.raises(ConfigError, match="set 'vae' and 'text_encoder'"):
        load_encode_config(models)
    with pytest.raises(ConfigError, match="unknown curriculum stage 'stage9'.*joint_256_192"):
        run_encode_job(config(Lake(str(tmp_path / "lake")), tiny_models, stage="stage9"), progress=False)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"lake": str(tmp_path / "empty"), "stage": "tiny", "random_tiny": str(tiny_models),
                                    "execution": "local"}))
    assert main(["--config", str(good)]) == 2  # no curated table: the message names the stage to run first
    assert not (tmp_path / "empty" / "latents.lance").exists()


def test_crop_to_bucket_drops_the_border_and_keeps_the_middle():
    frame = np.zeros((120, 200, 3), np.uint8)  # black bars: 10 rows top and bottom; a white square in the middle
    frame[10:110] = 100
    frame[40:80, 80:120] = 255
    out = crop_to_bucket(frame, [0, 10, 200, 110], 32, 32)  # 200x100 after the crop -> centre 100x100 -> 32x32
    assert out.shape == (32, 32, 3) and out.min() >= 99  # no black bar left
    centre = out[10:22, 10:22].mean()
    assert centre > 240 and abs(out[:, :5].mean() - 100) < 1  # the square stays centred, the sides are grey
    with pytest.raises(ValueError, match="empty crop box"):
        crop_to_bucket(frame, [50, 50, 50, 90], 32, 32)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_tensor_bytes_round_trip(dtype):
    from wanmodel.data.tensor_bytes import to_bytes

    x = torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    data, shape, name = to_bytes(x, dtype)
    back = from_bytes(data, shape, name)
    assert back.dtype == getattr(torch, dtype) and shape == [16, 2, 4, 4]
    torch.testing.assert_close(back, x.to(getattr(torch, dtype)), atol=0, rtol=0)
    with pytest.raises(ValueError, match="needs"):
        from_bytes(data[:-2], shape, name)
