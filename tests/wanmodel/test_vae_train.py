"""Wan-VAE training: data from a curated lake, losses, inflation, GAN phase, exact resume, Ray Train, config errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wanmodel.models.vae import LatentPosterior, WanVAE
from wanmodel.train import VAETrainConfig, inflate_2d_to_3d, train_vae
from wanmodel.train.vae_losses import PerceptualLoss, kl_loss, l1_loss

TINY = dict(model="tiny", size=32, batch_size=2, perceptual_weights=None, device="cpu", cpu_threads=1, log_every=5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two shared CPU cores: OpenMP spinning on a busy core makes a step ~100x slower; one thread is steady.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated corpus curated (ingest, shots, select) into a Lance lake, locally (no Ray)."""
    from curation.pipeline import run_curation
    from curation.synth import generate
    from tests.conftest import demo_config

    root = tmp_path_factory.mktemp("vae_lake")
    generate(root / "corpus", preset="test", seed=0, n_videos=12, n_multi=2, n_images=2, n_dup_originals=0,
             n_lowres=1, n_large=0)
    lake = root / "lake"
    cfg = demo_config(lake, root / "corpus" / "media", **{
        "execution.backend": "local", "stages": ["ingest", "shots", "select"], "select.min_duration_s": 0,
        "select.min_short_side": {"synthetic_180p": 16, "stage1_256p": 256, "stage2_480p": 480,
                                  "stage3_720p": 720}})
    run_curation(cfg, report=False)
    return lake


def test_data_samples_shape_range_and_skips(small_lake: Path) -> None:
    from wanmodel.data import ClipDataset, read_clip_records

    records = read_clip_records(small_lake)
    dataset = ClipDataset(records, num_frames=5, size=(32, 48), num_samples=len(records))
    samples = list(dataset)
    assert samples and all(s.video.shape == (3, 5, 32, 48) for s in samples)
    assert all(s.video.min() >= -1.0 and s.video.max() <= 1.0 for s in samples)
    assert dataset.skipped.get("too_short", 0) == sum(r.media_type == "image" for r in records)
    again = list(ClipDataset(records, num_frames=5, size=(32, 48), num_samples=len(records)))
    assert all(torch.equal(a.video, b.video) for a, b in zip(samples, again))  # a (seed, index) stream


@pytest.mark.parametrize("frames,budget_mb", [(1, 64), (5, 64), (5, 0.004)])
def test_frame_cache_serves_the_decoded_windows(small_lake: Path, tmp_path: Path, frames: int,
                                                budget_mb: float) -> None:
    """With the decoded-frame cache the batches are bit for bit those of decoding each window (images and video
    windows, into the second epoch); a budget smaller than a clip keeps nothing and changes nothing; a clip whose
    file is gone is a counted decode error either way, and the clip after it takes its place."""
    from dataclasses import replace

    from wanmodel.data.clips import read_clip_records
    from wanmodel.train.vae_data import VAEData

    records = read_clip_records(small_lake)
    gone = next(i for i, r in enumerate(records) if r.media_type != "image")
    records[gone] = replace(records[gone], uri=str(tmp_path / "gone.mp4"))
    kwargs = {"num_frames": frames, "size": (32, 48), "batch_size": 3, "seed": 1}
    plain, cached = VAEData(records, **kwargs), VAEData(records, **kwargs, cache_mb=budget_mb)
    for step in range(2 * len(plain.records) // 3 + 1):
        a, b = plain.batch(step), cached.batch(step)
        assert a.clip_ids == b.clip_ids and torch.equal(a.video, b.video), step
    assert plain.skipped["decode_error"] == cached.skipped["decode_error"] > 0
    assert cached.cache is not None
    if budget_mb < 1:
        assert cached.cache.clips == {} and cached.cache.used == 0
    else:
        assert 1 < len(cached.cache.clips) < len(plain.records) + 1
        assert 0 < cached.cache.used == sum(a.nbytes for a in cached.cache.clips.values()) <= budget_mb * 2**20


def test_losses_zero_cases_and_gradients() -> None:
    torch.manual_seed(0)
    zeros = torch.zeros(2, 16, 2, 4, 4)
    assert kl_loss(LatentPosterior(zeros, zeros)).item() == 0.0
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1
    assert l1_loss(video, video).item() == 0.0
    perceptual = PerceptualLoss(weights=None)
    assert perceptual(video, video).item() == 0.0
    assert perceptual(video.flip(-1), video).item() > 0.0

    vae = WanVAE("tiny")
    with torch.no_grad():  # the released init zeroes attention projections; give every path a gradient
        for block in vae.modules():
            if hasattr(block, "proj"):
                block.proj.weight.normal_(0, 0.02)
    recon, posterior = vae(video, sample_posterior=True, chunked=False)
    loss = 3 * l1_loss(recon, video) + 3e-6 * kl_loss(posterior) + 3 * perceptual(recon, video)
    loss.backward()
    missing = [n for n, p in vae.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing[:5]}"
    assert all(p.grad is None for p in perceptual.parameters())  # the metric trunk stays frozen


def test_inflation_reproduces_image_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    image_model = WanVAE("tiny").eval()
    with torch.no_grad():  # as if trained: every weight non-trivial
        for p in image_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    video_model = inflate_2d_to_3d(image_model).eval()
    frame = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = image_model(frame, chunked=False)[0]
        assert torch.allclose(video_model(frame, chunked=False)[0], expected, atol=1e-6)
        assert torch.allclose(video_model(frame)[0], expected, atol=1e-5)  # chunked inference path too
        static = frame.expand(1, 3, 5, 32, 32)  # a still video: every frame decodes as the image model's
        out = video_model(static, chunked=False)[0]
        assert torch.allclose(out, expected.expand_as(out), atol=1e-5)
        # without inflation the untrained past taps mix frames and the property fails
        assert not torch.allclose(image_model(static, chunked=False)[0], expected.expand_as(out), atol=1e-3)


def test_image_stage_then_inflated_video_stage(small_lake: Path, tmp_path: Path) -> None:
    image_cfg = VAETrainConfig(lake=str(small_lake), phase="image", steps=3, checkpoint_dir=str(tmp_path / "img"),
                               perceptual_weight=3.0, **TINY)
    image = train_vae(image_cfg)
    assert image.checkpoint is not None and json.loads((image.checkpoint / "meta.json").read_text())["phase"] == "image"
    video_cfg = VAETrainConfig(lake=str(small_lake), phase="video", steps=1, init_checkpoint=str(tmp_path / "img"),
                               perceptual_weight=0.0, **{**TINY, "batch_size": 1})
    frame = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    inflated = inflate_2d_to_3d(image.vae.eval())
    video = train_vae(video_cfg.model_copy(update={"steps": 1, "lr": 1e-12}))  # ~no update: compare the init
    with torch.no_grad():
        assert torch.allclose(video.vae.eval()(frame, chunked=False)[0], inflated(frame, chunked=False)[0],
                              atol=1e-4)


def test_checkpoint_carries_measured_latent_statistics(small_lake: Path, tmp_path: Path) -> None:
    """A VAE trained from scratch stores the per-channel statistics of its posterior means on the first training
    clips (``latent_stats: auto``), so its latents normalise to zero mean and unit spread; ``keep`` leaves the
    release's, and fine-tuning from a checkpoint keeps that checkpoint's."""
    from wanmodel.models.vae import LATENT_MEAN, normalize_latents
    from wanmodel.models.vae_adapters import load_vae
    from wanmodel.train.vae_data import VAEData

    cfg = VAETrainConfig(lake=str(small_lake), phase="image", steps=2, checkpoint_dir=str(tmp_path / "a"),
                         perceptual_weight=0.0, latent_stats_clips=6, **TINY)
    result = train_vae(cfg)
    saved = load_vae(result.checkpoint)
    assert saved.config.latents_mean != LATENT_MEAN
    from wanmodel.data.clips import read_clip_records, split_records

    records, _ = split_records(read_clip_records(str(small_lake)), 0, 0)
    videos = VAEData(records, num_frames=1, size=(32, 32), batch_size=2, seed=0).first_windows(6)
    with torch.no_grad():
        z = normalize_latents(torch.cat([saved.encode(v[None]).mean for v in videos]), saved.config.latent_stats)
    flat = z.transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(16), atol=1e-4, rtol=0)
    kept = train_vae(cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "b"), "latent_stats": "keep"}))
    assert load_vae(kept.checkpoint).config.latents_mean == LATENT_MEAN
    tuned = train_vae(cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "c"), "steps": 1,
                                             "init_checkpoint": str(tmp_path / "a")}))
    assert load_vae(tuned.checkpoint).config.latent_stats == saved.config.latent_stats


def test_gan_phase_updates_discriminator(small_lake: Path) -> None:
    cfg = VAETrainConfig(lake=str(small_lake), phase="gan", steps=4, gan_start_step=1, perceptual_weight=0.0,
                         disc_channels=8, disc_layers=2, **TINY)
    torch.manual_seed(123)
    from wanmodel.train.vae_gan import PatchDiscriminator3d

    initial = PatchDiscriminator3d(8, 2).state_dict()
    result = train_vae(cfg)
    assert result.discriminator is not None
    assert result.history[0]["d_loss"] == 0.0 and result.history[0]["gan_weight"] == 0.0  # before start step
    assert all(row["d_loss"] > 0 and row["gan_weight"] > 0 for row in result.history[1:])
    trained = result.discriminator.state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained if k.endswith("weight"))


def test_resume_is_exact(small_lake: Path, tmp_path: Path) -> None:
    base = dict(lake=str(small_lake), phase="gan", gan_start_step=2, perceptual_weight=1.0, disc_channels=8,
                disc_layers=2, **TINY)
    straight = train_vae(VAETrainConfig(steps=6, checkpoint_dir=str(tmp_path / "a"), **base))
    first = train_vae(VAETrainConfig(steps=3, checkpoint_dir=str(tmp_path / "b"), **base))
    second = train_vae(VAETrainConfig(steps=6, checkpoint_dir=str(tmp_path / "b"), **base))  # resumes at 3
    resumed = first.history + second.history
    assert [r["step"] for r in resumed] == list(range(1, 7))
    keys = ("loss", "l1", "kl", "perceptual", "g_loss", "d_loss")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in straight.history]
    for name, value in straight.vae.state_dict().items():
        assert torch.equal(value, second.vae.state_dict()[name]), name
    for name, value in straight.discriminator.state_dict().items():
        assert torch.equal(value, second.discriminator.state_dict()[name]), name


def test_config_errors(small_lake: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no_such_key"):
        VAETrainConfig(lake=str(small_lake), no_such_key=1)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        VAETrainConfig(lake=str(small_lake), frames=4)
    missing = tmp_path / "weights" / "vgg16-missing.pth"
    cfg = VAETrainConfig(lake=str(small_lake), steps=1, **{**TINY, "perceptual_weights": str(missing)})
    with pytest.raises(FileNotFoundError, match="vgg16-missing.pth"):
        train_vae(cfg)
    from curation.lake import Lake
    from wanmodel.data import NoClipsError

    empty = Lake(str(tmp_path / "empty_lake"))
    curated = Lake(str(small_lake)).read("curated").slice(0, 0)
    empty.overwrite("curated", curated)
    with pytest.raises(NoClipsError, match="no kept clips"):
        train_vae(VAETrainConfig(lake=empty.root, steps=1, **TINY))
    with pytest.raises(NoClipsError, match="no 'curated' table"):
        train_vae(VAETrainConfig(lake=str(tmp_path / "nothing"), steps=1, **TINY))


@pytest.mark.slow
def test_short_training_raises_reconstruction_psnr(small_lake: Path) -> None:
    """The real learning check: 300 steps on generated clips lift PSNR on fixed windows of those clips by >= 2 dB
    (MSE down by over a third) over the same seeded initial model. Measured: 12.2 -> 15.2 dB. (Held-out clips of
    this small, varied corpus gain only ~1 dB in 300 steps with a base-8 model; that needs ~1k steps.)"""
    from wanmodel.data import ClipDataset, read_clip_records
    from wanmodel.models.vae import VAEConfig
    from wanmodel.train.vae import evaluate_psnr

    fixed = [s.video for s in ClipDataset(read_clip_records(small_lake), num_frames=5, size=(32, 32), seed=99,
                                          shuffle=False, num_samples=4)]
    torch.manual_seed(0)  # train_vae seeds torch with cfg.seed before building the model: the same initial weights
    before = evaluate_psnr(WanVAE(VAEConfig.preset("tiny")), fixed, torch.device("cpu"))
    cfg = VAETrainConfig(lake=str(small_lake), phase="video", steps=300, lr=1e-3, warmup_steps=10, grad_clip=0.0,
                         perceptual_weight=0.0, seed=0, **{**TINY, "log_every": 100})
    after = evaluate_psnr(train_vae(cfg).vae, fixed, torch.device("cpu"))
    assert after - before >= 2.0, (before, after)


@pytest.mark.slow
def test_ray_train_writes_checkpoint(small_lake: Path, tmp_path: Path, local_ray) -> None:
    """A Ray Train run on the session's 2-CPU Ray (one worker: with two, the workers, the index read and Ray
    Data's split coordinator did not fit once earlier tests had run, and the run waited forever); the checkpoint
    holds the DCP shards and the files load_vae reads, and its weights are the ones the run trained. Exact resume
    under Ray after kill -9: tests/jobs/test_train_vae_job.py, which runs the job with its own Ray."""
    from wanmodel.models.vae_adapters import load_vae
    from wanmodel.train import train_vae_ray

    cfg = VAETrainConfig(lake=str(small_lake), steps=2, perceptual_weight=0.0,
                         checkpoint_dir=str(tmp_path / "ray_ckpt"), metrics_dir=str(tmp_path / "metrics"),
                         record_samples=True, cpus_per_worker=0.5,
                         **{**TINY, "log_every": 1, "batch_size": 2})
    result = train_vae_ray(cfg, num_workers=1, use_gpu=False)
    assert result.error is None
    assert result.metrics["step"] == 2
    assert result.checkpoint == tmp_path / "ray_ckpt" / "step_000002"
    assert (result.checkpoint / ".metadata").is_file() and (result.checkpoint / "model.safetensors").is_file()
    steps = [json.loads(line) for line in (tmp_path / "metrics" / "samples.jsonl").read_text().splitlines()]
    assert [len(s["clip_ids"]) for s in steps] == [2, 2]  # the global batch
    trained = load_vae(result.checkpoint)
    torch.manual_seed(cfg.seed)  # the run's initial weights
    initial = WanVAE("tiny").state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in trained.state_dict().items())
