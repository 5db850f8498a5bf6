"""Wan DiT forward and forward+backward time, peak memory and achieved TFLOP/s: ours next to diffusers'
``WanTransformer3DModel``, same weights and inputs, one run.

    python -m perf.dit                                   # CPU: tiny and a 2-block slice of the 1.3B shapes
    python -m perf.dit --device cuda --config 1.3B --frames 81 --height 480 --width 832 --dtype bf16
    options: [--layers N] [--batch 1] [--text-tokens 512] [--repeat 3] [--autocast] [--grad-checkpointing]
             [--attention-backend auto|sdpa|flash|sage] [--no-backward] [--no-memory] [--no-reference]
             [--threads N] [--out perf/results/dit.json]

Training at 480p (32,760 tokens) keeps ~5 GB of activations per block of the 1.3B model, so ``train`` there needs
``--grad-checkpointing`` (an out-of-memory is recorded, not fatal). ``--frames/--height/--width`` are in pixels; the latent grid is what the Wan-VAE makes of them (1 + (frames-1)/4,
height/8, width/8), so 81x480x832 is 21x60x104 latents = 32,760 tokens. Without ``--config`` the CPU default runs
two cases: ``tiny`` and ``1.3B`` cut to 2 blocks, both at 5 frames of 128x128 (128 tokens) and a 512-token prompt.

- Weights: every parameter random (fan-in scaled, as in the parity tests), ours copied into diffusers. ``--dtype
  bf16`` casts the weights (ours with ``set_dtype``, which keeps the time MLP and modulation in float32;
  diffusers with ``.to``); ``--autocast`` keeps float32 weights and runs under bf16 autocast instead.
- Time: one warm-up call each, then the median of ``--repeat`` calls, ours and diffusers alternating (CPU: one
  thread unless ``--threads``). "fwd" is a no-grad forward; "train" is forward, mean-square loss, backward, and
  dropping the gradients.
- TFLOP/s: matmul FLOPs counted analytically (patch embedding, text/time/image MLPs, q/k/v/o and MLP linears, the
  two attention matmuls of self- and cross-attention, head; train = 3x forward) over the measured time, and its
  fraction of 790 TFLOP/s (bf16 dense matmul measured on the H100 we are lent).
- Memory: peak above what is live before the call (weights, inputs). CPU: a fresh child process per measurement;
  "MB" is the peak of torch's CPU allocator events (``torch.profiler``, ``profile_memory=True``) and "RSS MB" the
  process view (VmHWM - VmRSS), as in ``perf/vae.py``. CUDA: ``torch.cuda.max_memory_allocated``.
- Agreement: max abs difference of the forward outputs, ours vs diffusers.

diffusers is imported only when it is installed and not turned off (``--no-reference``), so a GPU box with torch
alone measures ours. Ratios are ours / diffusers (below 1.0 is better for us).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
from perf.vae import REPO_ROOT
from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.models.dit_adapters import config_to_diffusers, to_diffusers_state_dict
from wanmodel.models.flops import IMAGE_TOKENS, dit_forward_flops
from wanmodel.models.random_init import randomize_

PEAK_TFLOPS = 790.0  # bf16 dense matmul on the lent H100 (shared/notes/ENVIRONMENT.md)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IMPLS = ("ours", "diffusers")
OPS = ("fwd", "train")
VAE_STRIDE = (4, 8, 8)
CPU_CASES = (("tiny", None), ("1.3B", 2))


@dataclass(frozen=True)
class Case:
    config: str
    layers: int | None
    frames: int
    height: int
    width: int
    batch: int = 1
    text_tokens: int = 512
    dtype: str = "fp32"
    autocast: bool = False
    device: str = "cpu"
    attention_backend: str = "auto"
    grad_checkpointing: bool = False

    @property
    def dit_config(self) -> DiTConfig:
        config = DiTConfig.named(self.config)
        return config if self.layers is None else DiTConfig.named(self.config, num_layers=self.layers)

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        if (self.frames - 1) % VAE_STRIDE[0] or self.height % 16 or self.width % 16:
            raise ValueError(f"frames must be 1 + 4k and height/width multiples of 16, got "
                             f"{self.frames}x{self.height}x{self.width}")
        return 1 + (self.frames - 1) // VAE_STRIDE[0], self.height // VAE_STRIDE[1], self.width // VAE_STRIDE[2]

    @property
    def label(self) -> str:
        return self.config + (f"[{self.layers} blocks]" if self.layers is not None else "")


# ------------------------------------------------------------------------------------------------ FLOPs
def num_tokens(config: DiTConfig, grid: tuple[int, int, int]) -> int:
    return math.prod(size // patch for size, patch in zip(grid, config.patch_size))


def forward_flops(config: DiTConfig, grid: tuple[int, int, int], *, batch: int = 1,
                  text_len: int | None = None) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward of ``batch`` samples on the latent ``grid``: the model
    core's one count (``wanmodel.models.flops.dit_forward_flops``), with ``text_len`` text tokens (default: the
    config's, which the model pads to)."""
    if text_len is not None:
        config = dataclasses.replace(config, text_len=text_len)
    return batch * dit_forward_flops(config, (config.in_dim, *grid))


# ----------------------------------------------------------------------------------------------- models
def diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def build_models(case: Case, *, reference: bool, randomize: bool = True, seed: int = 3
                 ) -> tuple[WanDiT, torch.nn.Module | None]:
    """(ours, diffusers or None), eval mode, identical weights, on the case's device and dtype."""
    config = case.dit_config
    ours = WanDiT(config, attention_backend=case.attention_backend).eval()
    if randomize:
        randomize_(ours, seed)
    ref = None
    if reference:
        import diffusers

        kwargs = {key: value for key, value in config_to_diffusers(config).items() if key != "_class_name"}
        ref = diffusers.WanTransformer3DModel(**kwargs).eval()
        ref.load_state_dict(to_diffusers_state_dict(ours.state_dict()), strict=True)
        ref = ref.to(case.device)
        if case.dtype != "fp32":
            ref = ref.to(DTYPES[case.dtype])
        if case.grad_checkpointing:
            ref.enable_gradient_checkpointing()
    ours = ours.to(case.device)
    if case.dtype != "fp32":
        ours.set_dtype(DTYPES[case.dtype])
    ours.gradient_checkpointing = case.grad_checkpointing
    return ours, ref


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    config = case.dit_config
    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[case.dtype]
    inputs = {
        "x": torch.randn(case.batch, 16, *case.latent_grid, generator=generator),
        "timestep": torch.linspace(999.0, 500.0, case.batch),
        "context": torch.randn(case.batch, case.text_tokens, config.text_dim, generator=generator),
    }
    if config.is_i2v:
        inputs["clip_fea"] = torch.randn(case.batch, config.image_tokens or IMAGE_TOKENS, config.image_dim,
                                        generator=generator)
        inputs["y"] = torch.randn(case.batch, config.in_dim - 16, *case.latent_grid, generator=generator)
    return {key: value.to(device=case.device, dtype=dtype if key != "timestep" else torch.float32)
            for key, value in inputs.items()}


def forward_fn(impl: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor], case: Case
               ) -> Callable[[], torch.Tensor]:
    autocast = (torch.autocast(torch.device(case.device).type, dtype=torch.bfloat16) if case.autocast
                else contextlib.nullcontext())
    if impl == "ours":
        def run() -> torch.Tensor:
            with autocast:
                return model(**inputs)
        return run
    # diffusers: x and y concatenated, context zero-padded to 512 tokens (what ours does inside)
    x = torch.cat([inputs["x"], inputs["y"]], dim=1) if "y" in inputs else inputs["x"]
    context = torch.nn.functional.pad(inputs["context"], (0, 0, 0, 512 - inputs["context"].shape[1]))

    def run_reference() -> torch.Tensor:
        with autocast:
            return model(x, inputs["timestep"], context, encoder_hidden_states_image=inputs.get("clip_fea"),
                         return_dict=False)[0]
    return run_reference


def operation(op: str, model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    if op == "fwd":
        def run_forward() -> None:
            with torch.no_grad():
                forward()
        return run_forward

    def run_train() -> None:
        forward().float().square().mean().backward()
        model.zero_grad(set_to_none=True)
    return run_train


# ------------------------------------------------------------------------------------------- measuring
def time_calls(fns: dict[str, Callable[[], None]], *, repeat: int, device: str) -> dict[str, list[float]]:
    """One warm-up call each, then ``repeat`` timed calls, alternating the order (shared with perf.vae)."""
    return time_ops(fns, repeat=repeat, device=device, no_grad=False)


def peak_memory_in_process(impl: str, op: str, case: dict[str, Any]) -> dict[str, float]:
    """Peak MB of one call above what is live before it (see the module docstring)."""
    case_ = Case(**case)
    ours, ref = build_models(case_, reference=impl == "diffusers", randomize=False)
    model = ours if impl == "ours" else ref
    if impl == "diffusers":
        del ours
    if case_.device == "cpu":  # values do not change memory; keep them small and finite, cheaply
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, 0.02)
    fn = operation(op, model, forward_fn(impl, model, make_inputs(case_), case_))
    fn()  # warm-up: one-time kernel/thread-pool setup is not part of the working set
    release_freed_memory()
    if case_.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"tensor_mb": (torch.cuda.max_memory_allocated() - before) / 2**20}
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current RSS
    before = proc_status_kb("VmRSS") * 1024
    fn()
    rss_peak = proc_status_kb("VmHWM") * 1024 - before
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return {"tensor_mb": tensor_peak_bytes(prof) / 2**20, "rss_mb": rss_peak / 2**20}


def peak_memory(impl: str, op: str, case: Case) -> dict[str, float]:
    """CPU: ``peak_memory_in_process`` in a fresh child process; CUDA: in this process."""
    spec = {key: getattr(case, key) for key in Case.__dataclass_fields__}
    if case.device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        return peak_memory_in_process(impl, op, spec)
    done = subprocess.run([sys.executable, "-m", "perf.dit", "--memory-child",
                           json.dumps({"impl": impl, "op": op, "case": spec}), "--threads",
                           str(torch.get_num_threads())], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False, env=_child_env())
    if done.returncode != 0:
        raise RuntimeError(f"memory child {impl} {op} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# ---------------------------------------------------------------------------------------------- driver
def benchmark_case(case: Case, *, repeat: int, reference: bool, backward: bool, memory: bool) -> dict[str, Any]:
    ours, ref = build_models(case, reference=reference)
    models = {"ours": ours, "diffusers": ref}
    impls = IMPLS if reference else ("ours",)
    inputs = make_inputs(case)
    forwards = {impl: forward_fn(impl, models[impl], inputs, case) for impl in impls}
    config = case.dit_config
    flops = forward_flops(config, case.latent_grid, batch=case.batch, text_len=config.text_len)
    grid = case.latent_grid
    tokens = num_tokens(config, grid)
    result: dict[str, Any] = {
        "case": case.label, "config": case.config, "layers": config.num_layers, "frames": case.frames,
        "height": case.height, "width": case.width, "latent_grid": list(grid), "tokens": tokens,
        "batch": case.batch, "text_tokens": case.text_tokens, "dtype": case.dtype, "autocast": case.autocast,
        "attention_backend": case.attention_backend, "grad_checkpointing": case.grad_checkpointing,
        "forward_gflop": flops / 1e9,
    }
    if reference:
        with torch.no_grad():
            result["max_abs_diff"] = (forwards["ours"]().float() - forwards["diffusers"]().float()).abs().max().item()
    for op in OPS if backward else OPS[:1]:
        fns = {impl: operation(op, models[impl], forwards[impl]) for impl in impls}
        try:
            times = time_calls(fns, repeat=repeat, device=case.device)
        except torch.OutOfMemoryError as error:  # e.g. train at 480p without --grad-checkpointing
            hint = "" if case.grad_checkpointing else " (try --grad-checkpointing)"
            result[f"{op}_error"] = f"out of memory{hint}: {str(error).splitlines()[0]}"
            for model in models.values():
                if model is not None:
                    model.zero_grad(set_to_none=True)
            continue
        op_flops = flops * (3 if op == "train" else 1)
        for impl in impls:
            seconds = statistics.median(times[impl])
            result[f"{op}_{impl}_s"] = seconds
            result[f"{op}_{impl}_min_s"] = min(times[impl])
            result[f"{op}_{impl}_runs_s"] = times[impl]
            result[f"{op}_{impl}_tflops"] = op_flops / seconds / 1e12
            result[f"{op}_{impl}_peak_fraction"] = op_flops / seconds / 1e12 / PEAK_TFLOPS
            if memory:
                try:  # on CUDA a second copy is built beside the timed one: its out-of-memory keeps the timings
                    peaks = peak_memory(impl, op, case)
                except torch.OutOfMemoryError as error:
                    result[f"{op}_{impl}_mb_error"] = f"out of memory: {str(error).splitlines()[0]}"
                    continue
                result[f"{op}_{impl}_mb"] = peaks["tensor_mb"]
                if "rss_mb" in peaks:
                    result[f"{op}_{impl}_rss_mb"] = peaks["rss_mb"]
        if reference:
            result[f"{op}_time_ratio"] = result[f"{op}_ours_s"] / result[f"{op}_diffusers_s"]
            result[f"{op}_min_time_ratio"] = result[f"{op}_ours_min_s"] / result[f"{op}_diffusers_min_s"]
            if memory and f"{op}_ours_mb" in result and f"{op}_diffusers_mb" in result:
                result[f"{op}_mem_ratio"] = result[f"{op}_ours_mb"] / max(result[f"{op}_diffusers_mb"], 1e-9)
    del ours, ref, models, forwards
    gc.collect()
    return result


def print_table(result: dict[str, Any]) -> None:
    reference = result["reference"]
    print(f"Wan DiT on {result['device']} ({result['machine']}, {result['threads']} threads, torch "
          f"{result['torch']}, median of {result['repeat']})"
          + ("" if reference else "  -- ours only: no diffusers comparison"))
    header = f"{'case':>16} {'tokens':>6} {'op':>5} {'ours s':>8} {'TFLOP/s':>8} {'of 790':>7}"
    if reference:
        header += f" {'diff. s':>8} {'ratio':>6} {'min r.':>6}"
    header += f" {'ours MB':>9}" + (f" {'diff. MB':>9} {'ratio':>6}" if reference else "")
    header += f" {'ours RSS':>9}" + (f" {'diff. RSS':>9}" if reference else "")
    print(header)
    nan = float("nan")
    for case in result["cases"]:
        for op in OPS:
            if f"{op}_error" in case:
                print(f"{case['case']:>16} {case['tokens']:>6} {op:>5} {case[f'{op}_error']}")
                continue
            if f"{op}_ours_s" not in case:
                continue
            row = (f"{case['case']:>16} {case['tokens']:>6} {op:>5} {case[f'{op}_ours_s']:>8.3f} "
                   f"{case[f'{op}_ours_tflops']:>8.3f} {case[f'{op}_ours_peak_fraction']:>7.1%}")
            if reference:
                row += (f" {case[f'{op}_diffusers_s']:>8.3f} {case[f'{op}_time_ratio']:>6.2f}"
                        f" {case[f'{op}_min_time_ratio']:>6.2f}")
            row += f" {case.get(f'{op}_ours_mb', nan):>9.1f}"
            if reference:
                row += f" {case.get(f'{op}_diffusers_mb', nan):>9.1f} {case.get(f'{op}_mem_ratio', nan):>6.2f}"
            row += f" {case.get(f'{op}_ours_rss_mb', nan):>9.1f}"
            if reference:
                row += f" {case.get(f'{op}_diffusers_rss_mb', nan):>9.1f}"
            print(row)
        if "max_abs_diff" in case:
            print(f"{'':>16} forward max abs diff ours vs diffusers: {case['max_abs_diff']:.2e}")
    print("times: median; 'ratio' = ours / diffusers of the medians, 'min r.' of the fastest runs (steadier on a "
          "busy machine)")
    print("TFLOP/s: analytic matmul FLOPs (train = 3x forward) / median time; 'of 790': fraction of the H100 bf16 "
          "matmul peak")
    print(f"memory: {result['memory_method']}")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="DiT config name (default: the CPU cases tiny and 1.3B[2 blocks])")
    parser.add_argument("--layers", type=int, help="cut the config to this many blocks")
    parser.add_argument("--frames", type=int, default=5, help="video frames (1 + 4k)")
    parser.add_argument("--height", type=int, default=128, help="pixels (multiple of 16)")
    parser.add_argument("--width", type=int, default=128, help="pixels (multiple of 16)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=512, help="prompt tokens before padding to 512")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--autocast", action="store_true", help="float32 weights under bf16 autocast")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--attention-backend", default="auto", choices=["auto", "sdpa", "flash", "sage"])
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for --device cpu, whose "
                        "timings on a shared machine are steadier on one thread; else torch's choice)")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-reference", action="store_true", help="ours only (also automatic without diffusers)")
    parser.add_argument("--out", default="perf/results/dit.json")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: one memory measurement
    args = parser.parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        print(json.dumps(peak_memory_in_process(spec["impl"], spec["op"], spec["case"])))
        return None
    if not 1 <= args.text_tokens <= 512:
        parser.error(f"--text-tokens must be in [1, 512], got {args.text_tokens}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    reference = not args.no_reference and diffusers_available()
    if not args.no_reference and not reference:
        print("diffusers is not installed: measuring ours only")
    specs = ((args.config, args.layers),) if args.config else CPU_CASES
    cases = [Case(config=name, layers=layers, frames=args.frames, height=args.height, width=args.width,
                  batch=args.batch, text_tokens=args.text_tokens, dtype=args.dtype, autocast=args.autocast,
                  device=args.device, attention_backend=args.attention_backend,
                  grad_checkpointing=args.grad_checkpointing) for name, layers in specs]
    result = {
        "device": args.device, "machine": machine(args.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "repeat": args.repeat, "reference": reference,
        "peak_tflops": PEAK_TFLOPS,
        "memory_method": ("cuda max_memory_allocated - memory_allocated before the call" if args.device == "cuda"
                          else "fresh child process per measurement, after one warm-up call: MB = peak of torch CPU "
                               "allocator events (torch.profiler profile_memory) above what was live before the "
                               "call; RSS = VmHWM - VmRSS around one call (includes allocator slack, noisier)"),
        "cases": [benchmark_case(case, repeat=args.repeat, reference=reference, backward=not args.no_backward,
                                 memory=not args.no_memory) for case in cases],
    }
    print_table(result)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
