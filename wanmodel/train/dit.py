"""DiT pretraining from the lake (report sections 4.2.2 and 4.3): flow matching on cached latents and text.

    cfg = load_dit_train_config("jobs/configs/train_tiny.yaml")
    train_dit(cfg)       # one process, no Ray (tests, debugging)
    train_dit_ray(cfg)   # Ray Train TorchTrainer, cfg.num_workers workers, FSDP2 and context parallelism inside

The loop (``train_loop``) is the same for both: the data position is the step (``dit_data``), checkpoints are
sharded DCP folders written every ``checkpoint_every`` steps and the newest complete one is resumed from
(``checkpointing``), metrics go to JSON lines and TensorBoard (``metrics``), with the held-out loss of a
``validation`` lake as ``val_loss`` (``dit_validation``). bf16 autocast on GPU with float32
master weights (FSDP2 gathers the blocks in bf16, the model keeps its float32 islands), float32 on CPU.
A step whose loss or gradient norm is not finite changes nothing and is counted in ``skipped``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist

from curation.lake.tables import Lake
from wanmodel.diffusion.flow_matching import LogitNormal, flow_matching_loss
from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.parallel import ParallelDims, ParallelMesh
from wanmodel.parallel.parallelize import (
    ParallelPlan,
    activation_offload,
    parallelize_dit,
    set_micro_batch,
)
from wanmodel.train import checkpointing as ckpt
from wanmodel.train.dit_config import DiTTrainConfig
from wanmodel.train.dit_data import (
    LatentIndex,
    StageData,
    StepInputs,
    TrainData,
    check_text_keys,
    stage_buckets,
)
from wanmodel.train.dit_validation import ValidationSet, held_out_index
from wanmodel.train.metrics import (
    MetricsWriter,
    dit_train_flops,
    peak_flops_per_device,
    peak_memory_bytes,
)

__all__ = ["DiTTrainResult", "prepare", "train_dit", "train_dit_ray", "train_loop"]

log = logging.getLogger(__name__)


@dataclass
class DiTTrainResult:
    losses: dict[int, float] = field(default_factory=dict)  # step -> global-batch loss (NaN if skipped)
    val_losses: dict[int, float] = field(default_factory=dict)  # step -> held-out loss (config ``validation``)
    skipped: int = 0
    start_step: int = 0
    checkpoint: str | None = None
    exported: list[str] = field(default_factory=list)


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    mesh: ParallelMesh | None

    @property
    def data_shard(self) -> tuple[int, int]:
        return (self.mesh.rank("data"), self.mesh.dims.data_parallel) if self.mesh else (0, 1)


# ------------------------------------------------------------------------------------------------ set-up
def _runtime(cfg: DiTTrainConfig, device: torch.device) -> Runtime:
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    mesh = None
    if world > 1:
        p = cfg.parallel
        dims = ParallelDims(world, dp_replicate=p.dp_replicate, fsdp=p.fsdp, ulysses=p.ulysses, ring=p.ring)
        mesh = ParallelMesh(dims, device_type=device.type)
    return Runtime(device, rank, world, mesh)


def _bf16(cfg: DiTTrainConfig, device: torch.device) -> bool:
    return cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and device.type == "cuda")


def _autocast(cfg: DiTTrainConfig, rt: Runtime) -> torch.autocast:
    return torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=_bf16(cfg, rt.device))


def build_model(cfg: DiTTrainConfig, rt: Runtime) -> WanDiT:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = WanDiT(DiTConfig.named(cfg.model, **cfg.model_overrides), attention_backend=cfg.attention_backend)
    model.to(rt.device).train()
    plan = ParallelPlan(activation_checkpointing=cfg.parallel.activation_checkpointing,
                        offload_activations=cfg.parallel.offload_activations,
                        reshard_after_forward=cfg.parallel.reshard_after_forward, compile=cfg.parallel.compile,
                        param_dtype=torch.bfloat16 if _bf16(cfg, rt.device) else torch.float32)
    return parallelize_dit(model, rt.mesh, plan)


def build_optimizer(cfg: DiTTrainConfig, model: WanDiT) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
    return opt, sched


def lr_factor(cfg: DiTTrainConfig, step: int) -> float:
    """The lr of step ``step`` (0-based) as a fraction of ``optim.lr``: linear warmup, then constant or cosine."""
    o = cfg.optim
    warmup = max(o.warmup_steps, 1)
    if step < warmup or o.schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step + 1 - warmup) / max(cfg.steps - warmup, 1))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _ema_init(model: WanDiT, decay: float | None) -> dict[str, torch.Tensor] | None:
    return None if decay is None else {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ema_update(ema: dict[str, torch.Tensor] | None, model: WanDiT, decay: float) -> None:
    if ema is not None:
        current = model.state_dict()
        torch._foreach_lerp_([ema[k] for k in ema], [current[k].detach() for k in ema], 1.0 - decay)


# -------------------------------------------------------------------------------------------------- a step
def _global_mean(value: torch.Tensor, rt: Runtime) -> float:
    """The global-batch loss: mean over ranks (context-parallel ranks of one shard hold the same value)."""
    value = value.detach().float().reshape(1).clone()
    if rt.world > 1:
        dist.all_reduce(value)
        value /= rt.world
    return float(value)


def micro_batches(inputs: StepInputs, count: int) -> list[StepInputs]:
    """The shard's batch as ``count`` equal micro-batches (gradient accumulation), in row order."""
    if count == 1:
        return [inputs]
    size = inputs.latents.shape[0] // count
    return [replace(inputs, latents=inputs.latents[i:i + size], context=inputs.context[i:i + size],
                    noise=inputs.noise[i:i + size], sigma=inputs.sigma[i:i + size],
                    latent_ids=inputs.latent_ids[i:i + size]) for i in range(0, size * count, size)]


def train_step(cfg: DiTTrainConfig, model: WanDiT, opt: torch.optim.Optimizer, inputs: StepInputs,
               rt: Runtime) -> tuple[float, float, bool]:
    """Forward and backward per micro-batch, clip, step; returns (loss, grad norm, whether the step was applied)."""
    autocast = _autocast(cfg, rt)
    parts = micro_batches(inputs, cfg.grad_accum_steps)
    loss = torch.zeros((), device=rt.device)
    for i, part in enumerate(parts):
        set_micro_batch(model, last=i == len(parts) - 1, reshard_after_forward=cfg.parallel.reshard_after_forward)
        with autocast, activation_offload(cfg.parallel.offload_activations):
            part_loss = flow_matching_loss(model, part.latents.to(rt.device), noise=part.noise.to(rt.device),
                                           sigma=part.sigma.to(rt.device), context=part.context.to(rt.device))
        (part_loss / len(parts)).backward()
        loss += part_loss.detach().float() / len(parts)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
    norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    global_loss = _global_mean(loss, rt)
    ok = math.isfinite(global_loss) and math.isfinite(norm)
    if ok:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return global_loss, norm, ok


# -------------------------------------------------------------------------------------------- validation
def validation_index(cfg: DiTTrainConfig, config: DiTConfig, stage: StageData) -> LatentIndex | None:
    """The held-out latents of the run's buckets (config ``validation``), checked like the training ones: each
    bucket's shape, fits the DiT, every caption embedded (keys only)."""
    v = cfg.validation
    if v is None:
        return None
    lake = Lake(v.lake, v.storage_options)
    index = held_out_index(lake, stage.buckets)
    index.check(in_dim=config.in_dim, patch=config.patch_size, global_batch=1, expected=stage.shapes)
    check_text_keys(lake, index)
    return index


def validation_set(cfg: DiTTrainConfig, config: DiTConfig, index: LatentIndex | None) -> ValidationSet | None:
    v = cfg.validation
    if v is None or index is None:
        return None
    return ValidationSet(Lake(v.lake, v.storage_options), index, text_dim=config.text_dim, text_len=config.text_len,
                         sigmas=v.sigmas, seed=v.seed, batch_size=v.batch_size, normalize=cfg.normalize_latents)


def _validate(cfg: DiTTrainConfig, val: ValidationSet | None, model: WanDiT, rt: Runtime, step: int,
              writer: MetricsWriter, result: DiTTrainResult) -> None:
    """Log the held-out loss at step 0, every ``validation.every`` steps and at the last step (eager, also when the
    blocks are compiled: the training graphs stay those of a run without validation)."""
    every = cfg.validation.every if cfg.validation else 0
    if val is None or not (step == 0 or step % every == 0 or step == cfg.steps):
        return
    stance = torch.compiler.set_stance("force_eager") if cfg.parallel.compile else contextlib.nullcontext()
    with stance:
        value = val.loss(model, device=rt.device, autocast=_autocast(cfg, rt))
    if rt.world > 1:
        total = torch.tensor([value], dtype=torch.float64, device=rt.device)
        dist.all_reduce(total)
        value = float(total) / rt.world
    result.val_losses[step] = value
    writer.log(step, {"val_loss": value})


# -------------------------------------------------------------------------------------------------- the loop
def train_loop(cfg: DiTTrainConfig, index: LatentIndex, device: torch.device, on_log: Any = None,
               val_index: LatentIndex | None = None) -> DiTTrainResult:
    """The training loop of one worker (or the one process); ``val_index``: the driver's ``validation_index``
    (read here when not given)."""
    rt = _runtime(cfg, device)
    model = build_model(cfg, rt)
    lake = Lake(cfg.lake, cfg.storage_options)
    shard, shards = rt.data_shard
    stage = stage_buckets(cfg, model.config.in_dim)
    data = TrainData(lake, index, global_batch=cfg.global_batch_size, seed=cfg.seed, shard=shard, shards=shards,
                     text_dim=model.config.text_dim, text_len=model.config.text_len, normalize=cfg.normalize_latents,
                     mix=stage.mix, media=stage.media, caption_dropout=cfg.caption_dropout,
                     empty_text_key=cfg.empty_text_key, latent_sample=cfg.latent_sample)
    opt, sched = build_optimizer(cfg, model)
    ema = _ema_init(model, cfg.optim.ema_decay)
    result, meta = DiTTrainResult(), _resume(cfg, model, opt, sched, ema)
    step, result.skipped = meta.get("step", 0), meta.get("skipped", 0)
    result.start_step = step
    timesteps = LogitNormal(cfg.timesteps.mean, cfg.timesteps.std, cfg.timesteps.shift)
    writer = MetricsWriter(cfg.metrics_dir, total=cfg.steps, start=step, enabled=rt.rank == 0)
    meter = _Meter(cfg, model.config, rt, index)
    if val_index is None:
        val_index = validation_index(cfg, model.config, stage)
    val = validation_set(cfg, model.config, val_index)
    _validate(cfg, val, model, rt, step, writer, result)  # step 0, or a resumed validation step again (same value)
    while step < cfg.steps:
        inputs = data.inputs(step, timesteps)
        started = time.perf_counter()
        loss, norm, ok = train_step(cfg, model, opt, inputs, rt)
        with warnings.catch_warnings():  # a skipped step did not call opt.step(): the schedule follows the step
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            sched.step()
        if ok and ema is not None:
            _ema_update(ema, model, cfg.optim.ema_decay)  # type: ignore[arg-type]
        result.skipped += not ok
        step += 1
        result.losses[step] = loss
        meter.add(inputs, time.perf_counter() - started)
        writer.progress(loss)
        if rt.rank == 0 and cfg.record_samples and cfg.metrics_dir:
            _record_samples(cfg, data, inputs, step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {"loss": loss, "grad_norm": norm, "lr": sched.get_last_lr()[0], "skipped": result.skipped,
                      "epoch": inputs.batch.epoch, **meter.flush()}
            writer.log(step, values)
            if on_log is not None:
                on_log(step, values)
        if cfg.checkpoint_dir and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            saved = ckpt.save_checkpoint(cfg.checkpoint_dir, step, model, opt, ema, {
                "skipped": result.skipped, "scheduler": sched.state_dict(), "config_hash": cfg.hash,
                "epoch": inputs.batch.epoch, "model": cfg.model}, keep=cfg.keep_checkpoints)
            result.checkpoint = str(saved)
        _validate(cfg, val, model, rt, step, writer, result)  # after the checkpoint: a failure here loses no steps
    writer.close()
    return result


def _resume(cfg: DiTTrainConfig, model: WanDiT, opt: torch.optim.Optimizer, sched: Any,
            ema: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Continue from the newest complete checkpoint of ``checkpoint_dir``; else take ``init_from``'s weights."""
    found = ckpt.latest_checkpoint(cfg.checkpoint_dir)
    if found is not None:
        meta = ckpt.load_checkpoint(found, model, opt, ema)
        sched.load_state_dict(meta["scheduler"])
        log.info("resumed from %s (step %d)", found, meta["step"])
        return meta
    if cfg.init_from is not None:
        start = ckpt.load_weights_only(cfg.init_from, model)
        if ema is not None:
            ema.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        log.info("weights from %s; new optimizer, schedule and data position", start)
    return {}


def _record_samples(cfg: DiTTrainConfig, data: TrainData, inputs: StepInputs, step: int) -> None:
    import json
    from pathlib import Path

    ids = [data.index.rows[i].latent_id for i in inputs.batch.rows]
    with open(Path(cfg.metrics_dir) / "samples.jsonl", "a") as f:  # type: ignore[arg-type]
        f.write(json.dumps({"step": step, "stream": inputs.batch.stream, "epoch": inputs.batch.epoch,
                            "bucket": inputs.batch.bucket, "latent_ids": ids}) + "\n")


class _Meter:
    """Throughput over the steps since the last log: samples/s, tokens/s, step time, MFU, peak memory."""

    def __init__(self, cfg: DiTTrainConfig, config: DiTConfig, rt: Runtime, index: LatentIndex) -> None:
        self.cfg, self.config, self.rt = cfg, config, rt
        self.peak = peak_flops_per_device(rt.device, cfg.peak_tflops) * rt.world
        self.seconds = self.samples = self.tokens = self.flops = self.steps = 0.0

    def add(self, inputs: StepInputs, seconds: float) -> None:
        shape = tuple(inputs.latents.shape[1:])
        pt, ph, pw = self.config.patch_size
        n = self.cfg.global_batch_size
        self.seconds += seconds
        self.steps += 1
        self.samples += n
        self.tokens += n * (shape[1] // pt) * (shape[2] // ph) * (shape[3] // pw)
        self.flops += n * dit_train_flops(self.config, shape)  # type: ignore[arg-type]

    def flush(self) -> dict[str, float]:
        s = max(self.seconds, 1e-9)
        out = {"samples_per_s": self.samples / s, "tokens_per_s": self.tokens / s,
               "step_time_s": s / max(self.steps, 1), "mfu": self.flops / s / self.peak,
               "peak_memory_gb": peak_memory_bytes(self.rt.device) / 2**30}
        self.seconds = self.samples = self.tokens = self.flops = self.steps = 0.0
        return out


# ------------------------------------------------------------------------------------------- entry points
def prepare(cfg: DiTTrainConfig) -> tuple[LatentIndex, LatentIndex | None]:
    """Every check that can run before a step: parallel sizes, buckets with data, latent shapes, text keys, the
    same for the held-out latents; returns the training index and the held-out one (None without validation)."""
    config = DiTConfig.named(cfg.model, **cfg.model_overrides)
    dims = ParallelDims(cfg.num_workers, dp_replicate=cfg.parallel.dp_replicate, fsdp=cfg.parallel.fsdp,
                        ulysses=cfg.parallel.ulysses, ring=cfg.parallel.ring)
    dims.check_model(config.num_heads)
    stage = stage_buckets(cfg, config.in_dim)
    lake = Lake(cfg.lake, cfg.storage_options)
    index = LatentIndex.from_lake(lake, stage.buckets)
    index.check(in_dim=config.in_dim, patch=config.patch_size, global_batch=cfg.global_batch_size,
                expected=stage.shapes)
    check_text_keys(lake, index)
    val_index = validation_index(cfg, config, stage)
    if cfg.global_batch_size % dims.data_parallel:
        raise ValueError(f"global_batch_size {cfg.global_batch_size} is not divisible by the "
                         f"{dims.data_parallel} data shards of {dims.describe()}")
    per_shard = cfg.global_batch_size // dims.data_parallel
    if per_shard % cfg.grad_accum_steps:
        raise ValueError(f"each of the {dims.data_parallel} data shards takes {per_shard} "
                         f"samples a step: not divisible into grad_accum_steps {cfg.grad_accum_steps} micro-batches")
    return index, val_index


def train_dit(cfg: DiTTrainConfig, on_log: Any = None) -> DiTTrainResult:
    """One process, no Ray: checks, the loop, then the export of the final checkpoint."""
    index, val_index = prepare(cfg)
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    result = train_loop(cfg, index, device, on_log, val_index)
    result.exported = _export(cfg)
    return result


def _export(cfg: DiTTrainConfig) -> list[str]:
    if cfg.export_dir is None or cfg.checkpoint_dir is None:
        return []
    found = ckpt.latest_checkpoint(cfg.checkpoint_dir)
    if found is None:
        return []
    return [str(p) for p in ckpt.export_checkpoint(found, cfg.export_dir, list(cfg.export_layouts),
                                                   model_name=cfg.model, model_overrides=cfg.model_overrides,
                                                   ema=cfg.export_ema)]


def train_dit_ray(cfg: DiTTrainConfig) -> DiTTrainResult:
    """``cfg.num_workers`` Ray Train workers; the driver checks the data first and exports at the end."""
    from wanmodel.train.dit_ray import run_trainer

    index, val_index = prepare(cfg)
    losses, val_losses = run_trainer(cfg, len(index.rows), val_index)
    result = DiTTrainResult(losses=losses, val_losses=val_losses,
                            checkpoint=str(ckpt.latest_checkpoint(cfg.checkpoint_dir) or "") or None)
    result.exported = _export(cfg)
    return result
