"""The Ray Train side shared by the DiT and the VAE trainers: a ``TorchTrainer`` whose workers each receive the
whole, small training index through ``ray.data.read_lance`` and ``ray.train.get_dataset_shard("index")``.

The index is not split across workers (``DataConfig(datasets_to_split=[])``): every worker needs all of it to
compute the same epoch plan (``dit_plan``), then loads only its own slice of each step's global batch. The step is
the whole data position, so a run restarted after a crash (kill -9 included) resumes exactly from the newest
complete checkpoint of its ``checkpoint_dir`` (``checkpointing``). Ray Train initialises ``torch.distributed``
(gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["fit", "report", "storage_path", "worker_device", "worker_index_rows"]


def worker_index_rows(expected: int | None = None) -> list[dict[str, Any]]:
    """Inside a worker: every row of the index dataset; ``expected`` (the driver's count) guards against a table
    that changed between the driver's checks and the workers' read."""
    import ray.train

    from curation.jobconfig import ConfigError

    rows = list(ray.train.get_dataset_shard("index").iter_rows())
    if expected is not None and len(rows) != expected:
        raise ConfigError(f"the training index changed under the run: the driver checked {expected} rows, "
                          f"this worker read {len(rows)}")
    return rows


def worker_device(use_gpu: bool) -> torch.device:
    import ray.train.torch

    return ray.train.torch.get_device() if use_gpu else torch.device("cpu")


def report(step: int, values: dict[str, Any]) -> None:
    """Metrics to Ray Train (every rank calls it: it is a barrier). Checkpoints live in ``checkpoint_dir``."""
    import ray.train

    ray.train.report({"step": step, **{k: v for k, v in values.items() if v is not None}})


def storage_path(*folders: str | None) -> str | None:
    """Ray Train's run storage: ``<first given folder>/ray``."""
    base = next((f for f in folders if f), None)
    return str(Path(base).expanduser().resolve() / "ray") if base else None


def fit(worker: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], *, index: Any, name: str,
        num_workers: int, use_gpu: bool, cpus_per_worker: float, storage: str | None,
        ray_address: str | None = None) -> Any:
    """Start (or join) Ray, run ``worker(loop_config)`` on ``num_workers`` workers with ``index`` (a
    ``ray.data.Dataset``, or a function of no arguments that builds one once Ray is up) as their unsplit
    "index" dataset; returns the ``ray.train.Result``."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curation.ray_runtime import ensure_ray

    ensure_ray(ray_address, num_cpus=math.ceil(num_workers * cpus_per_worker) + 1)
    dataset = index() if callable(index) else index
    trainer = TorchTrainer(
        worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=storage),
        datasets={"index": dataset},
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    return trainer.fit()
