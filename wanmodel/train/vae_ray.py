"""The Ray Train side of the VAE trainer: ``ray_loop.fit`` with workers that run ``vae.train_loop``.

The driver checks the lake (kept clips, enough for a global batch) before Ray starts work. Each worker receives the
clip list through ``ray.data.read_lance`` and ``get_dataset_shard("index")`` (unsplit, as the DiT's latents index)
and decodes only its slice of each step's clip windows (``vae_data``). A run started again after a crash or a
kill -9 resumes from the newest complete checkpoint of ``checkpoint_dir``, exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanmodel.train.vae import VAETrainConfig

__all__ = ["RayRunResult", "run_trainer"]


@dataclass
class RayRunResult:
    metrics: dict[str, Any]  # the last metrics reported (``step`` included)
    checkpoint: Path | None  # the newest complete checkpoint folder (``load_vae`` reads it)
    error: BaseException | None = None


def _worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    from wanmodel.data.clips import clip_records
    from wanmodel.train.ray_loop import report, worker_device, worker_index_rows
    from wanmodel.train.vae import train_loop

    cfg = VAETrainConfig(**loop_config["cfg"])
    records = clip_records(worker_index_rows(loop_config["rows"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    wrap = None
    if world > 1:
        import ray.train.torch

        wrap = ray.train.torch.prepare_model
    train_loop(cfg, records, worker_device(loop_config["use_gpu"]), rank=rank, world=world, on_log=report, wrap=wrap)


def run_trainer(cfg: VAETrainConfig, *, num_workers: int, use_gpu: bool, storage_path: str | None) -> RayRunResult:
    """Check the lake here, then fit on ``num_workers`` workers."""
    import ray.data

    from curation.lake.tables import Lake
    from wanmodel.data.clips import read_clip_records, split_records
    from wanmodel.train import checkpointing as ckpt
    from wanmodel.train import ray_loop
    from wanmodel.train.vae_data import VAEData, clip_source

    records = read_clip_records(cfg.lake, allow_uncurated=cfg.allow_uncurated)  # fails fast on an empty lake
    train, _ = split_records(records, cfg.eval_clips, cfg.seed)
    VAEData(train, num_frames=cfg.num_frames, size=cfg.hw, batch_size=cfg.batch_size, seed=cfg.seed,
            world=num_workers)  # enough clips for a global batch, before any worker starts
    lake = Lake(cfg.lake)
    table, where, columns = clip_source(lake, cfg.allow_uncurated)

    def index() -> Any:
        return ray.data.read_lance(lake.uri(table), columns=columns, filter=where)

    storage = storage_path or ray_loop.storage_path(cfg.checkpoint_dir, cfg.metrics_dir)
    result = ray_loop.fit(_worker, {"cfg": cfg.model_dump(mode="json"), "rows": len(records), "use_gpu": use_gpu},
                          index=index, name=f"wan_vae_{cfg.phase}", num_workers=num_workers, use_gpu=use_gpu,
                          cpus_per_worker=cfg.cpus_per_worker, storage=storage)
    return RayRunResult(_last_metrics(cfg) or dict(result.metrics or {}), ckpt.latest_checkpoint(cfg.checkpoint_dir),
                        result.error)


def _last_metrics(cfg: VAETrainConfig) -> dict[str, Any]:
    """The last line of ``metrics.jsonl`` (Ray Train keeps the reported metrics only with a reported checkpoint)."""
    import json

    path = Path(cfg.metrics_dir) / "metrics.jsonl" if cfg.metrics_dir else None
    if path is None or not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}
