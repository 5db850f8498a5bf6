"""The Ray Train side of the DiT trainer: a ``TorchTrainer`` whose workers run ``dit.train_loop``.

Each worker receives the index of usable ``latents`` rows through ``ray.data.read_lance`` and
``ray.train.get_dataset_shard("index")``. The index is not split across workers (``DataConfig(
datasets_to_split=[])``): every worker needs the whole, small index to compute the same epoch plan, then reads only
its data shard's tensors of each step (see ``dit_data``), which is what makes resume exact. Ray Train initialises
``torch.distributed`` (gloo on CPU, NCCL on GPU); ``train_loop`` builds the ``ParallelMesh`` on it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from wanmodel.train.dit_config import DiTTrainConfig

__all__ = ["run_trainer"]


def _worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from wanmodel.train.dit import train_loop
    from wanmodel.train.dit_data import DataError, LatentIndex

    cfg = DiTTrainConfig(**loop_config["cfg"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    rows = list(ray.train.get_dataset_shard("index").iter_rows())
    index = LatentIndex(rows, loop_config["buckets"])
    if len(index.rows) != loop_config["rows"]:
        raise DataError(f"the latents index changed under the run: the driver checked {loop_config['rows']} "
                        f"rows, this worker read {len(index.rows)}")
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")

    def on_log(step: int, values: dict[str, float]) -> None:
        ray.train.report({"step": step, **{k: v for k, v in values.items() if v is not None}})

    train_loop(cfg, index, device, on_log)


def run_trainer(cfg: DiTTrainConfig, rows: int) -> dict[int, float]:
    """Fit on ``cfg.num_workers`` workers; returns the logged losses (step -> loss) from ``metrics.jsonl``."""
    import ray.data
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curation.lake.tables import Lake
    from curation.ray_runtime import ensure_ray
    from wanmodel.train.dit_data import INDEX_COLUMNS, index_filter, stage_buckets

    ensure_ray(cfg.ray_address, num_cpus=math.ceil(cfg.num_workers * cfg.cpus_per_worker) + 1)
    buckets = stage_buckets(cfg, 16).buckets
    index = ray.data.read_lance(Lake(cfg.lake, cfg.storage_options).uri("latents"), columns=INDEX_COLUMNS,
                                filter=index_filter(buckets), storage_options=cfg.storage_options)
    storage = _storage_path(cfg)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "buckets": buckets, "rows": rows},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name=f"wan_dit_{cfg.stage or 'train'}", storage_path=storage),
        datasets={"index": index},
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    trainer.fit()
    return _logged_losses(cfg)


def _storage_path(cfg: DiTTrainConfig) -> str | None:
    base = cfg.checkpoint_dir or cfg.metrics_dir
    return str(Path(base).expanduser().resolve() / "ray") if base else None


def _logged_losses(cfg: DiTTrainConfig) -> dict[int, float]:
    if cfg.metrics_dir is None:
        return {}
    path = Path(cfg.metrics_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records}
