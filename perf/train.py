"""DiT training-step throughput in a plain single-process PyTorch loop: tokens/s, samples/s, step time, peak
memory and MFU from the analytic FLOP count; on CPU set against the trainer's Ray Train / FSDP2 step on 1 and 2
workers over the same batch (``perf.train_ray``): tokens/s per worker and in all, each worker's peak memory, and
the overhead of the Ray/FSDP path.

    python -m perf.train                     # CPU: tiny and 1.3B cut to 2 blocks, 5 frames of 128x128, plain + Ray
    python -m perf.train --device cuda --config 1.3B --frames 81 --height 480 --width 832   # the 480p stage
    options: [--layers N] [--batch 1] [--grad-accum 1] [--text-tokens 512] [--steps 5] [--warmup 2] [--lr 1e-4]
             [--no-activation-checkpointing] [--offload-activations] [--attention-backend auto|sdpa|flash|sage]
             [--compile]
             [--peak-tflops 790] [--threads N] [--ray-workers 1,2|0] [--ray-layouts fsdp,zero2,replicate]
             [--out perf/results/train.json]

One step, what a trainer does: zero the gradients, flow-matching MSE (``flow_matching_loss``: logit-normal sigma,
Gaussian noise) of the DiT on random latents and text embeddings, under bf16 autocast on CUDA (float32 weights, the
model's own float32 islands) and in float32 on CPU; backward; gradient clipping at 1.0; AdamW (fused on CUDA).
Activation checkpointing per block is applied as the distributed trainer applies it, through
``parallelize_dit(model, None, ParallelPlan(...))``; ``--offload-activations`` keeps the saved block inputs in
(pinned) CPU memory (``activation_offload``); ``--compile`` compiles each block (``ParallelPlan.compile``, inductor;
compiled in the warm-up steps, so outside the timing: give ``--warmup`` 2 or more). The model has the official
initialisation (``WanDiT.from_config``, built on the device). ``--frames/--height/--width`` are pixels; the latents
are the Wan-VAE's grid of them, so 81x480x832 is 21x60x104 latents = 32,760 tokens (``perf.dit`` explains).

- Time: ``--warmup`` untimed steps, then the median of ``--steps`` timed steps (synchronised on CUDA).
- tokens/s = batch x video tokens / step time; samples/s = batch / step time.
- MFU: model FLOPs per step (3 x the forward matmul FLOPs of ``perf.dit.forward_flops``, the one counting
  function) / step time / ``--peak-tflops`` (790: the bf16 dense matmul the lent H100 measured; ``perf/gpu.sh``
  also rates it against the ceiling measured in the same run). HFU adds the recomputed forward of activation
  checkpointing (4 x forward): what the hardware actually executed.
- Peak memory: CUDA ``max_memory_allocated`` over the timed steps (weights, gradients, AdamW state and
  activations: the whole working set of one worker); CPU the process's peak resident set over the timed steps
  (``VmHWM`` after a ``clear_refs`` reset; includes the torch runtime).

The hook for the distributed trainer: ``time_train_step(step, device=..., warmup=..., steps=...)`` times any
zero-argument step callable the same way (a Ray Train / FSDP2 step of ``wanmodel.train``, say), and
``throughput(case, timing, peak_tflops)`` turns the timing into the same figures, so the Ray/FSDP path can be set
against ``plain_step`` on the same data in the same run. ``--ray-workers`` (default 1,2 on CPU, none on CUDA)
does that comparison: overhead = the slowest worker's median step time / the plain loop's - 1, each worker
doing the plain loop's batch (Ray start-up, process group, model build and warmup are outside the timing); the
plain loop and every worker get the same threads (``--threads``, default the cores / the largest worker count).
``--ray-layouts`` times 2+ workers once per way of holding the weights (``perf.train_ray.LAYOUTS``: FSDP2 ZeRO-3,
ZeRO-2-like without the backward's re-gather, or full replicas under DDP). For 2+ workers on CPU the same
trainer step also runs on as many processes without Ray (``perf.train_ray.spawned_case``: torch.multiprocessing,
gloo): the "no Ray" row is the distributed step's own cost, the rest of the Ray row's is Ray Train's runtime.
Each row also says where the CPU went over the timed steps: the cores the workers kept busy and those every other
process did (on a machine with no core to spare, Ray's own processes, about 1 % of a core each, take theirs from
the workers), and in the JSON each worker's CPU by thread (``step``: the thread that ran the steps).
On CPU (gloo, one core per worker) the collectives are a fixed cost per step that does not overlap the compute,
so the overhead falls with the batch per worker (``--batch``) and with gradient accumulation (``--grad-accum N``:
the batch in N micro-batches, in the plain loop and in every worker alike; the trainer's ``grad_accum_steps``
reduces the gradients once, after the last).
Without it the module imports torch, einops (through the model) and this repository's ``wanmodel`` only: Ray is
imported by ``perf.train_ray`` when a comparison runs.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from perf.dit import PEAK_TFLOPS, Case, forward_flops, num_tokens
from perf.measure import machine, peak_mb, reset_peak, sync, write_result
from wanmodel.diffusion.flow_matching import flow_matching_loss
from wanmodel.models.dit import WanDiT
from wanmodel.parallel.parallelize import (
    ParallelPlan,
    activation_offload,
    parallelize_dit,
)

CPU_CASES = (("tiny", None), ("1.3B", 2))


@dataclass(frozen=True)
class TrainCase(Case):
    """A ``perf.dit`` shape (config, layers, frames, size, batch, text tokens, device, attention backend) and how
    the training step saves memory."""

    activation_checkpointing: bool = True
    offload_activations: bool = False
    grad_accum: int = 1  # micro-batches per step (the batch split evenly; one optimizer step, one reduction)
    compile: bool = False  # torch.compile each block (ParallelPlan.compile)

    def fields(self) -> dict[str, Any]:
        """The case for the JSON, without ``perf.dit``'s forward-only knobs (dtype, autocast, grad_checkpointing):
        the training step sets its own precision (bf16 autocast on CUDA) and checkpointing."""
        return {k: v for k, v in asdict(self).items() if k not in ("dtype", "autocast", "grad_checkpointing")}

    @property
    def shape(self) -> Case:
        """The ``perf.dit`` case of the same shape (config, latent grid, label)."""
        return Case(**{name: getattr(self, name) for name in Case.__dataclass_fields__})


# ------------------------------------------------------------------------------------------- the loop
def build_training(case: TrainCase, *, lr: float, seed: int = 0) -> tuple[WanDiT, torch.optim.Optimizer]:
    """Float32 model on the device, checkpointing as ``parallelize_dit`` applies it, and AdamW."""
    torch.manual_seed(seed)
    model = WanDiT.from_config(case.shape.dit_config, device=case.device, attention_backend=case.attention_backend)
    plan = ParallelPlan(activation_checkpointing=case.activation_checkpointing,
                        offload_activations=case.offload_activations, compile=case.compile)
    model = parallelize_dit(model.train(), None, plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.01,
                                  fused=case.device == "cuda")
    return model, optimizer


def make_batch(case: TrainCase, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random clean latents [B, 16, F, H, W] and text embeddings [B, L, text_dim] on the device."""
    generator = torch.Generator().manual_seed(seed)
    config = case.shape.dit_config
    latents = torch.randn(case.batch, 16, *case.shape.latent_grid, generator=generator)
    context = torch.randn(case.batch, case.text_tokens, config.text_dim, generator=generator)
    return {"latents": latents.to(case.device), "context": context.to(case.device)}


def plain_step(model: WanDiT, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], case: TrainCase,
               *, clip_norm: float = 1.0, seed: int = 2) -> Callable[[], torch.Tensor]:
    """One training step of the plain loop as a zero-argument callable returning the (device) loss."""
    generator = torch.Generator(device=case.device).manual_seed(seed)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if case.device == "cuda"
                else contextlib.nullcontext())

    parts = list(zip(batch["latents"].chunk(case.grad_accum), batch["context"].chunk(case.grad_accum)))

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=case.device)
        for latents, context in parts:  # gradient accumulation over the micro-batches
            with autocast, activation_offload(case.offload_activations):
                loss = flow_matching_loss(model, latents, generator=generator, context=context) / len(parts)
            loss.backward()
            total += loss.detach().float()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        return total
    return step


# ------------------------------------------------------------------------------------ the timing hook
def time_train_step(step: Callable[[], Any], *, device: str, warmup: int = 2, steps: int = 5) -> dict[str, Any]:
    """Time any zero-argument training step: ``warmup`` untimed calls, then ``steps`` timed ones (synchronised),
    with the peak memory over the timed calls. The hook through which the distributed trainer's step is compared
    with ``plain_step``. Returns step times, their median, the peak MB and the losses the step returned."""
    for _ in range(warmup):
        step()
    sync(device)
    gc.collect()
    reset_peak(device)
    times, losses = [], []
    for _ in range(steps):
        sync(device)
        begin = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - begin)
        losses.append(loss)
    return {"step_s": statistics.median(times), "min_step_s": min(times), "runs_s": times,
            "peak_mb": peak_mb(device),
            "losses": [float(loss) for loss in losses if loss is not None]}


def throughput(case: TrainCase, timing: dict[str, Any], peak_tflops: float) -> dict[str, Any]:
    """tokens/s, samples/s, model TFLOP/s, MFU and HFU of a timed step of ``case``'s shape."""
    shape = case.shape
    config = shape.dit_config
    forward = forward_flops(config, shape.latent_grid, batch=case.batch, text_len=config.text_len)
    model_flops = 3 * forward
    hardware_flops = (4 if case.activation_checkpointing else 3) * forward
    step_s = timing["step_s"]
    return {"tokens": case.batch * num_tokens(config, shape.latent_grid),
            "tokens_per_s": case.batch * num_tokens(config, shape.latent_grid) / step_s,
            "samples_per_s": case.batch / step_s, "forward_gflop": forward / 1e9,
            "model_tflops": model_flops / step_s / 1e12, "mfu": model_flops / step_s / 1e12 / peak_tflops,
            "hfu": hardware_flops / step_s / 1e12 / peak_tflops}


# --------------------------------------------------------------------------------------------- driver
def run_case(case: TrainCase, *, warmup: int, steps: int, lr: float, peak_tflops: float) -> dict[str, Any]:
    """Build, time and rate one case; an out-of-memory is recorded in the result, not raised."""
    result: dict[str, Any] = {"case": case.shape.label, **case.fields(), "latent_grid": list(case.shape.latent_grid),
                              "num_layers": case.shape.dit_config.num_layers}
    try:
        model, optimizer = build_training(case, lr=lr)
        result["parameters"] = sum(param.numel() for param in model.parameters())
        timing = time_train_step(plain_step(model, optimizer, make_batch(case), case), device=case.device,
                                 warmup=warmup, steps=steps)
    except torch.OutOfMemoryError as error:
        result["error"] = f"out of memory: {str(error).splitlines()[0]}"
        return result
    finally:
        model = optimizer = None  # free them before the next case
        gc.collect()
        if case.device == "cuda":
            torch.cuda.empty_cache()
    result.update(timing)
    result.update(throughput(case, timing, peak_tflops))
    return result


def ray_comparison(case: TrainCase, plain: dict[str, Any], workers: list[int], *, threads: int, warmup: int,
                   steps: int, lr: float, layouts: tuple[str, ...] = ("fsdp",)) -> list[dict[str, Any]]:
    """The trainer's Ray Train / FSDP2 step of ``case`` on each worker count, against the plain loop's timing
    ``plain`` of the same batch: tokens/s per worker and in all, each worker's peak memory, and
    overhead = Ray step time per worker / plain step time - 1 (Ray start-up excluded; ``perf.train_ray``)."""
    from perf.train_ray import concurrent_plain, ray_case

    rows = []
    runs = [(count, layout) for count in workers for layout in (layouts if count > 1 else layouts[:1])]
    plain_together: dict[int, dict[str, Any]] = {}
    for count, layout in runs:
        try:
            timed = ray_case(case, workers=count, threads=threads, warmup=warmup, steps=steps, lr=lr, layout=layout)
        except Exception as error:  # noqa: BLE001 -- a failed Ray run is recorded, the benchmark goes on
            rows.append({"workers": count, "layout": layout,
                         "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"})
            continue
        _against_plain(timed, plain)
        if count > 1:  # against as many plain loops at once: the machine's share taken out
            if count not in plain_together:
                try:
                    plain_together[count] = concurrent_plain(case, count=count, threads=threads, warmup=warmup,
                                                             steps=steps, lr=lr)
                except RuntimeError as error:  # recorded; the Ray figures stand without this baseline
                    plain_together[count] = {"error": str(error)}
            baseline = plain_together[count]
            timed["plain_together"] = baseline
            if "step_s" in baseline:
                timed["overhead_vs_together"] = timed["step_s"] / baseline["step_s"] - 1
            if case.device == "cpu":
                timed["without_ray"] = _without_ray(case, plain, count, layout, threads=threads, warmup=warmup,
                                                    steps=steps, lr=lr)
        rows.append(timed)
    return rows


def _without_ray(case: TrainCase, plain: dict[str, Any], count: int, layout: str, **timing: Any) -> dict[str, Any]:
    """The same distributed step on ``count`` processes without Ray (``perf.train_ray.spawned_case``), with its
    overhead against the plain loop: the part of the Ray path's overhead that is the FSDP2/DDP step's own."""
    from perf.train_ray import spawned_case

    try:
        timed = spawned_case(case, workers=count, layout=layout, **timing)
    except Exception as error:  # noqa: BLE001 -- recorded; the Ray figures stand without this split
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    return _against_plain(timed, plain)


def _against_plain(timed: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s per worker and in all, and each worker's overhead over the plain loop (the slowest worker's is the
    row's); ``timed`` gains the figures and is returned."""
    for worker in timed["per_worker"]:
        worker["tokens_per_s"] = plain["tokens"] / worker["step_s"]
        worker["overhead"] = worker["step_s"] / plain["step_s"] - 1
        worker["overhead_min"] = worker["min_step_s"] / plain["min_step_s"] - 1  # fastest steps: less noise
    timed["tokens_per_s"] = sum(w["tokens_per_s"] for w in timed["per_worker"])
    timed["overhead"] = max(w["overhead"] for w in timed["per_worker"])
    timed["overhead_min"] = max(w["overhead_min"] for w in timed["per_worker"])
    _cores(timed)
    return timed


def _cores(timed: dict[str, Any]) -> None:
    """Where the machine's CPU went over the timed steps: ``worker_cores``, the cores the workers' processes kept
    busy (1 each when nothing waits), and ``other_cores``, what every other process used at the same time (Ray's
    raylet, GCS and helper actors; the spawned run's parent), from the workers' ``/proc/stat`` readings."""
    workers = timed["per_worker"]
    timed["worker_cores"] = sum(w["cpu_per_wall"] for w in workers)
    busy = [w.get("machine_busy_cores") for w in workers]
    if busy and all(b is not None for b in busy):
        timed["other_cores"] = sum(busy) / len(busy) - timed["worker_cores"]


def print_table(result: dict[str, Any]) -> None:
    machine = result["machine"]
    compiled = " (blocks compiled)" if result["cases"] and result["cases"][0].get("compile") else ""
    print(f"DiT training step, plain loop{compiled}, on {result['device']} ({machine.get('gpu', machine['cpu'])}, torch "
          f"{result['torch']}, "
          f"{result['threads']} threads, median of {result['steps']} steps after {result['warmup']})")
    print(f"{'case':>16} {'tokens':>6} {'AC':>3} {'step s':>8} {'tokens/s':>9} {'samples/s':>9} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'HFU':>6} {'peak MB':>9} {'loss':>8}")
    for case in result["cases"]:
        if "error" in case:
            print(f"{case['case']:>16} {case['error']}")
            continue
        print(f"{case['case']:>16} {case['tokens']:>6} {'on' if case['activation_checkpointing'] else 'off':>3} "
              f"{case['step_s']:>8.3f} {case['tokens_per_s']:>9.1f} {case['samples_per_s']:>9.3f} "
              f"{case['model_tflops']:>8.4g} {case['mfu']:>6.1%} {case['hfu']:>6.1%} {case['peak_mb']:>9.1f} "
              f"{case['losses'][-1]:>8.4f}")
    print(f"MFU: 3 x analytic forward matmul FLOPs / step time / {result['peak_tflops']:g} TFLOP/s; HFU counts the "
          f"recomputed forward too (4 x with activation checkpointing)")
    print(f"memory: {result['memory_method']}")
    if any(case.get("ray") for case in result["cases"]):
        print_ray_table(result)


def _row_figures(timed: dict[str, Any]) -> str:
    workers = timed["per_worker"]
    per = "/".join(f"{w['tokens_per_s']:.1f}" for w in workers)
    peaks = "/".join(f"{w['peak_mb']:.0f}" for w in workers)
    other = f"{timed['other_cores']:.2f}" if "other_cores" in timed else "-"
    return (f"{timed['step_s']:>8.3f} {per:>15} {timed['tokens_per_s']:>12.1f} {peaks:>24} "
            f"{timed['overhead']:>+9.1%} {timed['overhead_min']:>+9.1%} {timed['worker_cores']:>7.2f} {other:>6}")


def print_ray_table(result: dict[str, Any]) -> None:
    accum = result.get("grad_accum", 1)
    print("\nRay Train / FSDP2 / DDP step against the plain loop, same batch per worker"
          + (f" in {accum} micro-batches (one gradient reduction per step)" if accum > 1 else "") + ", "
          f"{result['ray_threads_per_worker']} thread(s) per worker and in the plain loop; Ray start-up excluded")
    print(f"{'case':>16} {'path':>19} {'step s':>8} {'tokens/s/worker':>15} {'tokens/s all':>12} "
          f"{'peak MB/worker':>24} {'overhead':>9} {'(fastest)':>9} {'workers':>7} {'others':>6} {'vs plain xN':>11}")
    for case in result["cases"]:
        if "error" in case:
            continue
        print(f"{case['case']:>16} {'plain':>19} {case['step_s']:>8.3f} {case['tokens_per_s']:>15.1f} "
              f"{case['tokens_per_s']:>12.1f} {case['peak_mb']:>24.0f} {'':>9}")
        for ray in case.get("ray", []):
            path = f"ray x{ray['workers']}" + (f" {ray['layout']}" if ray["workers"] > 1 else "")
            if "error" in ray:
                print(f"{case['case']:>16} {path:>19} {ray['error']}")
                continue
            print(f"{case['case']:>16} {path:>19} {_row_figures(ray)} "
                  + (f"{ray['overhead_vs_together']:>+11.1%}" if "overhead_vs_together" in ray else f"{'':>11}"))
            bare = ray.get("without_ray")
            if bare is not None:
                path = f"no Ray x{ray['workers']} {ray['layout']}"
                print(f"{case['case']:>16} {path:>19} " + (bare["error"] if "error" in bare else _row_figures(bare)))
    print("overhead: the slowest worker's median step time / the plain loop's - 1 (the same batch, the same "
          "threads; fastest: of the fastest steps, less sensitive to a loaded machine); vs plain xN: against N plain "
          "loops run at once, each in its own process (the machine's contention taken out); no Ray: the same trainer "
          "step on processes started by torch.multiprocessing (the distributed step's own cost, without Ray Train's "
          "worker runtime); peak MB: each worker process's resident high-water mark over the timed steps; workers / "
          "others: the cores the workers' processes and all other processes kept busy over the timed steps")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="DiT config name (default: the CPU cases tiny and 1.3B[2 blocks])")
    parser.add_argument("--layers", type=int, help="cut the config to this many blocks")
    parser.add_argument("--frames", type=int, default=5, help="video frames (1 + 4k)")
    parser.add_argument("--height", type=int, default=128, help="pixels (multiple of 16)")
    parser.add_argument("--width", type=int, default=128, help="pixels (multiple of 16)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per step: the batch split evenly, gradients accumulated, one reduction")
    parser.add_argument("--text-tokens", type=int, default=512, help="prompt tokens (at most 512)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--attention-backend", default="auto", choices=["auto", "sdpa", "flash", "sage"])
    parser.add_argument("--no-activation-checkpointing", action="store_true")
    parser.add_argument("--offload-activations", action="store_true", help="saved activations in CPU memory")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (compiled in the warm-up)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="MFU ceiling")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--ray-workers", help="Ray Train / FSDP2 worker counts to set against the plain loop, "
                        "comma-separated (default: 1,2 on CPU, none on CUDA; 0: none)")
    parser.add_argument("--ray-layouts", default="fsdp",
                        help="how 2+ workers hold the weights, comma-separated: fsdp (ZeRO-3), zero2 (gathered blocks "
                             "kept for the backward), replicate (DDP); default fsdp")
    parser.add_argument("--out", default="perf/results/train.json")
    args = parser.parse_args(argv)
    if not 1 <= args.text_tokens <= 512:
        parser.error(f"--text-tokens must be in [1, 512], got {args.text_tokens}")
    if args.grad_accum < 1 or args.batch % args.grad_accum:
        parser.error(f"--grad-accum must divide --batch {args.batch}, got {args.grad_accum}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    from perf.train_ray import LAYOUTS

    args.ray_layouts = tuple(part.strip() for part in args.ray_layouts.split(",") if part.strip())
    if not args.ray_layouts or set(args.ray_layouts) - set(LAYOUTS):
        parser.error(f"--ray-layouts takes some of {sorted(LAYOUTS)}, got {args.ray_layouts!r}")
    spec = args.ray_workers if args.ray_workers is not None else ("1,2" if args.device == "cpu" else "0")
    try:
        args.ray_workers = [n for n in (int(part) for part in spec.split(",") if part.strip()) if n > 0]
    except ValueError:
        parser.error(f"--ray-workers takes comma-separated worker counts, got {spec!r}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.ray_workers and not args.threads:  # every worker gets the plain loop's threads: they must all fit
        args.threads = max(1, (os.cpu_count() or 1) // max(args.ray_workers))
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = ((args.config, args.layers),) if args.config else CPU_CASES
    cases = [TrainCase(config=name, layers=layers, frames=args.frames, height=args.height, width=args.width,
                       batch=args.batch, text_tokens=args.text_tokens, device=args.device,
                       activation_checkpointing=not args.no_activation_checkpointing,
                       offload_activations=args.offload_activations, attention_backend=args.attention_backend,
                       grad_accum=args.grad_accum, compile=args.compile)
             for name, layers in specs]
    for case in cases:
        case.shape.latent_grid  # noqa: B018 -- a bad frame count or size fails here, before any model is built
    result = {
        "device": args.device, "machine": machine(args.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup, "lr": args.lr,
        "grad_accum": args.grad_accum,
        "peak_tflops": args.peak_tflops, "precision": "bf16 autocast" if args.device == "cuda" else "float32",
        "memory_method": ("cuda max_memory_allocated over the timed steps (weights, grads, AdamW state, activations)"
                          if args.device == "cuda" else "peak resident set (VmHWM) of the process over the timed "
                                                        "steps, torch runtime included"),
        "cases": [run_case(case, warmup=args.warmup, steps=args.steps, lr=args.lr, peak_tflops=args.peak_tflops)
                  for case in cases],
    }
    if args.ray_workers:
        result["ray_threads_per_worker"] = torch.get_num_threads()
        result["overhead_definition"] = ("slowest Ray worker's median step time / plain loop's median step time "
                                         "- 1; Ray start-up, process group and model build excluded; "
                                         "overhead_vs_together: against the slowest of N plain loops run at once")
        for case, row in zip(cases, result["cases"]):
            if "error" not in row:
                row["ray"] = ray_comparison(case, row, args.ray_workers, threads=torch.get_num_threads(),
                                            warmup=args.warmup, steps=args.steps, lr=args.lr,
                                            layouts=args.ray_layouts)
    print_table(result)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
