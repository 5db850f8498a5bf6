"""The Ray Train side of the DiT trainer: ``ray_loop.fit`` with workers that run ``dit.train_loop``.

Each worker receives the index of usable ``latents`` rows through ``ray.data.read_lance`` and
``ray.train.get_dataset_shard("index")``. The index is not split across workers (``DataConfig(
datasets_to_split=[])``): every worker needs the whole, small index to compute the same epoch plan, then reads only
its data shard's tensors of each step (see ``dit_data``), which is what makes resume exact. Ray Train initialises
``torch.distributed`` (gloo on CPU, NCCL on GPU); ``train_loop`` builds the ``ParallelMesh`` on it. The
held-out index (``validation``) is small and goes in the loop config, so every rank validates on the same rows.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from wanmodel.train.dit_config import DiTTrainConfig
from wanmodel.train.dit_data import LatentIndex

__all__ = ["run_trainer"]


def _worker(loop_config: dict[str, Any]) -> None:
    from wanmodel.train.dit import train_loop
    from wanmodel.train.ray_loop import report, worker_device, worker_index_rows

    cfg = DiTTrainConfig(**loop_config["cfg"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    index = LatentIndex(worker_index_rows(loop_config["rows"]), loop_config["buckets"])
    held = loop_config["held_out"]  # the driver's held-out index: every rank validates on the same rows
    val_index = LatentIndex(held["rows"], held["buckets"]) if held else None
    train_loop(cfg, index, worker_device(cfg.use_gpu), report, val_index)


def run_trainer(cfg: DiTTrainConfig, rows: int,
                val_index: LatentIndex | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """Fit on ``cfg.num_workers`` workers; returns the logged training and held-out losses (step -> loss) from
    ``metrics.jsonl``."""
    import ray.data

    from curation.lake.tables import Lake
    from wanmodel.train.dit_data import INDEX_COLUMNS, index_filter, stage_buckets
    from wanmodel.train.metrics import logged_losses
    from wanmodel.train.ray_loop import fit, storage_path

    buckets = stage_buckets(cfg, 16).buckets

    def index() -> Any:
        return ray.data.read_lance(Lake(cfg.lake, cfg.storage_options).uri("latents"), columns=INDEX_COLUMNS,
                                   filter=index_filter(buckets), storage_options=cfg.storage_options)

    held = None if val_index is None else {"rows": [asdict(r) for r in val_index.rows], "buckets": val_index.buckets}
    fit(_worker, {"cfg": cfg.model_dump(mode="json"), "buckets": buckets, "rows": rows, "held_out": held}, index=index,
        name=f"wan_dit_{cfg.stage or 'train'}", num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
        cpus_per_worker=cfg.cpus_per_worker, storage=storage_path(cfg.checkpoint_dir, cfg.metrics_dir),
        ray_address=cfg.ray_address)
    return logged_losses(cfg.metrics_dir)
