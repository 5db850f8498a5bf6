"""Three-stage captioner training (report section 3.3.3), as a plain loop or on Ray Train.

    cfg = CaptionTrainConfig(stage=1, lake="out/lake", init="models/captioner", steps=2000,
                             checkpoint_dir="ckpt/stage1")
    train_captioner(cfg)                                                   # plain loop
    train_captioner_ray(cfg.model_copy(update=dict(stage=2, init="ckpt/stage1", checkpoint_dir="ckpt/stage2")))

Stages (``STAGE_LEARNING_RATES``):
1. only the MLP projector trains (lr 1e-3); the ViT and the LLM are frozen (``requires_grad=False`` and absent
   from the optimizer);
2. everything trains: 1e-5 for the LLM and the projector, 1e-6 for the ViT;
3. as stage 2, on the small high-quality split (``split = "hq"`` by default).
The rates can be overridden per group (``lr_projector``, ``lr_llm``, ``lr_vision``), e.g. to train a tiny model
from scratch in a test; stage 1 refuses LLM/ViT rates, since it keeps them frozen.

Loss: next-token cross-entropy on the caption tokens only (``CaptionProcessor`` labels every prompt and visual
token ``-100``). Data: ``caption_sft`` examples of the stage's split, or clips + reference captions
(``source="clips"``), see ``captioner.data``.

Checkpoints (``checkpoint_dir/step_000123/``) are complete captioner folders (``config.json``,
``model.safetensors``, tokenizer; ``SlowFastCaptioner.from_pretrained`` reads them) plus ``train_state.pt``
(optimizer, RNG) and ``meta.json`` (stage, step, data position); ``checkpoint_dir/latest`` names the newest.
A run with ``resume`` continues from ``latest`` at the same step and data position.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from captioner.data import CaptionExample, read_clip_examples, read_examples
from captioner.model import SlowFastCaptioner, load_captioner
from captioner.processor import CaptionInputError, CaptionProcessor, ProcessedSample

__all__ = ["STAGE_LEARNING_RATES", "CaptionTrainConfig", "TrainResult", "build_optimizer", "train_captioner",
           "train_captioner_ray"]

log = logging.getLogger(__name__)

# learning rate per parameter group; 0 = frozen
STAGE_LEARNING_RATES: dict[int, dict[str, float]] = {
    1: {"projector": 1e-3, "llm": 0.0, "vision": 0.0},
    2: {"projector": 1e-5, "llm": 1e-5, "vision": 1e-6},
    3: {"projector": 1e-5, "llm": 1e-5, "vision": 1e-6},
}


class CaptionTrainConfig(BaseModel):
    """Everything a captioner training run needs; an unknown key or a bad value fails before any work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Literal[1, 2, 3]
    init: str  # a saved captioner folder, a checkpoint folder or `latest` file, or "tiny" (random tiny model)
    lake: str
    source: Literal["sft", "clips"] = "sft"
    table: str = "caption_sft"
    split: str | None = None  # default: "train" for stages 1-2, "hq" for stage 3
    captions_table: str = "captions"  # source "clips": the reference captions
    steps: int = Field(100, ge=1)
    batch_size: int = Field(4, ge=1)
    lr_projector: float | None = Field(None, gt=0)
    lr_llm: float | None = Field(None, gt=0)
    lr_vision: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    checkpoint_dir: str | None = None
    checkpoint_every: int = Field(0, ge=0)  # 0: only at the end
    resume: bool = True
    log_every: int = Field(10, ge=1)
    seed: int = 0
    device: str = "auto"
    cpu_threads: int | None = Field(None, ge=1)
    tiny_overrides: dict[str, Any] = Field(default_factory=dict)  # init "tiny": tiny_config arguments (text=...)

    @model_validator(mode="after")
    def _check(self) -> CaptionTrainConfig:
        if self.stage == 1 and (self.lr_llm is not None or self.lr_vision is not None):
            raise ValueError("lr_llm/lr_vision: stage 1 trains only the projector (ViT and LLM stay frozen)")
        return self

    @property
    def data_split(self) -> str:
        return self.split or ("hq" if self.stage == 3 else "train")

    def learning_rates(self) -> dict[str, float]:
        rates = dict(STAGE_LEARNING_RATES[self.stage])
        for group, value in (("projector", self.lr_projector), ("llm", self.lr_llm), ("vision", self.lr_vision)):
            if value is not None:
                rates[group] = value
        return rates


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CaptionTrainConfig:
    """Read a YAML training config (plus dotted overrides) and validate it."""
    from curation.jobconfig import load_yaml_config

    return load_yaml_config(path, CaptionTrainConfig, overrides)


# ------------------------------------------------------------------------------------------------ optimizer
def build_optimizer(model: SlowFastCaptioner, rates: dict[str, float], weight_decay: float = 0.0
                    ) -> torch.optim.AdamW:
    """AdamW with one named parameter group per trained part; parts at rate 0 are frozen and left out."""
    groups = []
    for name, params in model.parameter_groups().items():
        rate = rates.get(name, 0.0)
        for p in params:
            p.requires_grad_(rate > 0)
        if rate > 0:
            groups.append({"name": name, "params": params, "lr": rate, "initial_lr": rate})
    if not groups:
        raise ValueError("no parameter group has a positive learning rate")
    return torch.optim.AdamW(groups, weight_decay=weight_decay, betas=(0.9, 0.98))


# ------------------------------------------------------------------------------------------------ checkpoints
def resolve_checkpoint(path: str | Path) -> Path:
    """A captioner folder from a folder, a ``latest`` pointer file, or a run dir holding ``latest``."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "latest":
        return path.parent / path.read_text().strip()
    if path.is_dir() and (path / "latest").is_file():
        return path / (path / "latest").read_text().strip()
    if not path.exists():
        raise FileNotFoundError(f"captioner checkpoint not found: {path}")
    return path


def save_checkpoint(directory: Path, *, step: int, next_index: int, cfg: CaptionTrainConfig,
                    model: SlowFastCaptioner, processor: CaptionProcessor, optimizer: torch.optim.Optimizer) -> Path:
    """Write ``directory/step_{step:06d}`` through a temp folder and point ``latest`` at it (atomic)."""
    final = directory / f"step_{step:06d}"
    tmp = directory / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=processor.tokenizer)
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "train_state.pt")
    meta = {"stage": cfg.stage, "step": step, "next_index": next_index, "config": cfg.model_dump(mode="json")}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = directory / ".latest.tmp"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, directory / "latest")
    return final


# ------------------------------------------------------------------------------------------------ data
def example_stream(examples: list[CaptionExample], seed: int,
                   start_index: int = 0) -> Iterator[tuple[int, CaptionExample]]:
    """``(index, example)`` forever: epoch ``e`` visits the examples in permutation ``seed + e``.

    A pure function of ``(seed, index)``, so a resumed run continues with exactly the examples it would have seen.
    """
    if not examples:
        raise ValueError("no training examples")
    count = len(examples)
    index = start_index
    while True:
        epoch, offset = divmod(index, count)
        order = np.random.default_rng(seed + epoch).permutation(count)
        for k in range(offset, count):
            yield index, examples[order[k]]
            index += 1
        offset = 0


def process_example(processor: CaptionProcessor, example: CaptionExample) -> ProcessedSample:
    """Media + instruction + caption -> a sample with labels on the caption tokens."""
    return processor(example.media(), example.instruction, target=example.caption)


class NoUsableExamplesError(RuntimeError):
    """Every training example in a whole pass over the data, in a row, failed to process."""


def _batches(stream: Iterator[tuple[int, CaptionExample]], processor: CaptionProcessor, batch_size: int,
             skipped: dict[str, int], num_examples: int,
             source: str = "the training data") -> Iterator[tuple[list[ProcessedSample], int]]:
    """Batches of processed samples; bad examples are counted in ``skipped`` and passed over. Once
    ``num_examples`` examples in a row (a whole pass) have been skipped, raises ``NoUsableExamplesError``."""
    in_a_row = 0
    while True:
        samples, last = [], 0
        while len(samples) < batch_size:
            index, example = next(stream)
            last = index
            try:
                samples.append(process_example(processor, example))
                in_a_row = 0
            except (CaptionInputError, ValueError) as e:  # bad example: counted, skipped, the run goes on
                skipped[type(e).__name__] = skipped.get(type(e).__name__, 0) + 1
                log.warning("skipping example %s: %s", example.example_id, e)
                in_a_row += 1
                if in_a_row >= num_examples:
                    counts = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
                    raise NoUsableExamplesError(
                        f"no usable example in {source}: all {num_examples} examples of a whole pass were skipped "
                        f"in a row (skipped so far: {counts}; last error: {e})") from e
        yield samples, last + 1


def load_examples(cfg: CaptionTrainConfig) -> list[CaptionExample]:
    if cfg.source == "clips":
        return read_clip_examples(cfg.lake, cfg.captions_table)
    return read_examples(cfg.lake, cfg.data_split, cfg.table)


# ------------------------------------------------------------------------------------------------ loop
@dataclass
class TrainResult:
    """What a run leaves: the trained model, its processor, per-step logs and the last checkpoint."""

    model: SlowFastCaptioner
    processor: CaptionProcessor
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_model(cfg: CaptionTrainConfig, resume_from: Path | None) -> tuple[SlowFastCaptioner, CaptionProcessor]:
    """The model to train: resumed checkpoint, else ``init`` (a captioner folder or "tiny")."""
    if resume_from is not None:
        return load_captioner(resume_from)
    if cfg.init == "tiny":
        from captioner.tiny import build_tiny_captioner

        model, tokenizer = build_tiny_captioner(cfg.seed, **cfg.tiny_overrides)
        return model, CaptionProcessor(model.config, tokenizer)
    return load_captioner(resolve_checkpoint(cfg.init))


def train_captioner(cfg: CaptionTrainConfig, *, examples: list[CaptionExample] | None = None,
                    on_step: Callable[[dict[str, float], Path | None], None] | None = None,
                    is_main: bool = True, resume_from: str | Path | None = None,
                    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> TrainResult:
    """Train the captioner as ``cfg`` says (one stage); the same loop runs alone or in a Ray Train worker.

    ``examples``: use these instead of reading ``cfg.lake`` (the Ray worker passes its shard's rows).
    ``on_step(metrics, checkpoint)`` is called after every step. ``is_main``: whether this process writes
    checkpoints. ``resume_from``: a checkpoint to continue (default ``checkpoint_dir/latest`` when ``resume``).
    ``wrap_model``: wraps the model for the forward/backward pass (the Ray worker's DDP); the optimizer's
    parameter groups, checkpoints and the returned model use the unwrapped module (DDP shares its parameters).
    """
    device = _device(cfg.device)
    if cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)

    ckpt_dir = Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir else None
    if resume_from is None and cfg.resume and ckpt_dir is not None and (ckpt_dir / "latest").is_file():
        resume_from = ckpt_dir / "latest"
    resume = resolve_checkpoint(resume_from) if resume_from is not None else None
    model, processor = initial_model(cfg, resume)
    model = model.to(device).train()
    optimizer = build_optimizer(model, cfg.learning_rates(), cfg.weight_decay)

    start_step, next_index = 0, 0
    if resume is not None:
        meta = json.loads((resume / "meta.json").read_text())
        if meta.get("stage") == cfg.stage:  # same stage: continue; an earlier stage's checkpoint only inits
            start_step, next_index = int(meta["step"]), int(meta["next_index"])
            state = torch.load(resume / "train_state.pt", map_location="cpu", weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            log.info("resumed stage %d from %s at step %d", cfg.stage, resume, start_step)

    forward = wrap_model(model) if wrap_model is not None else model
    if examples is None:
        examples = load_examples(cfg)
    result = TrainResult(model=model, processor=processor)
    source = (f"split {cfg.data_split!r} of table {cfg.table!r}" if cfg.source != "clips"
              else f"table {cfg.captions_table!r}") + f" in lake {cfg.lake}"
    batches = _batches(example_stream(examples, cfg.seed, next_index), processor, cfg.batch_size, result.skipped,
                       len(examples), source)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    t_last, tokens_since = time.perf_counter(), 0
    for step in range(start_step, cfg.steps):
        samples, next_index = next(batches)
        batch = processor.collate(samples, padding_side="right").to(device)
        scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale
        loss = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        tokens_since += int(batch.attention_mask.sum())
        metrics = {"step": step + 1, "loss": loss.item(),
                   "caption_tokens": int((batch.labels != -100).sum())}
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            now = time.perf_counter()
            metrics["tokens_per_s"] = tokens_since / max(now - t_last, 1e-9)
            t_last, tokens_since = now, 0
            log.info("stage %d step %d | loss %.4f | %.0f tokens/s", cfg.stage, step + 1, metrics["loss"],
                     metrics["tokens_per_s"])
        saved = None
        due = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0
        if ckpt_dir is not None and is_main and (due or step + 1 == cfg.steps):
            saved = save_checkpoint(ckpt_dir, step=step + 1, next_index=next_index, cfg=cfg, model=model,
                                    processor=processor, optimizer=optimizer)
            result.checkpoint = saved
        result.history.append(metrics)
        if on_step is not None:
            on_step(metrics, saved)
    model.eval()
    return result


# ------------------------------------------------------------------------------------------------ Ray Train
def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker function (returns nothing: Ray pickles a worker's return value)."""
    _ray_train_loop(loop_config)


def _ray_train_loop(loop_config: dict[str, Any]) -> TrainResult:
    """Ray Train worker: the plain loop over this worker's shard of the examples, reporting through ray.train."""
    import tempfile

    import ray.train

    cfg = CaptionTrainConfig(**loop_config["cfg"])
    shard = ray.train.get_dataset_shard("train")
    examples = [CaptionExample(r["example_id"], r["media_type"], list(r["frames"] or []),
                               [float(t) for t in (r["frame_times"] or [])], r["instruction"], r["caption"])
                for r in shard.iter_rows()]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    wrap_model = None
    if context.get_world_size() > 1:
        from ray.train.torch import prepare_model

        def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
            # DDP: gradients are averaged across workers every step. Unused parameters are expected (the
            # vision tower's layers past ``feature_layer``; batches without media skip the tower entirely).
            return prepare_model(model, move_to_device=False,
                                 parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(metrics: dict[str, float], saved: Path | None) -> None:
        if metrics["step"] % cfg.log_every and metrics["step"] != cfg.steps and saved is None:
            return
        checkpoint = ray.train.Checkpoint.from_directory(str(saved)) if saved is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)

    restored = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory() as scratch:
        resume_from = Path(restored.to_directory(os.path.join(scratch, "restored"))) if restored else None
        if cfg.checkpoint_dir is None or rank != 0:
            cfg = cfg.model_copy(update={"checkpoint_dir": os.path.join(scratch, "ckpt")})
        return train_captioner(cfg, examples=examples, on_step=report, is_main=rank == 0,
                               resume_from=resume_from, wrap_model=wrap_model)


def train_captioner_ray(cfg: CaptionTrainConfig, num_workers: int = 1, use_gpu: bool = False,
                        storage_path: str | None = None) -> Any:
    """Run ``train_captioner`` on Ray Train (``TorchTrainer``, ``num_workers`` workers); returns the Result.

    The examples are read with ``ray.data.read_lance`` (source "sft") and split across workers; each worker
    runs the plain loop on its shard, with the model in DistributedDataParallel when ``num_workers > 1``
    (gradients averaged every step, so all workers keep one model). Checkpoints are reported to Ray and kept under ``storage_path`` (default
    ``<checkpoint_dir>/ray``).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curation.ray_runtime import ensure_ray

    ensure_ray()  # the embedded Ray (or the cluster that runs this under Ray Jobs), never a stale recorded one
    if cfg.source == "clips":
        rows = [e.__dict__ for e in read_clip_examples(cfg.lake, cfg.captions_table)]
        dataset = ray.data.from_items(rows)
    else:
        from curation.lake import Lake

        lake = Lake(cfg.lake)
        if lake.dataset(cfg.table) is None:
            raise FileNotFoundError(f"no {cfg.table!r} table in lake {lake.root}")
        dataset = ray.data.read_lance(lake.uri(cfg.table), filter=f"split = '{cfg.data_split}'",
                                      storage_options=lake.storage_options)
    if storage_path is None and cfg.checkpoint_dir is not None:
        storage_path = str(Path(cfg.checkpoint_dir).expanduser().resolve() / "ray")
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"captioner_stage{cfg.stage}", storage_path=storage_path),
        datasets={"train": dataset},
    )
    return trainer.fit()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train the slow-fast captioner (one stage).")
    parser.add_argument("--config", required=True, help="YAML with CaptionTrainConfig fields")
    parser.add_argument("--ray", action="store_true", help="run on Ray Train")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_train_config(args.config)
    if args.ray:
        print(train_captioner_ray(cfg, args.num_workers, args.gpu).metrics)
    else:
        result = train_captioner(cfg)
        print(f"stage {cfg.stage}: final loss {result.history[-1]['loss']:.4f}, checkpoint {result.checkpoint}")


if __name__ == "__main__":
    main()
