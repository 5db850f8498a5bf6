"""``wan sample`` on 1..N processes: context parallel, CFG parallel and FSDP sampling (report section 4.4).

    torchrun --nproc-per-node 8 -m wanmodel.parallel.sample_launch --ulysses 4 --cfg-parallel 2 --fsdp \\
        --prompt "a corgi surfing a wave" --out out/samples --dit ckpt/Wan2.1-T2V-14B --vae ckpt/Wan2.1_VAE.pth \\
        --text-encoder ckpt/umt5 --device cuda --dtype bfloat16 --text-device cpu
    python -m wanmodel.parallel.sample_launch --random-tiny --prompt "a cat" --out out/tiny   # one process

Every argument of ``wan sample`` (its parser, ``wanmodel.cli_sample.build_parser``), plus the layout:
``--ulysses`` (default: what the world leaves after ``--ring`` and ``--cfg-parallel``), ``--ring``,
``--cfg-parallel`` (1, or 2: the conditional and unconditional passes on different ranks) and ``--fsdp`` (shard the
blocks' weights over all ranks). ``torch.distributed`` starts from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL when ``--device`` is CUDA (each rank on
``cuda:LOCAL_RANK``), gloo on CPU. Without torchrun it is one process and ``wan sample`` itself. Every rank loads
the models and runs the same denoising loop; only rank 0 decodes and writes ``--out``. ``--ray N`` runs the N
ranks as Ray Train workers instead (``TorchTrainer``: the embedded local Ray, or ``--ray-address``), one GPU each
with ``--device cuda``.

    python -m wanmodel.parallel.sample_launch --ray 8 --ulysses 8 --device cuda --dtype bfloat16 ...
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wanmodel.parallel.sampling import (
    SamplingLayout,
    prepare_sampling_dit,
    sampling_mesh,
)

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    """``wan sample``'s parser with the multi-process layout options."""
    from wanmodel.cli_sample import build_parser as sample_parser

    parser = sample_parser()
    parser.prog = "python -m wanmodel.parallel.sample_launch"
    parser.description = __doc__
    layout = parser.add_argument_group("multi-process layout (world size = ulysses x ring x cfg-parallel)")
    layout.add_argument("--ulysses", type=int, help="Ulysses (all-to-all over heads) context-parallel size "
                        "(default: world size / (ring x cfg-parallel))")
    layout.add_argument("--ring", type=int, default=1, help="Ring-attention context-parallel size")
    layout.add_argument("--cfg-parallel", type=int, default=1, choices=[1, 2],
                        help="2: conditional and unconditional passes on different ranks")
    layout.add_argument("--fsdp", action="store_true", help="shard the DiT blocks' weights over all ranks")
    ray = parser.add_argument_group("Ray (instead of torchrun)")
    ray.add_argument("--ray", type=int, metavar="N", help="run N ranks as Ray Train workers (TorchTrainer)")
    ray.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else the embedded local Ray)")
    ray.add_argument("--ray-cpus-per-worker", type=float, default=1.0)
    return parser


def layout_of(args: argparse.Namespace) -> SamplingLayout:
    return SamplingLayout(ulysses=args.ulysses, ring=args.ring, cfg=args.cfg_parallel, fsdp=args.fsdp)


def _init_distributed(args: argparse.Namespace) -> str:
    """Start the process group from torchrun's environment; returns the mesh's device type."""
    import torch.distributed as dist

    cuda = str(args.device).startswith("cuda")
    if cuda:
        if not dist.is_initialized():  # torchrun: one GPU per local rank (Ray Train sets args.device itself)
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(args.device))
        if args.text_device and str(args.text_device).startswith("cuda"):
            args.text_device = args.device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return "cuda" if cuda else "cpu"


def _follower_finish(pipeline: Any) -> None:
    """Ranks other than 0 skip decoding: their result holds the latents and no videos."""
    from wanmodel.pipelines.common import GenerationResult

    def finish(latents: torch.Tensor, prompts: list[str], used: list[str], seeds: list[int], settings: Any,
               keep_decoded: bool) -> GenerationResult:
        return GenerationResult(videos=[], prompts=prompts, used_prompts=used, seeds=seeds, settings=settings,
                                latents=latents.float().cpu())

    pipeline._finish = finish


def _rank_preparer(args: argparse.Namespace, device_type: str) -> Callable[[Any], None]:
    """What ``wan sample`` does to its built pipeline on this rank: the DiT prepared for this rank's place in the
    mesh, and, on ranks other than 0, no decoding."""
    import torch.distributed as dist

    mesh = sampling_mesh(layout_of(args), device_type)
    leader = dist.get_rank() == 0

    def prepare(pipeline: Any) -> None:
        pipeline.dit = prepare_sampling_dit(pipeline.dit, mesh, fsdp=args.fsdp)
        if not leader:
            _follower_finish(pipeline)

    return prepare


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Sample as ``args`` say on this process's rank; rank 0 returns ``wan sample``'s summary, the others None."""
    import tempfile

    import torch.distributed as dist

    from wanmodel import cli_sample

    if "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        layout_of(args).dims(1)  # a layout of more than one rank is an error here
        return cli_sample.sample(args)
    device_type = _init_distributed(args)
    layout_of(args).dims(dist.get_world_size())  # a bad layout fails before any model loads
    leader = dist.get_rank() == 0
    if args.random_tiny:  # rank 0 writes the tiny models, the others then read them
        if leader:
            from wanmodel.pipelines.tiny import build_tiny_models

            build_tiny_models(args.tiny_dir, "i2v" if args.task == "i2v" else "t2v", seed=args.tiny_seed)
        dist.barrier()
    prepare = _rank_preparer(args, device_type)
    if leader:
        summary = cli_sample.sample(args, prepare)
    else:
        with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
            cli_sample.sample(argparse.Namespace(**{**vars(args), "out": scratch}), prepare)
        summary = None
    dist.barrier()
    return summary


PATH_ARGUMENTS = ("out", "tiny_dir", "prompts_file", "dit", "vae", "text_encoder", "tokenizer", "image_encoder",
                  "video_prefix", "image", "last_image", "rewrite_model")


def _absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every path absolute (Ray workers do not run in this directory)."""
    def absolute(value: Any) -> Any:
        if isinstance(value, list):
            return [absolute(v) for v in value]
        return str(Path(value).expanduser().resolve()) if value else value

    return argparse.Namespace(**{k: absolute(v) if k in PATH_ARGUMENTS else v for k, v in vars(args).items()})


def _ray_worker(config: dict[str, Any]) -> None:
    """One rank under Ray Train: the process group is up (gloo on CPU, NCCL with GPUs); sample like torchrun's."""
    import ray.train.torch

    args = argparse.Namespace(**config["args"])
    if str(args.device).startswith("cuda"):
        args.device = str(ray.train.torch.get_device())
    run(args)


def run_on_ray(args: argparse.Namespace) -> dict[str, Any]:
    """``args.ray`` ranks as Ray Train ``TorchTrainer`` workers; returns rank 0's summary (``samples.json``)."""
    import json
    import shutil
    import tempfile

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from curation.ray_runtime import ensure_ray

    layout_of(args).dims(args.ray)  # a bad layout fails before Ray starts
    args = _absolute_paths(args)
    use_gpu = str(args.device).startswith("cuda")
    ensure_ray(args.ray_address, num_cpus=math.ceil(args.ray * args.ray_cpus_per_worker) + 1)
    storage = tempfile.mkdtemp(prefix="wan-sample-ray-")  # Ray Train's run folder: nothing of it is kept
    try:
        trainer = TorchTrainer(
            _ray_worker, train_loop_config={"args": {**vars(args), "ray": None}},
            scaling_config=ScalingConfig(num_workers=args.ray, use_gpu=use_gpu, resources_per_worker={
                "CPU": args.ray_cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name="wan-sample", storage_path=storage))
        trainer.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    return json.loads((Path(args.out) / "samples.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Command-line entry point (``python -m wanmodel.parallel.sample_launch``, under torchrun for N ranks)."""
    import torch.distributed as dist

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.random_tiny and (args.dit or args.vae or args.text_encoder):
        parser.error("--random-tiny and --dit/--vae/--text-encoder are exclusive")
    try:
        return run_on_ray(args) if args.ray else run(args)
    except (FileNotFoundError, ValueError) as error:  # ParallelConfigError is a ValueError
        parser.exit(2, f"error: {error}\n")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
