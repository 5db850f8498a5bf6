"""The Ray Train / FSDP2 side of ``perf.train``: the trainer's own step on ``workers`` Ray Train workers, timed
with the same hook (``time_train_step``) as the plain loop, on the same batch.

Each worker builds the model, the optimizer and the runtime the way ``wanmodel.train.dit.train_loop`` does
(``build_model``: ``parallelize_dit`` over the worker mesh: FSDP2 ``fully_shard`` per block, or DDP for full
replicas; ``build_optimizer``: AdamW) and times ``wanmodel.train.dit.train_step`` (forward, backward, gradient
clipping, the global-batch loss all-reduce, AdamW) on ``perf.train.make_batch`` of the case, the plain loop's
batch: each worker takes a whole copy of it, so the global batch is ``workers`` x the plain loop's and a
worker's step does the plain loop's compute plus the collectives (gloo on CPU). ``spawned_case`` times the same
step on processes started by ``torch.multiprocessing`` without Ray, which splits the overhead into the
distributed step's own cost and Ray Train's worker runtime's.

Only the timed steps count: Ray start-up, the workers' process start, the process group, the model build and the
warmup steps are outside the timing (``fit_s`` records the whole fit for reference). Each worker resets its
peak resident set before the timed steps (``VmHWM``), so ``peak_mb`` is that worker process's high-water mark.
A worker writes its figures to ``worker_<rank>.json`` in a temporary folder the driver reads back.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["LAYOUTS", "concurrent_plain", "layout_parallel", "ray_case", "spawned_case"]


LAYOUTS: dict[str, dict[str, Any]] = {  # --ray-layouts: how 2+ workers hold the weights (the trainer's parallel:)
    "fsdp": {},  # FSDP2 over all workers, each block resharded after its forward (ZeRO-3)
    "zero2": {"reshard_after_forward": False},  # gathered blocks kept for the backward: one all-gather fewer
    "replicate": {"dp_replicate": None, "fsdp": 1},  # full copies, DDP (bucketed gradient all-reduce)
}


def layout_parallel(layout: str, workers: int) -> dict[str, Any]:
    """The trainer's ``parallel`` sizes for ``layout`` on ``workers`` workers."""
    return {k: workers if v is None else v for k, v in LAYOUTS[layout].items()}


def _train_config(case: Any, workers: int, threads: int, lr: float, parallel: dict[str, Any]) -> Any:
    """A ``DiTTrainConfig`` of the case for ``build_model`` / ``train_step`` (its lake is never read)."""
    from wanmodel.train.dit_config import DiTTrainConfig

    overrides = {} if case.layers is None else {"num_layers": case.layers}
    backend = "sdpa" if case.attention_backend == "auto" else case.attention_backend
    return DiTTrainConfig(lake="unused", buckets=["bench"], model=case.config, model_overrides=overrides,
                          attention_backend=backend, steps=1, global_batch_size=case.batch * workers,
                          grad_accum_steps=case.grad_accum,
                          mixed_precision="auto", optim={"lr": lr, "weight_decay": 0.01, "grad_clip": 1.0},
                          parallel={"activation_checkpointing": case.activation_checkpointing,
                                    "offload_activations": case.offload_activations, "compile": case.compile,
                                    **parallel},
                          num_workers=workers, cpus_per_worker=threads, use_gpu=case.device == "cuda")


def _step_inputs(batch: dict[str, torch.Tensor], generator: torch.Generator) -> Any:
    """The batch with this step's noise and logit-normal sigma, as the trainer's data path hands it over."""
    from wanmodel.diffusion.flow_matching import LogitNormal
    from wanmodel.train.dit_data import StepInputs

    latents = batch["latents"]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    sigma = LogitNormal().sample(latents.shape[0], generator=generator).to(latents.device)
    return StepInputs(batch=None, latents=latents, context=batch["context"], noise=noise,  # type: ignore[arg-type]
                      sigma=sigma, latent_ids=[])


def _timed_trainer_step(config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Build the trainer's model, optimizer and runtime in this (distributed) process and time its step."""
    from perf.measure import machine_busy_s, thread_cpu_per_wall, thread_cpu_s
    from perf.train import TrainCase, make_batch, time_train_step
    from wanmodel.train.dit import _runtime, build_model, build_optimizer, train_step

    torch.set_num_threads(config["threads"])
    case = TrainCase(**config["case"])
    cfg = _train_config(case, config["workers"], config["threads"], config["lr"], config["parallel"])
    rt = _runtime(cfg, device)
    model = build_model(cfg, rt)
    opt, _ = build_optimizer(cfg, model)
    batch = {k: v.to(device) for k, v in make_batch(case).items()}
    generator = torch.Generator().manual_seed(2)

    def step() -> torch.Tensor:
        loss, _, _ = train_step(cfg, model, opt, _step_inputs(batch, generator), rt)
        return torch.tensor(loss)

    cpu, wall, threads, machine = time.process_time(), time.perf_counter(), thread_cpu_s(), machine_busy_s()
    timing = time_train_step(step, device=case.device, warmup=config["warmup"], steps=config["steps"])
    wall = time.perf_counter() - wall
    # the process's CPU time (all its threads) over wall time: below 1 when it waits (collectives) or is preempted
    return {**timing, "cpu_per_wall": (time.process_time() - cpu) / wall,
            "thread_cpu_per_wall": thread_cpu_per_wall(threads, thread_cpu_s(), wall),
            "machine_busy_cores": (machine_busy_s() - machine) / wall if machine >= 0 else None}


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    device = ray.train.torch.get_device() if config["case"]["device"] == "cuda" else torch.device("cpu")
    _write_timing(config, ray.train.get_context().get_world_rank(), _timed_trainer_step(config, device))


def _write_timing(config: dict[str, Any], rank: int, timing: dict[str, Any]) -> None:
    Path(config["out"], f"worker_{rank}.json").write_text(json.dumps({"rank": rank, **timing}))


def _read_timings(out: str, workers: int) -> list[dict[str, Any]]:
    return [json.loads(Path(out, f"worker_{rank}.json").read_text()) for rank in range(workers)]


def _worker_config(case: Any, out: str, *, workers: int, threads: int, warmup: int, steps: int, lr: float,
                   layout: str) -> dict[str, Any]:
    """What every worker (Ray or spawned) gets: the case, the timing settings and the trainer's parallel sizes."""
    return {"case": _case_dict(case), "workers": workers, "threads": threads, "warmup": warmup, "steps": steps,
            "lr": lr, "out": out, "parallel": layout_parallel(layout, workers)}


def _spawned_worker(rank: int, config: dict[str, Any], port: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=config["workers"])
    try:
        _write_timing(config, rank, _timed_trainer_step(config, torch.device("cpu")))
    finally:
        dist.destroy_process_group()


def spawned_case(case: Any, *, workers: int, threads: int, warmup: int, steps: int, lr: float,
                 layout: str = "fsdp") -> dict[str, Any]:
    """The same trainer step on ``workers`` processes started by ``torch.multiprocessing`` (gloo, CPU), without
    Ray: what the FSDP2/DDP step costs by itself, apart from Ray Train's worker runtime."""
    import socket

    import torch.multiprocessing as mp

    if case.device != "cpu":
        raise ValueError("spawned_case runs on CPU (gloo); on GPUs the Ray path is the measurement")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="perf_train_spawn") as out:
        config = _worker_config(case, out, workers=workers, threads=threads, warmup=warmup, steps=steps, lr=lr,
                                layout=layout)
        mp.spawn(_spawned_worker, args=(config, port), nprocs=workers, join=True)
        per_worker = _read_timings(out, workers)
    return {"workers": workers, "layout": layout, "threads_per_worker": threads, "per_worker": per_worker,
            "step_s": max(w["step_s"] for w in per_worker), "min_step_s": max(w["min_step_s"] for w in per_worker)}


def ray_case(case: Any, *, workers: int, threads: int, warmup: int, steps: int, lr: float,
             layout: str = "fsdp") -> dict[str, Any]:
    """Time the trainer's step of ``case`` on ``workers`` Ray Train workers of ``threads`` CPU threads each, the
    weights held as ``layout`` says (``LAYOUTS``); one entry per worker (step time, tokens/s, peak MB) and the
    slowest worker's step time."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curation.ray_runtime import ensure_ray

    ensure_ray(None, num_cpus=math.ceil(workers * threads) + 1)
    with tempfile.TemporaryDirectory(prefix="perf_train_ray") as out:
        config = _worker_config(case, out, workers=workers, threads=threads, warmup=warmup, steps=steps, lr=lr,
                                layout=layout)
        use_gpu = case.device == "cuda"
        trainer = TorchTrainer(
            _worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": threads, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name="perf_train", storage_path=str(Path(out) / "ray")))
        begin = time.perf_counter()
        try:
            trainer.fit()
        finally:
            fit_s = time.perf_counter() - begin
            ray.shutdown()
        per_worker = _read_timings(out, workers)
    return {"workers": workers, "layout": layout, "threads_per_worker": threads, "fit_s": fit_s,
            "per_worker": per_worker,
            "step_s": max(w["step_s"] for w in per_worker)}


def _case_dict(case: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(case)


def _case_args(case: Any) -> list[str]:
    """``perf.train`` arguments that rebuild ``case``."""
    args = ["--config", case.config, "--frames", str(case.frames), "--height", str(case.height), "--width",
            str(case.width), "--batch", str(case.batch), "--text-tokens", str(case.text_tokens), "--device",
            case.device, "--attention-backend", case.attention_backend, "--grad-accum", str(case.grad_accum)]
    args += ["--layers", str(case.layers)] if case.layers is not None else []
    args += [] if case.activation_checkpointing else ["--no-activation-checkpointing"]
    args += ["--compile"] if case.compile else []
    return args + (["--offload-activations"] if case.offload_activations else [])


def concurrent_plain(case: Any, *, count: int, threads: int, warmup: int, steps: int, lr: float) -> dict[str, Any]:
    """``count`` plain loops of ``case`` at once, each its own process of ``threads`` threads: what the machine
    gives that many workers without Ray or collectives (shared memory bandwidth and caches, other load), the
    baseline that separates the Ray/FSDP path's own cost from the machine's."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="perf_train_plain") as out:
        commands = [[sys.executable, "-m", "perf.train", *_case_args(case), "--threads", str(threads), "--ray-workers",
                     "0", "--warmup", str(warmup), "--steps", str(steps), "--lr", str(lr), "--out",
                     str(Path(out, f"plain_{i}.json"))] for i in range(count)]
        running = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
        errors = [proc.communicate()[1] for proc in running]
        if any(proc.returncode for proc in running):
            failed = next(e for proc, e in zip(running, errors) if proc.returncode)
            raise RuntimeError(f"a concurrent plain loop failed: {failed.strip().splitlines()[-1:]}")
        rows = [json.loads(Path(out, f"plain_{i}.json").read_text())["cases"][0] for i in range(count)]
    return {"processes": count, "step_s": max(r["step_s"] for r in rows),
            "per_process_step_s": [r["step_s"] for r in rows]}
