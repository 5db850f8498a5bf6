"""The DiT training config (``jobs/configs/train_tiny.yaml``): one strict pydantic model, read by
``curation.jobconfig.load_yaml_config`` so an unknown key or a bad value fails before Ray or torch start work.

Which latents a run reads: ``buckets`` (names in the ``latents`` table) or, with ``curriculum`` + ``stage``, the
buckets of that curriculum stage (``wanmodel.data.buckets``), whose latent shapes are then checked too. A stage
change is a config change: a new ``stage``, a new ``checkpoint_dir`` and ``init_from`` naming the previous
stage's checkpoint (weights only; the optimizer, schedule and data position start afresh).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from curation.jobconfig import ConfigError, Strict, config_hash, load_yaml_config

__all__ = ["DiTTrainConfig", "check_sigmas", "load_dit_train_config"]

Layout = Literal["ours", "official", "diffusers"]


class OptimSection(Strict):
    """AdamW with a linear warmup to ``lr``, then constant or a cosine decay to ``min_lr_ratio`` x ``lr`` at the
    run's last step; gradient clipping; optional EMA of the weights."""

    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine: the lr at the last step, as a fraction of lr
    grad_clip: float | None = Field(1.0, gt=0)  # None: no clipping (the norm is still measured)
    ema_decay: float | None = Field(None, gt=0, lt=1)


class TimestepSection(Strict):
    """Logit-normal sigma density and its shift (``wanmodel.diffusion.flow_matching.LogitNormal``)."""

    mean: float = 0.0
    std: float = Field(1.0, gt=0)
    shift: float = Field(1.0, gt=0)


class ParallelSection(Strict):
    """Sizes for ``wanmodel.parallel.ParallelDims``; they must multiply to ``num_workers``."""

    dp_replicate: int = Field(1, ge=1)
    fsdp: int | None = Field(None, ge=1)
    ulysses: int = Field(1, ge=1)
    ring: int = Field(1, ge=1)
    activation_checkpointing: bool = False
    offload_activations: bool = False
    # FSDP: free each block's gathered weights after its forward (ZeRO-3, least memory); False keeps them for the
    # backward (ZeRO-2-like: one all-gather per block and step fewer, the full weights resident)
    reshard_after_forward: bool = True
    compile: bool = False  # torch.compile each block (regional; compiled at the first step, per bucket shape)


def check_sigmas(sigmas: Any) -> None:
    """Validation sigmas: a non-empty list of noise levels strictly between 0 and 1."""
    if not sigmas or not all(0.0 < float(s) < 1.0 for s in sigmas):
        raise ValueError(f"validation sigmas must be a non-empty list of values in (0, 1); got {list(sigmas)}")


class ValidationSection(Strict):
    """The held-out flow-matching loss (``wanmodel.train.dit_validation``), logged as ``val_loss`` at step 0 of a
    fresh run, every ``every`` steps and at the last step: the encode job's latents of held-out clips in a lake of
    their own, at fixed ``sigmas`` with fixed noise (``seed``). Every rank runs the whole set; the loss is the raw
    weights' (not the EMA's)."""

    lake: str
    storage_options: dict[str, str] | None = None
    every: int = Field(500, gt=0)
    sigmas: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    seed: int = 1234
    batch_size: int = Field(16, gt=0)  # samples per forward (a held-out latent at one sigma); memory only

    @model_validator(mode="after")
    def _check(self) -> ValidationSection:
        check_sigmas(self.sigmas)
        return self


class DiTTrainConfig(Strict):
    lake: str  # reads `latents` (status ok) and `text_embeddings`
    storage_options: dict[str, str] | None = None
    curriculum: str | None = None  # YAML of wanmodel.data.buckets.Curriculum
    stage: str | None = None  # a stage of it
    buckets: list[str] | None = None  # or the bucket names directly
    model: str = "tiny"  # DiTConfig preset
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    attention_backend: str = "sdpa"
    normalize_latents: bool = True  # (z - mean) / std with each row's VAE statistics (latents_mean / latents_std)
    # what the DiT trains on: the posterior mean (the official WanVAE.encode returns it; the statistics a VAE
    # trainer measures are the means'), or a fresh posterior sample mean + exp(logvar / 2) * eps every step
    latent_sample: Literal["mean", "posterior"] = "mean"
    caption_dropout: float = Field(0.0, ge=0, lt=1)  # share of samples trained on the empty prompt (for CFG)
    empty_text_key: str | None = None  # text_embeddings key of the empty prompt; needed when caption_dropout > 0
    steps: int = Field(gt=0)
    global_batch_size: int = Field(gt=0)  # samples per optimizer step over all data shards
    # forward/backward passes per optimizer step on each data shard: its share of the global batch in this many
    # equal micro-batches, the gradients synchronised once (less activation memory, fewer collectives per sample)
    grad_accum_steps: int = Field(1, ge=1)
    seed: int = 0
    mixed_precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, float32 on CPU
    optim: OptimSection = Field(default_factory=OptimSection)
    timesteps: TimestepSection = Field(default_factory=TimestepSection)
    parallel: ParallelSection = Field(default_factory=ParallelSection)
    validation: ValidationSection | None = None  # held-out loss during training (metrics: val_loss)
    checkpoint_dir: str | None = None  # shared storage under Ray: every worker writes its shards there
    checkpoint_every: int = Field(100, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    init_from: str | None = None  # a checkpoint (step folder or checkpoint_dir) to take weights from
    metrics_dir: str | None = None  # metrics.jsonl and TensorBoard events (tb/)
    log_every: int = Field(10, gt=0)
    record_samples: bool = False  # samples.jsonl: the latent_ids of every step (resume tests)
    peak_tflops: float | None = Field(None, gt=0)  # per device, for MFU; None: 790 on CUDA, measured on CPU
    export_dir: str | None = None  # the final weights through save_dit, one folder per layout
    export_layouts: list[Layout] = Field(default_factory=lambda: ["ours"])
    export_ema: bool = False  # export the EMA weights instead of the raw ones
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    ray: bool = True  # False: one process, no Ray (the in-process entry point)
    ray_address: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DiTTrainConfig:
        if (self.curriculum is None) == (self.buckets is None):
            raise ValueError("give either 'buckets' or 'curriculum' + 'stage' (exactly one of the two)")
        if self.curriculum is not None and self.stage is None:
            raise ValueError("'curriculum' needs 'stage' (the stage to train)")
        if self.buckets is not None and not self.buckets:
            raise ValueError("'buckets' is empty")
        if self.caption_dropout > 0 and not self.empty_text_key:
            raise ValueError(f"caption_dropout {self.caption_dropout} needs 'empty_text_key' (the text_embeddings "
                             "key of the empty prompt's embedding)")
        return self

    @property
    def hash(self) -> str:
        return config_hash(self)


def load_dit_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DiTTrainConfig:
    """Read and validate a training YAML; ``ConfigError`` naming the bad keys otherwise."""
    cfg = load_yaml_config(path, DiTTrainConfig, overrides)
    if not cfg.ray and cfg.num_workers != 1:
        raise ConfigError(f"ray: false runs one process; num_workers is {cfg.num_workers}")
    return cfg
