"""Wan-VAE encode/decode time and peak memory: ours next to diffusers' ``AutoencoderKLWan``, same weights, one run.

    python -m perf.vae [--preset wan2.1|tiny] [--short 9] [--long 33] [--size 64] [--repeat 3]
                       [--dtype float32|bfloat16] [--device cpu|cuda] [--no-reference] [--out perf/results/vae.json]

Both models get the same randomised weights (every parameter random, fan-in scaled, as in the parity test; the
released init zeroes the attention projections, which would make the comparison trivial), then for a short and a
long clip of ``--size`` x ``--size`` pixels:

- time: one warm-up call, then the median of ``--repeat`` calls, ours and diffusers alternating so that noise from
  other work on the machine hits both sides alike. Encode returns the posterior mean; decode clamps to [-1, 1]
  (diffusers always clamps).
- peak memory of one call, above what is live before it (weights and input). On CPU each measurement runs in a
  fresh child process that builds the model, makes the input and does one warm-up call. "MB" is the peak of the
  running sum of torch's CPU allocator events recorded by ``torch.profiler`` (``profile_memory=True``): exactly
  the tensor memory, at op granularity (a buffer an op allocates and frees inside itself is not seen), which
  ``tracemalloc`` cannot see at all. "RSS MB" is the process view: ``VmHWM - VmRSS`` around one call, after
  ``gc.collect`` + glibc ``malloc_trim`` and a peak reset (``/proc/self/clear_refs`` = 5); it adds allocator and
  oneDNN slack and varies by tens of MB between runs. On CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus ``memory_allocated`` before the call.
- agreement: max abs difference of the posterior mean and of the decoded video (short clip), ours vs diffusers.
- flatness: long-clip peak / short-clip peak per implementation (the chunked cache should keep it near 1).

``--no-reference`` times ours only, for a machine with torch but without diffusers. Writes JSON (default
``perf/results/vae.json``) and prints a table; ratios are ours / diffusers (below 1.0 is better for us).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from perf.measure import (
    machine,
    proc_status_kb,
    release_freed_memory,
    tensor_peak_bytes,
    time_ops,
    write_result,
)
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import VAEConfig, WanVAE
from wanmodel.models.vae_adapters import to_diffusers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMPLS = ("ours", "diffusers")
OPS = ("encode", "decode")
REPO_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ models


def build_models(preset: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu", reference: bool = True,
                 randomize: bool = True, seed: int = 3) -> tuple[WanVAE, torch.nn.Module | None]:
    """(ours, diffusers or None) in eval mode with identical weights: ours randomised, copied into diffusers."""
    config = VAEConfig.preset(preset)
    ours = WanVAE(config).eval()
    if randomize:
        randomize_(ours, seed)
    ref = None
    if reference:
        import diffusers

        ref = diffusers.AutoencoderKLWan(
            base_dim=config.base_dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult),
            num_res_blocks=config.num_res_blocks, temperal_downsample=list(config.temperal_downsample),
        ).eval()
        ref.load_state_dict(to_diffusers(ours.state_dict(), config), strict=True)
        # .to(dtype) makes diffusers warn even for float32; only cast when needed
        ref = ref.to(device=device, dtype=None if dtype == torch.float32 else dtype)
    return ours.to(device=device, dtype=dtype), ref


def hw(size: int | str) -> tuple[int, int]:
    """``64`` -> (64, 64); ``"480x832"`` -> (480, 832) (height x width)."""
    if isinstance(size, int) or str(size).isdigit():
        return int(size), int(size)
    height, width = str(size).lower().split("x")
    return int(height), int(width)


def make_video(frames: int, size: int | str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
               seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    video = torch.rand(1, 3, frames, *hw(size), generator=generator) * 2 - 1
    return video.to(device=device, dtype=dtype)


def make_latents(frames: int, size: int | str, config: VAEConfig, *, dtype: torch.dtype = torch.float32,
                 device: str = "cpu", seed: int = 1) -> torch.Tensor:
    """Random latents of the shape ``frames`` x ``size``^2 video encodes to (for decode-only measurements)."""
    generator = torch.Generator().manual_seed(seed)
    latent_frames = 1 + (frames - 1) // config.temporal_factor
    height, width = (side // config.spatial_factor for side in hw(size))
    latents = torch.randn(1, config.z_dim, latent_frames, height, width, generator=generator)
    return latents.to(device=device, dtype=dtype)


def operation(impl: str, op: str, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The call being measured: encode -> posterior mean, decode -> clamped video."""
    if impl == "ours":
        return (lambda x: model.encode(x).mean) if op == "encode" else (lambda z: model.decode(z, clamp=True))
    if impl == "diffusers":
        return (lambda x: model.encode(x).latent_dist.mean) if op == "encode" else (lambda z: model.decode(z).sample)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# ----------------------------------------------------------------------------------------------- memory
def peak_memory_in_process(impl: str, op: str, preset: str, frames: int, size: int | str, *, dtype: str = "float32",
                           device: str = "cpu") -> dict[str, float]:
    """Peak MB of one call above what is live before it (weights + input); see the module docstring.

    ``tensor_mb``: torch allocations (CPU: profiler allocator events; CUDA: max_memory_allocated). ``rss_mb`` (CPU
    only): the process's peak resident set above its resident set before the call.
    """
    torch_dtype = DTYPES[dtype]
    ours, ref = build_models(preset, dtype=torch_dtype, device=device, reference=impl == "diffusers",
                             randomize=False)  # weight values do not change memory; skip the slow init
    model = ours if impl == "ours" else ref
    if impl == "diffusers":
        del ours
    config = VAEConfig.preset(preset)
    inputs = (make_video(frames, size, dtype=torch_dtype, device=device) if op == "encode"
              else make_latents(frames, size, config, dtype=torch_dtype, device=device))
    fn = operation(impl, op, model)
    with torch.no_grad():
        fn(inputs)  # warm-up: one-time kernel/thread-pool setup is not part of the working set
        release_freed_memory()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn(inputs)
            torch.cuda.synchronize()
            return {"tensor_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        before = proc_status_kb("VmRSS") * 1024
        fn(inputs)
        rss_peak = proc_status_kb("VmHWM") * 1024 - before
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(inputs)
    return {"tensor_mb": tensor_peak_bytes(prof) / 2**20, "rss_mb": rss_peak / 2**20}


def peak_memory(impl: str, op: str, preset: str, frames: int, size: int | str, *, dtype: str = "float32",
                device: str = "cpu") -> dict[str, float]:
    """``peak_memory_in_process`` on CPU in a fresh child process, so no earlier measurement's heap is reused."""
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        return peak_memory_in_process(impl, op, preset, frames, size, dtype=dtype, device=device)
    spec = json.dumps({"impl": impl, "op": op, "preset": preset, "frames": frames, "size": size, "dtype": dtype,
                       "device": device})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "perf.vae", "--memory-child", spec], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {spec} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- agreement
def agreement(ours: WanVAE, ref: torch.nn.Module, video: torch.Tensor) -> dict[str, float]:
    """Max abs difference, ours vs diffusers: posterior mean of ``video``, and decoding that mean (clamped)."""
    with torch.no_grad():
        mean = ours.encode(video).mean
        ref_mean = ref.encode(video).latent_dist.mean
        decoded = ours.decode(mean, clamp=True)
        ref_decoded = ref.decode(mean).sample
    return {"mean_max_abs_diff": (mean - ref_mean).abs().max().item(),
            "decoded_max_abs_diff": (decoded - ref_decoded).abs().max().item(),
            "latent_std": mean.float().std().item()}


# ------------------------------------------------------------------------------------------------ driver
def _bind(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: fn(inputs)


def benchmark(preset: str = "wan2.1", short: int = 9, long: int = 33, size: int | str = 64, *, repeat: int = 3,
              dtype: str = "float32", device: str = "cpu", reference: bool = True,
              measure_memory: bool = True) -> dict[str, Any]:
    """All measurements as one dict (see the module docstring); ``reference=False`` measures ours only."""
    torch_dtype = DTYPES[dtype]
    ours, ref = build_models(preset, dtype=torch_dtype, device=device, reference=reference)
    impls = IMPLS if reference else ("ours",)
    models = {"ours": ours, "diffusers": ref}
    clips = {}
    for label, frames in (("short", short), ("long", long)):
        video = make_video(frames, size, dtype=torch_dtype, device=device)
        with torch.no_grad():
            latents = ours.encode(video).mean
        clip: dict[str, Any] = {"frames": frames, "size": size, "latent_shape": list(latents.shape)}
        for op, inputs in (("encode", video), ("decode", latents)):
            fns = {impl: _bind(operation(impl, op, models[impl]), inputs) for impl in impls}
            times = time_ops(fns, repeat=repeat, device=device)
            for impl in impls:
                clip[f"{op}_{impl}_s"] = statistics.median(times[impl])
                clip[f"{op}_{impl}_runs_s"] = times[impl]
                if measure_memory:
                    try:  # on CUDA a second model is built beside the timed one: its out-of-memory keeps the timings
                        peaks = peak_memory(impl, op, preset, frames, size, dtype=dtype, device=device)
                    except torch.OutOfMemoryError as error:
                        clip[f"{op}_{impl}_mb_error"] = f"out of memory: {str(error).splitlines()[0]}"
                        continue
                    clip[f"{op}_{impl}_mb"] = peaks["tensor_mb"]
                    if "rss_mb" in peaks:
                        clip[f"{op}_{impl}_rss_mb"] = peaks["rss_mb"]
            if reference:
                clip[f"{op}_time_ratio"] = clip[f"{op}_ours_s"] / clip[f"{op}_diffusers_s"]
                if measure_memory and f"{op}_ours_mb" in clip and f"{op}_diffusers_mb" in clip:
                    clip[f"{op}_mem_ratio"] = clip[f"{op}_ours_mb"] / max(clip[f"{op}_diffusers_mb"], 1e-9)
        if reference and label == "short":
            clip["agreement"] = agreement(ours, ref, video)
        clips[label] = clip
    flatness = {}
    if measure_memory:
        for impl in impls:
            for op in OPS:
                if f"{op}_{impl}_mb" not in clips["long"] or f"{op}_{impl}_mb" not in clips["short"]:
                    continue  # its memory measurement ran out of memory
                flatness[f"{op}_{impl}"] = clips["long"][f"{op}_{impl}_mb"] / max(clips["short"][f"{op}_{impl}_mb"],
                                                                                  1e-9)
    return {
        "preset": preset, "dtype": dtype, "device": device, "repeat": repeat, "reference": reference,
        "machine": machine(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "memory_method": ("cuda max_memory_allocated - memory_allocated before the call" if device.startswith("cuda")
                          else "fresh child process per measurement, after one warm-up call: MB = peak of torch CPU "
                               "allocator events (torch.profiler profile_memory, op granularity) above what was "
                               "live before the call; rss_mb = VmHWM - VmRSS around one call after malloc_trim and "
                               "a clear_refs peak reset (includes allocator/oneDNN slack, noisier)"),
        "clips": clips, "memory_flatness_long_over_short": flatness,
    }


def print_table(result: dict[str, Any]) -> None:
    reference = result["reference"]
    print(f"Wan-VAE {result['preset']} {result['dtype']} on {result['device']} "
          f"({result['threads']} threads, median of {result['repeat']})"
          + ("" if reference else "  -- ours only (--no-reference): no diffusers comparison"))
    header = f"{'clip':>14} {'op':>7} {'ours s':>9}"
    if reference:
        header += f" {'diff. s':>9} {'ratio':>6}"
    header += f" {'ours MB':>9}"
    if reference:
        header += f" {'diff. MB':>9} {'ratio':>6}"
    header += f" {'ours RSS':>9}" + (f" {'diff. RSS':>9}" if reference else "")
    print(header)
    for label, clip in result["clips"].items():
        name = f"{label} {clip['frames']}x{clip['size']}"
        for op in OPS:
            row = f"{name:>14} {op:>7} {clip[f'{op}_ours_s']:>9.3f}"
            if reference:
                row += f" {clip[f'{op}_diffusers_s']:>9.3f} {clip[f'{op}_time_ratio']:>6.2f}"
            row += f" {clip.get(f'{op}_ours_mb', float('nan')):>9.1f}"
            if reference:
                row += (f" {clip.get(f'{op}_diffusers_mb', float('nan')):>9.1f}"
                        f" {clip.get(f'{op}_mem_ratio', float('nan')):>6.2f}")
            row += f" {clip.get(f'{op}_ours_rss_mb', float('nan')):>9.1f}"
            if reference:
                row += f" {clip.get(f'{op}_diffusers_rss_mb', float('nan')):>9.1f}"
            print(row)
    if result["memory_flatness_long_over_short"]:
        print("memory flatness (long / short peak): " + ", ".join(
            f"{key} {value:.2f}" for key, value in result["memory_flatness_long_over_short"].items()))
    short = result["clips"]["short"]
    if "agreement" in short:
        agree = short["agreement"]
        print(f"agreement on the short clip (ours vs diffusers): posterior mean max abs diff "
              f"{agree['mean_max_abs_diff']:.2e}, decoded max abs diff {agree['decoded_max_abs_diff']:.2e}")
    print(f"memory: {result['memory_method']}")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wan2.1", choices=["wan2.1", "tiny"])
    parser.add_argument("--short", type=int, default=9, help="frames of the short clip (1 + 4k)")
    parser.add_argument("--long", type=int, default=33, help="frames of the long clip (1 + 4k)")
    parser.add_argument("--size", default="64", help="pixels, multiples of 8: 64 (square) or HxW, e.g. 480x832")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-reference", action="store_true", help="ours only (no diffusers on this machine)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--out", default="perf/results/vae.json")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: one memory measurement
    args = parser.parse_args(argv)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        print(json.dumps(peak_memory_in_process(**spec)))
        return None
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    result = benchmark(args.preset, args.short, args.long, args.size, repeat=args.repeat, dtype=args.dtype,
                       device=args.device, reference=not args.no_reference, measure_memory=not args.no_memory)
    print_table(result)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
