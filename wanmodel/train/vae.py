"""Wan-VAE training (report section 4.1.2): image stage -> 2D-to-3D inflation -> video stage -> GAN fine-tune.

    cfg = VAETrainConfig(lake="out/lake", phase="image", steps=2000, size=128, checkpoint_dir="ckpt/image")
    train_vae(cfg)                                                     # plain loop, no Ray
    train_vae_ray(cfg.model_copy(update=dict(phase="video", init_checkpoint="ckpt/image/latest", ...)))

Phases (``phase``):
- ``image``: single frames (T = 1). Our causal convolutions see a lone frame with zero padding on the past side,
  so the 3D model run on T = 1 *is* a 2D image VAE of the same structure: only the last (current) temporal tap
  of each kernel gets gradient, and the temporal resamplers pass the frame through.
- ``video``: 1 + 4k frames. Started from an image-stage checkpoint, the model is inflated first
  (``inflate_2d_to_3d``): past temporal taps zeroed, temporal resamplers set to subsample/repeat, so the video
  model starts as the image model applied frame by frame.
- ``gan``: video training plus a hinge GAN loss from a 3D PatchGAN discriminator, from ``gan_start_step`` on.

Checkpoints (``checkpoint_dir/step_000123/``): ``model.safetensors`` + ``config.json`` (``load_vae`` reads the
folder), ``discriminator.safetensors``, ``train_state.pt`` (optimizer states, RNG states, data position) and
``meta.json``; ``checkpoint_dir/latest`` names the newest complete one. Resume is exact: the data stream is a
function of (seed, sample index) and every RNG state is restored.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file

from wanmodel.models.vae import CausalConv3d, Resample, VAEConfig, WanVAE
from wanmodel.models.vae_adapters import load_vae, save_vae
from wanmodel.train.vae_gan import PatchDiscriminator3d, adaptive_gan_weight, hinge_d_loss, hinge_g_loss
from wanmodel.train.vae_losses import PerceptualLoss, kl_loss, l1_loss, psnr

__all__ = ["TrainResult", "VAETrainConfig", "inflate_2d_to_3d", "load_train_config", "train_vae", "train_vae_ray"]

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
    batch_size: int = Field(2, ge=1)
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
    checkpoint_dir: str | None = None
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end
    resume: bool = True  # continue from checkpoint_dir/latest when present
    log_every: int = Field(10, ge=1)
    eval_clips: int = Field(0, ge=0)  # held out of training; PSNR on them before, every eval_every, and at the end
    eval_every: int = Field(0, ge=0)
    seed: int = 0
    device: str = "auto"  # 'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1'...
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


# ------------------------------------------------------------------------------------------ checkpoints
def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "posterior": generator.get_state(),
             "python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["posterior"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, *, step: int, next_index: int, cfg: VAETrainConfig, vae: WanVAE,
                    optimizer: torch.optim.Optimizer, discriminator: torch.nn.Module | None,
                    disc_optimizer: torch.optim.Optimizer | None, generator: torch.Generator) -> Path:
    """Write ``directory/step_{step:06d}`` (via a temp folder, then rename) and point ``latest`` at it."""
    final = directory / f"step_{step:06d}"
    tmp = directory / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_vae(vae, tmp)  # model.safetensors + config.json: load_vae reads the checkpoint folder directly
    if discriminator is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()},
                  tmp / "discriminator.safetensors")
    torch.save({"optimizer": optimizer.state_dict(),
                "disc_optimizer": disc_optimizer.state_dict() if disc_optimizer is not None else None,
                "rng": _rng_state(generator)}, tmp / "train_state.pt")
    meta = {"step": step, "next_index": next_index, "phase": cfg.phase, "config": cfg.model_dump(mode="json")}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = directory / ".latest.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, directory / "latest")  # atomic: `latest` always names a complete checkpoint
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a folder, a ``latest`` pointer file, or a run dir holding ``latest``."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "latest":
        return path.parent / path.read_text().strip()
    if path.is_dir() and (path / "latest").is_file():
        return path / (path / "latest").read_text().strip()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _read_meta(checkpoint: Path) -> dict[str, Any]:
    meta_file = checkpoint / "meta.json"
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    """What a run leaves: the trained modules, per-step logs, held-out evals and the last checkpoint."""

    vae: WanVAE
    discriminator: torch.nn.Module | None
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "psnr"} on held-out clips
    checkpoint: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / warmup) if warmup else base


def _batches(samples: Iterator[Any], batch_size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(video batch, next sample index) from a ``ClipDataset`` iterator."""
    while True:
        chunk = [next(samples) for _ in range(batch_size)]
        yield torch.stack([s.video for s in chunk]), chunk[-1].index + 1


@torch.no_grad()
def evaluate_psnr(vae: WanVAE, videos: list[torch.Tensor], device: torch.device) -> float:
    """Mean reconstruction PSNR (posterior mean, dB) over ``videos`` (each (3, T, H, W))."""
    was_training = vae.training
    vae.eval()
    scores = [psnr(vae(v[None].to(device), chunked=False)[0], v[None].to(device)).item() for v in videos]
    vae.train(was_training)
    return float(np.mean(scores))


def train_vae(cfg: VAETrainConfig, *, batches: Iterable[torch.Tensor] | None = None,
              wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
              on_step: Callable[[dict[str, float], Path | None], None] | None = None,
              is_main: bool = True, resume_from: str | Path | None = None) -> TrainResult:
    """Train the Wan-VAE as ``cfg`` says; the same loop runs alone or inside a Ray Train worker.

    ``batches``: video batches (B, 3, T, H, W) to use instead of reading ``cfg.lake`` (the Ray worker passes its
    dataset shard; exact resume then depends on that source). ``wrap_model``: e.g. DDP. ``on_step(metrics,
    checkpoint)``: called after every step (Ray reports through it). ``is_main``: whether this process writes
    checkpoints. ``resume_from``: a checkpoint to continue from (default ``checkpoint_dir/latest`` if ``resume``).
    """
    device = _device(cfg.device)
    if cfg.cpu_threads is not None:
        # a process-wide setting: on a shared CPU, OpenMP spinning on more threads than free cores is ~100x slower
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # posterior sampling

    # ---- model: fresh, from an init checkpoint (inflated when it is an image-stage one), or resumed
    ckpt_dir = Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir else None
    if resume_from is None and cfg.resume and ckpt_dir is not None and (ckpt_dir / "latest").is_file():
        resume_from = ckpt_dir / "latest"
    resume = resolve_checkpoint(resume_from) if resume_from is not None else None
    if resume is not None:
        vae = load_vae(resume)
    elif cfg.init_checkpoint:
        init = resolve_checkpoint(cfg.init_checkpoint)
        vae = load_vae(init)
        if cfg.phase != "image" and _read_meta(init).get("phase") == "image":
            log.info("inflating image-stage checkpoint %s to a video model", init)
            vae = inflate_2d_to_3d(vae)
    else:
        vae = WanVAE(cfg.model)
    vae = vae.to(device).train()
    model = wrap_model(vae) if wrap_model is not None else vae
    perceptual = (PerceptualLoss(cfg.perceptual_weights and os.path.expanduser(cfg.perceptual_weights),
                                 cfg.perceptual_network).to(device) if cfg.perceptual_weight > 0 else None)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    discriminator = disc_optimizer = disc_model = None
    if cfg.phase == "gan":
        discriminator = PatchDiscriminator3d(cfg.disc_channels, cfg.disc_layers, cfg.disc_spectral_norm).to(device)
        disc_model = wrap_model(discriminator) if wrap_model is not None else discriminator
        disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=cfg.disc_lr or cfg.lr, betas=(0.5, 0.9))
    last_layer = vae.decoder.head[-1].weight  # where the adaptive GAN weight compares gradients

    start_step, next_index = 0, 0
    if resume is not None:
        meta = _read_meta(resume)
        start_step, next_index = int(meta["step"]), int(meta["next_index"])
        state = torch.load(resume / "train_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        if discriminator is not None and (resume / "discriminator.safetensors").is_file():
            discriminator.load_state_dict(load_file(str(resume / "discriminator.safetensors"), device=str(device)))
            if state["disc_optimizer"] is not None:
                disc_optimizer.load_state_dict(state["disc_optimizer"])
        _set_rng_state(state["rng"], generator)
        log.info("resumed from %s at step %d", resume, start_step)

    # ---- data: a (seed, index) stream of kept clips, held-out clips for PSNR
    eval_videos: list[torch.Tensor] = []
    dataset = None
    if batches is None or cfg.eval_clips:
        from wanmodel.data import ClipDataset, read_clip_records, split_records

        records = read_clip_records(cfg.lake, allow_uncurated=cfg.allow_uncurated)
        train_records, held = split_records(records, cfg.eval_clips, cfg.seed)
        if held:
            eval_videos = [s.video for s in ClipDataset(held, num_frames=cfg.num_frames, size=cfg.hw,
                                                        seed=cfg.seed + 1, shuffle=False, num_samples=len(held))]
        if batches is None:
            dataset = ClipDataset(train_records, num_frames=cfg.num_frames, size=cfg.hw, seed=cfg.seed,
                                  start_index=next_index)
            batch_iter: Iterator[tuple[torch.Tensor, int]] = _batches(iter(dataset), cfg.batch_size)
    if batches is not None:
        batch_iter = ((b, -1) for b in batches)

    result = TrainResult(vae=vae, discriminator=discriminator)
    if eval_videos and start_step == 0:
        result.evals.append({"step": 0, "psnr": evaluate_psnr(vae, eval_videos, device)})
        log.info("step 0: held-out psnr %.2f dB on %d clips", result.evals[-1]["psnr"], len(eval_videos))

    # ---- the loop
    t_last, samples_since = time.perf_counter(), 0
    for step in range(start_step, cfg.steps):
        video, next_index = next(batch_iter)
        video = video.to(device, torch.float32, non_blocking=True)
        lr = _lr_at(step, cfg.lr, cfg.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

        recon, posterior = model(video, sample_posterior=cfg.sample_posterior, generator=generator, chunked=False)
        rec_l1 = l1_loss(recon, video)
        kl = kl_loss(posterior)
        perc = perceptual(recon, video) if perceptual is not None else recon.new_zeros(())
        rec_loss = cfg.l1_weight * rec_l1 + cfg.perceptual_weight * perc
        loss = rec_loss + cfg.kl_weight * kl
        gan_on = discriminator is not None and step >= cfg.gan_start_step
        g_loss = gan_w = recon.new_zeros(())
        if gan_on:
            discriminator.requires_grad_(False)  # the generator step must not touch D's grads
            g_loss = hinge_g_loss(disc_model(recon))
            gan_w = cfg.gan_weight * (adaptive_gan_weight(rec_loss, g_loss, last_layer)
                                      if cfg.gan_adaptive_weight else 1.0)
            loss = loss + gan_w * g_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        optimizer.step()

        d_loss = recon.new_zeros(())
        if gan_on:
            discriminator.requires_grad_(True)
            d_loss = hinge_d_loss(disc_model(video), disc_model(recon.detach()))
            disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_optimizer.step()

        samples_since += video.shape[0]
        metrics = {"step": step + 1, "loss": loss.item(), "l1": rec_l1.item(), "kl": kl.item(),
                   "perceptual": perc.item(), "g_loss": g_loss.item(), "gan_weight": float(gan_w),
                   "d_loss": d_loss.item(), "psnr": psnr(recon.detach(), video).mean().item(), "lr": lr}
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            now = time.perf_counter()
            metrics["samples_per_s"] = samples_since / max(now - t_last, 1e-9)
            t_last, samples_since = now, 0
            log.info("step %d | loss %.4f | l1 %.4f | kl %.1f | perc %.4f | g %.4f | d %.4f | psnr %.2f dB | "
                     "%.1f samples/s", step + 1, metrics["loss"], metrics["l1"], metrics["kl"],
                     metrics["perceptual"], metrics["g_loss"], metrics["d_loss"], metrics["psnr"],
                     metrics["samples_per_s"])
        if eval_videos and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 != cfg.steps:
            result.evals.append({"step": step + 1, "psnr": evaluate_psnr(vae, eval_videos, device)})
        saved = None
        due = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0
        if ckpt_dir is not None and is_main and (due or step + 1 == cfg.steps):
            saved = save_checkpoint(ckpt_dir, step=step + 1, next_index=next_index, cfg=cfg, vae=vae,
                                    optimizer=optimizer, discriminator=discriminator,
                                    disc_optimizer=disc_optimizer, generator=generator)
            result.checkpoint = saved
        result.history.append(metrics)
        if on_step is not None:
            on_step(metrics, saved)

    if eval_videos:
        result.evals.append({"step": cfg.steps, "psnr": evaluate_psnr(vae, eval_videos, device)})
        log.info("step %d: held-out psnr %.2f dB", cfg.steps, result.evals[-1]["psnr"])
    if dataset is not None:
        result.skipped = dict(dataset.skipped)
        if dataset.skipped:
            log.warning("skipped clips: %s", dict(dataset.skipped))
    return result


# ------------------------------------------------------------------------------------------- Ray Train
def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: the plain loop fed by this worker's dataset shard, reporting through ray.train."""
    import tempfile

    import ray.train
    import ray.train.torch

    cfg = VAETrainConfig(**loop_config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    shard = ray.train.get_dataset_shard("train")

    def shard_batches() -> Iterator[torch.Tensor]:
        while True:  # epochs over the shard until the loop has its steps
            empty = True
            for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True):
                empty = False
                yield batch["video"]
            if empty:
                raise RuntimeError("the training dataset shard gave no full batch (all clips skipped?)")

    def report(metrics: dict[str, float], saved: Path | None) -> None:
        due = metrics["step"] % cfg.log_every == 0 or metrics["step"] == cfg.steps or saved is not None
        if not due:
            return
        checkpoint = ray.train.Checkpoint.from_directory(str(saved)) if saved is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)  # every rank calls report: it is a barrier

    restored = ray.train.get_checkpoint()  # set when Ray restarts a failed run
    with tempfile.TemporaryDirectory() as scratch:
        resume_from = None
        if restored is not None:
            resume_from = Path(restored.to_directory(os.path.join(scratch, "restored")))
        if cfg.checkpoint_dir is None or rank != 0:
            # every reported checkpoint needs a folder; non-zero ranks write none
            cfg = cfg.model_copy(update={"checkpoint_dir": os.path.join(scratch, "ckpt")})
        wrap = ray.train.torch.prepare_model if world > 1 else None
        train_vae(cfg, batches=shard_batches(), wrap_model=wrap, on_step=report, is_main=rank == 0,
                  resume_from=resume_from)


def train_vae_ray(cfg: VAETrainConfig, num_workers: int = 1, use_gpu: bool = False,
                  storage_path: str | None = None) -> Any:
    """Run ``train_vae`` on ``num_workers`` Ray Train workers (``TorchTrainer``); returns the ``ray.train.Result``.

    Samples come from ``wanmodel.data.ray_clip_dataset`` over the lake's kept clips (held-out clips excluded),
    split across workers by Ray Data and read with ``ray.train.get_dataset_shard("train")``. Metrics are
    reported with ``ray.train.report`` every ``log_every`` steps; each checkpoint written is reported with them
    and persisted under ``storage_path`` (default ``<checkpoint_dir>/ray``, else Ray's default).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from wanmodel.data import ray_clip_dataset, read_clip_records, split_records

    records = read_clip_records(cfg.lake, allow_uncurated=cfg.allow_uncurated)  # fails fast on an empty lake
    train_records, _ = split_records(records, cfg.eval_clips, cfg.seed)
    from curation.ray_runtime import ensure_ray

    ensure_ray()  # the embedded Ray (or the cluster that runs this under Ray Jobs), never a stale recorded one
    per_epoch = max(len(train_records), cfg.batch_size * num_workers)
    dataset = ray_clip_dataset(train_records, num_frames=cfg.num_frames, size=cfg.hw, seed=cfg.seed,
                               num_samples=min(per_epoch * 4, cfg.steps * cfg.batch_size * num_workers) or per_epoch)
    if storage_path is None and cfg.checkpoint_dir is not None:
        storage_path = str(Path(cfg.checkpoint_dir).expanduser().resolve() / "ray")
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"wan_vae_{cfg.phase}", storage_path=storage_path),
        datasets={"train": dataset},
    )
    return trainer.fit()
