"""Wan-VAE training (report section 4.1.2): image stage -> 2D-to-3D inflation -> video stage -> GAN fine-tune.

    cfg = VAETrainConfig(lake="out/lake", phase="image", steps=2000, size=128, checkpoint_dir="ckpt/image")
    train_vae(cfg)                                                     # one process, no Ray
    train_vae_ray(cfg.model_copy(update=dict(phase="video", init_checkpoint="ckpt/image", ...)))

Both run the same loop (``train_loop``) on the DiT trainer's pieces: the clip windows of a step come from the shared
epoch plan (``vae_data``; the step is the whole data position), Ray Train workers read the clip list through
``ray.data.read_lance`` and ``get_dataset_shard`` (``ray_loop``), checkpoints are DCP step folders
(``checkpointing``) and metrics go to JSON lines, TensorBoard and a progress bar (``metrics``).

Phases (``phase``):
- ``image``: single frames (T = 1). Our causal convolutions see a lone frame with zero padding on the past side,
  so the 3D model run on T = 1 *is* a 2D image VAE of the same structure: only the last (current) temporal tap
  of each kernel gets gradient, and the temporal resamplers pass the frame through.
- ``video``: 1 + 4k frames. Started from an image-stage checkpoint, the model is inflated first
  (``inflate_2d_to_3d``): past temporal taps zeroed, temporal resamplers set to subsample/repeat, so the video
  model starts as the image model applied frame by frame.
- ``gan``: video training plus a hinge GAN loss from a 3D PatchGAN discriminator, from ``gan_start_step`` on.

Checkpoints (``checkpoint_dir/step_000123/``, committed by a rename): DCP shards of the VAE, its optimizer, the
discriminator and its optimizer, each rank's RNG state, ``meta.json`` (step, phase, config), and
``model.safetensors`` + ``config.json`` so that ``load_vae`` reads the folder; ``checkpoint_dir/latest`` names the
newest complete one. The newest complete checkpoint is resumed from, in process or under Ray after a kill -9, and
resume is exact: the data of a step and its posterior noise are functions of (seed, step).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wanmodel.data.clips import (
    ClipDataset,
    ClipRecord,
    read_clip_records,
    split_records,
)
from wanmodel.models.vae import CausalConv3d, Resample, VAEConfig, WanVAE
from wanmodel.models.vae_adapters import load_vae, save_vae
from wanmodel.train import checkpointing as ckpt
from wanmodel.train.metrics import MetricsWriter, peak_memory_bytes
from wanmodel.train.vae_data import ClipBatch, VAEData
from wanmodel.train.vae_gan import (
    PatchDiscriminator3d,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from wanmodel.train.vae_losses import PerceptualLoss, kl_loss, l1_loss, psnr
from wanmodel.train.vae_stats import set_latent_stats

__all__ = ["TrainResult", "VAETrainConfig", "evaluate_psnr", "inflate_2d_to_3d", "load_train_config", "train_loop",
           "train_vae", "train_vae_ray"]

log = logging.getLogger(__name__)

DEFAULT_VGG16 = "~/.cache/torch/hub/checkpoints/vgg16-397923af.pth"  # where torchvision caches it


# ------------------------------------------------------------------------------------------------ config
class VAETrainConfig(BaseModel):
    """Everything a Wan-VAE training run needs; an unknown key or a bad value fails before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lake: str  # curated lake (path or URI); reads `curated` keep = true
    allow_uncurated: bool = False  # fall back to `clips` status = 'ok' when the lake has no `curated`
    model: str = "tiny"  # VAEConfig preset for a fresh model ('wan2.1' | 'tiny')
    init_checkpoint: str | None = None  # a checkpoint folder (ours or save_vae's) or `latest` file to start from
    phase: Literal["image", "video", "gan"] = "video"
    steps: int = Field(100, ge=1)  # total optimizer steps (a resumed run continues up to this)
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    batch_size: int = Field(2, ge=1)  # per worker (the global batch is batch_size x workers)
    frames: int | None = None  # 1 + 4k; None: 1 for phase image, 5 otherwise (the report's stage-2 setting)
    size: int | tuple[int, int] = 128  # training H, W (multiples of 8); the report uses 128 for stage 2
    sample_posterior: bool = True
    l1_weight: float = Field(3.0, ge=0)
    kl_weight: float = Field(3e-6, ge=0)
    perceptual_weight: float = Field(3.0, ge=0)  # 0 disables (no VGG is built)
    perceptual_network: Literal["vgg16"] = "vgg16"
    perceptual_weights: str | None = DEFAULT_VGG16  # local file; null = random trunk (tests only)
    gan_weight: float = Field(0.5, ge=0)
    gan_adaptive_weight: bool = True  # VQGAN balance at the decoder's last layer, times gan_weight
    gan_start_step: int = Field(0, ge=0)  # GAN phase: discriminator and adversarial loss from this step on
    disc_lr: float | None = None  # default: lr
    disc_channels: int = Field(32, ge=1)
    disc_layers: int = Field(3, ge=1)
    disc_spectral_norm: bool = False
    checkpoint_dir: str | None = None  # shared storage under Ray on several nodes
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end
    keep_checkpoints: int = Field(2, ge=1)  # complete step folders kept
    resume: bool = True  # continue from the newest complete checkpoint of checkpoint_dir when present
    log_every: int = Field(10, ge=1)
    metrics_dir: str | None = None  # metrics.jsonl + TensorBoard events (rank 0)
    record_samples: bool = False  # samples.jsonl in metrics_dir: the clips of every step (tests, audits)
    eval_clips: int = Field(0, ge=0)  # held out of training; PSNR on them before, every eval_every, and at the end
    eval_every: int = Field(0, ge=0)
    latent_stats: Literal["auto", "measure", "keep"] = "auto"  # the config's latents_mean/std (vae_stats)
    latent_stats_clips: int = Field(32, ge=1)  # training clips the statistics are measured on
    seed: int = 0
    device: str = "auto"  # 'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1'...
    # per worker: keep the clips' decoded frames (training size, uint8) in memory up to this many MB, so a small
    # dataset decodes each clip once instead of once per window (0: decode every window)
    frame_cache_mb: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)  # Ray Train: CPUs reserved per worker (the index read needs one more)
    cpu_threads: int | None = Field(None, ge=1)  # torch.set_num_threads for this process (None: leave it)

    @model_validator(mode="after")
    def _check(self) -> VAETrainConfig:
        VAEConfig.preset(self.model)  # unknown preset -> ValueError naming the choices
        frames = self.num_frames
        if self.phase == "image" and frames != 1:
            raise ValueError(f"frames: the image phase trains single frames; got frames={frames}")
        if (frames - 1) % 4:
            raise ValueError(f"frames: Wan-VAE needs 1 + 4k frames (1, 5, 9, ...), got {frames}")
        height, width = self.hw
        if height <= 0 or width <= 0 or height % 8 or width % 8:
            raise ValueError(f"size: H and W must be positive multiples of 8, got {height}x{width}")
        return self

    @property
    def num_frames(self) -> int:
        return self.frames if self.frames is not None else (1 if self.phase == "image" else 5)

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)  # type: ignore


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> VAETrainConfig:
    """Read a YAML training config (plus dotted overrides) and validate it."""
    from curation.jobconfig import load_yaml_config

    return load_yaml_config(path, VAETrainConfig, overrides)


# --------------------------------------------------------------------------------------------- inflation
@torch.no_grad()
def inflate_2d_to_3d(image_model: WanVAE) -> WanVAE:
    """The video model that starts from an image-stage model (report: "inflate the 2D image VAE into 3D").

    Returns a copy in which every causal temporal kernel keeps only its last (current-frame) tap — the only
    tap the image stage trained — so each frame is processed exactly as the image model would; the temporal
    downsamplers start as "take the current frame" and the upsamplers as "repeat the frame". So on a single
    frame, and frame by frame on a static video, the inflated model reproduces the image model exactly.
    """
    video_model = copy.deepcopy(image_model)
    for module in video_model.modules():
        if isinstance(module, Resample) and hasattr(module, "time_conv"):
            conv = module.time_conv
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(conv.in_channels, dtype=conv.weight.dtype, device=conv.weight.device)
            for half in range(conv.out_channels // conv.in_channels):  # upsample: 2 copies (frames 2t, 2t+1)
                conv.weight[half * conv.in_channels:(half + 1) * conv.in_channels, :, -1, 0, 0] = eye
    for module in video_model.modules():
        if isinstance(module, CausalConv3d) and module.kernel_size[0] > 1 and not _is_time_conv(module, video_model):
            module.weight[:, :, :-1].zero_()
    return video_model


def _is_time_conv(conv: CausalConv3d, model: WanVAE) -> bool:
    return any(getattr(m, "time_conv", None) is conv for m in model.modules() if isinstance(m, Resample))


# ----------------------------------------------------------------------------------------------- set-up
@dataclass
class TrainResult:
    """What a run leaves: the trained modules, per-step logs, held-out evals and the last checkpoint."""

    vae: WanVAE
    discriminator: torch.nn.Module | None
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step of this run
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "psnr"} on held-out clips
    checkpoint: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    start_step: int = 0


@dataclass
class _Models:
    vae: WanVAE
    model: torch.nn.Module  # vae, or its distributed wrapper
    optimizer: torch.optim.Optimizer
    perceptual: PerceptualLoss | None
    discriminator: torch.nn.Module | None = None
    disc_model: torch.nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None

    @property
    def extra(self) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
        return {"disc": (self.discriminator, self.disc_optimizer)} if self.discriminator is not None else {}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a folder, a ``latest`` pointer file, or a run dir of ``step_N`` folders."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "latest":
        return path.parent / path.read_text().strip()
    found = ckpt.latest_checkpoint(path)
    if found is not None:
        return found
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _read_meta(checkpoint: Path) -> dict[str, Any]:
    meta_file = checkpoint / "meta.json"
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def _initial_vae(cfg: VAETrainConfig, resume: Path | None) -> WanVAE:
    """The resumed checkpoint's model, else ``init_checkpoint``'s (inflated when it is an image-stage one), else
    a fresh one from ``cfg.seed``."""
    if resume is not None:
        return load_vae(resume)
    if cfg.init_checkpoint:
        init = resolve_checkpoint(cfg.init_checkpoint)
        vae = load_vae(init)
        if cfg.phase != "image" and _read_meta(init).get("phase") == "image":
            log.info("inflating image-stage checkpoint %s to a video model", init)
            vae = inflate_2d_to_3d(vae)
        return vae
    torch.manual_seed(cfg.seed)
    return WanVAE(cfg.model)


def build_models(cfg: VAETrainConfig, device: torch.device, resume: Path | None,
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None) -> _Models:
    """VAE, perceptual trunk, discriminator and optimizers; each module seeded on its own, so a resumed run
    builds the same ones as a fresh run."""
    vae = _initial_vae(cfg, resume).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed + 1)
    perceptual = (PerceptualLoss(cfg.perceptual_weights and os.path.expanduser(cfg.perceptual_weights),
                                 cfg.perceptual_network).to(device) if cfg.perceptual_weight > 0 else None)
    models = _Models(vae, wrap(vae) if wrap is not None else vae, optimizer, perceptual)
    if cfg.phase == "gan":
        torch.manual_seed(cfg.seed + 2)
        disc = PatchDiscriminator3d(cfg.disc_channels, cfg.disc_layers, cfg.disc_spectral_norm).to(device)
        models.discriminator, models.disc_model = disc, wrap(disc) if wrap is not None else disc
        models.disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=(0.5, 0.9))
        ckpt.init_optimizer_state(models.disc_optimizer)  # the same state whether or not a save comes first
    return models


def _lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup) if warmup else base


def _step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Posterior noise of a step: a function of (seed, step, rank), so resume needs no generator state."""
    state = int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


@torch.no_grad()
def evaluate_psnr(vae: WanVAE, videos: list[torch.Tensor], device: torch.device) -> float:
    """Mean reconstruction PSNR (posterior mean, dB) over ``videos`` (each (3, T, H, W))."""
    was_training = vae.training
    vae.eval()
    scores = [psnr(vae(v[None].to(device), chunked=False)[0], v[None].to(device)).item() for v in videos]
    vae.train(was_training)
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------- a step
def train_step(cfg: VAETrainConfig, m: _Models, video: torch.Tensor, step: int, generator: torch.Generator
               ) -> dict[str, float]:
    """Generator update (reconstruction + KL (+ adversarial)), then the discriminator's; returns the losses."""
    lr = _lr_at(step, cfg.lr, cfg.warmup_steps)
    for group in m.optimizer.param_groups:
        group["lr"] = lr
    recon, posterior = m.model(video, sample_posterior=cfg.sample_posterior, generator=generator, chunked=False)
    rec_l1, kl = l1_loss(recon, video), kl_loss(posterior)
    perc = m.perceptual(recon, video) if m.perceptual is not None else recon.new_zeros(())
    rec_loss = cfg.l1_weight * rec_l1 + cfg.perceptual_weight * perc
    loss = rec_loss + cfg.kl_weight * kl
    gan_on = m.discriminator is not None and step >= cfg.gan_start_step
    g_loss = gan_w = d_loss = recon.new_zeros(())
    if gan_on:
        m.discriminator.requires_grad_(False)  # the generator step must not touch D's grads
        g_loss = hinge_g_loss(m.disc_model(recon))
        last_layer = m.vae.decoder.head[-1].weight  # where the adaptive weight compares gradients
        gan_w = cfg.gan_weight * (adaptive_gan_weight(rec_loss, g_loss, last_layer) if cfg.gan_adaptive_weight
                                  else 1.0)
        loss = loss + gan_w * g_loss
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(m.vae.parameters(), cfg.grad_clip)
    m.optimizer.step()
    if gan_on:
        m.discriminator.requires_grad_(True)
        d_loss = hinge_d_loss(m.disc_model(video), m.disc_model(recon.detach()))
        m.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        m.disc_optimizer.step()
    return {"loss": loss.item(), "l1": rec_l1.item(), "kl": kl.item(), "perceptual": perc.item(),
            "g_loss": g_loss.item(), "gan_weight": float(gan_w), "d_loss": d_loss.item(),
            "psnr": psnr(recon.detach(), video).mean().item(), "lr": lr}


def _global_mean(values: dict[str, float], world: int) -> dict[str, float]:
    """Each value averaged over the ranks (every rank calls this)."""
    if world == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / world).tolist()))


# ---------------------------------------------------------------------------------------------- the loop
def train_loop(cfg: VAETrainConfig, records: list[ClipRecord], device: torch.device, *, rank: int = 0,
               world: int = 1, on_log: Callable[[int, dict[str, Any]], None] | None = None,
               wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> TrainResult:
    """The training loop of one worker (or the one process) over the kept clips ``records``."""
    if cfg.cpu_threads is not None:  # on a shared CPU, OpenMP spinning on more threads than free cores is ~100x slower
        torch.set_num_threads(cfg.cpu_threads)
    found = ckpt.latest_checkpoint(cfg.checkpoint_dir) if cfg.resume else None
    m = build_models(cfg, device, found, wrap)
    step = _resume(found, m)
    train_records, held = split_records(records, cfg.eval_clips, cfg.seed)
    data = VAEData(train_records, num_frames=cfg.num_frames, size=cfg.hw, batch_size=cfg.batch_size,
                   seed=cfg.seed, rank=rank, world=world, cache_mb=cfg.frame_cache_mb)
    eval_videos = _eval_videos(cfg, held) if rank == 0 else []
    stats_videos = _stats_videos(cfg, data) if rank == 0 and cfg.checkpoint_dir else []
    result = TrainResult(vae=m.vae, discriminator=m.discriminator, start_step=step)
    if eval_videos and step == 0:
        result.evals.append({"step": 0, "psnr": evaluate_psnr(m.vae, eval_videos, device)})
    writer = MetricsWriter(cfg.metrics_dir, total=cfg.steps, start=step, enabled=rank == 0)
    started, samples = time.perf_counter(), 0
    while step < cfg.steps:
        batch = data.batch(step)
        generator = _step_generator(cfg.seed, step, rank, device)
        values = _global_mean(train_step(cfg, m, batch.video.to(device), step, generator), world)
        step += 1
        samples += len(batch.clip_ids)
        result.history.append({"step": step, **values})
        writer.progress(values["loss"])
        if rank == 0 and cfg.record_samples and cfg.metrics_dir:
            _record_samples(cfg.metrics_dir, batch, step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            seconds, started = time.perf_counter() - started, time.perf_counter()
            logged = {**values, "epoch": batch.epoch, "samples_per_s": samples / max(seconds, 1e-9),
                      "peak_memory_gb": peak_memory_bytes(device) / 2**30}
            samples = 0
            writer.log(step, logged)
            if on_log is not None:
                on_log(step, logged)
        if eval_videos and cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.steps:
            result.evals.append({"step": step, "psnr": evaluate_psnr(m.vae, eval_videos, device)})
        if cfg.checkpoint_dir and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps):
            result.checkpoint = _save(cfg, m, step, dict(data.skipped), rank, stats_videos, device)
    writer.close()
    if eval_videos:
        result.evals.append({"step": cfg.steps, "psnr": evaluate_psnr(m.vae, eval_videos, device)})
        log.info("step %d: held-out psnr %.2f dB", cfg.steps, result.evals[-1]["psnr"])
    result.skipped = dict(data.skipped)
    return result


def _resume(found: Path | None, m: _Models) -> int:
    if found is None:
        return 0
    meta = ckpt.load_checkpoint(found, m.vae, m.optimizer, None, m.extra)
    log.info("resumed from %s at step %d", found, meta["step"])
    return int(meta["step"])


def _eval_videos(cfg: VAETrainConfig, held: list[ClipRecord]) -> list[torch.Tensor]:
    if not held:
        return []
    dataset = ClipDataset(held, num_frames=cfg.num_frames, size=cfg.hw, seed=cfg.seed + 1, shuffle=False,
                          num_samples=len(held))
    return [s.video for s in dataset]


def _stats_videos(cfg: VAETrainConfig, data: VAEData) -> list[torch.Tensor]:
    """The clips the latent statistics are measured on (none when the model keeps its own)."""
    if cfg.latent_stats == "keep" or (cfg.latent_stats == "auto" and cfg.init_checkpoint):
        return []
    return data.first_windows(cfg.latent_stats_clips)


def _save(cfg: VAETrainConfig, m: _Models, step: int, skipped: dict[str, int], rank: int,
          stats_videos: list[torch.Tensor], device: torch.device) -> Path:
    """A DCP step folder with ``load_vae``'s files beside the shards (latent statistics measured first, rank 0);
    ``latest`` names it."""
    directory = Path(cfg.checkpoint_dir).expanduser()  # type: ignore[arg-type]
    meta = {"phase": cfg.phase, "skipped": skipped, "config": cfg.model_dump(mode="json")}

    def write_files(folder: Path) -> None:
        save_vae(set_latent_stats(m.vae, stats_videos, device) if stats_videos else m.vae, folder)

    saved = ckpt.save_checkpoint(directory, step, m.vae, m.optimizer, None, meta, keep=cfg.keep_checkpoints,
                                 extra=m.extra, write_files=write_files)
    if rank == 0:
        pointer = directory / ".latest.tmp"
        pointer.write_text(saved.name + "\n")
        os.replace(pointer, directory / "latest")
    return saved


def _record_samples(metrics_dir: str, batch: ClipBatch, step: int) -> None:
    with open(Path(metrics_dir) / "samples.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "epoch": batch.epoch, "clip_ids": batch.clip_ids}) + "\n")


# ------------------------------------------------------------------------------------------- entry points
def train_vae(cfg: VAETrainConfig, on_log: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """One process, no Ray: the kept clips of ``cfg.lake``, then the loop on ``cfg.device``."""
    records = read_clip_records(cfg.lake, allow_uncurated=cfg.allow_uncurated)
    return train_loop(cfg, records, _device(cfg.device), on_log=on_log)


def train_vae_ray(cfg: VAETrainConfig, num_workers: int = 1, use_gpu: bool = False,
                  storage_path: str | None = None) -> Any:
    """The same loop on ``num_workers`` Ray Train workers (``vae_ray.run_trainer``); returns a ``RayRunResult``
    (``metrics`` last reported, ``checkpoint`` the newest complete step folder, ``error``)."""
    from wanmodel.train.vae_ray import run_trainer

    return run_trainer(cfg, num_workers=num_workers, use_gpu=use_gpu, storage_path=storage_path)
