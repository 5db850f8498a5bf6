"""The machine a benchmark run measures, and its two ceilings measured in the same run: dense matmul TFLOP/s and
device memory-copy bandwidth, so every figure of ``perf/gpu.sh`` can be read against what this very card does.

    python -m perf.gpu_info [--device cuda|cpu] [--smoke] [--out perf/results/gpu_info.json]

- matmul: ``n x n @ n x n`` (bf16 on CUDA, float32 on CPU, where bf16 GEMMs are not what the CPU does best),
  ``2 n^3`` FLOPs per call; one warm-up call, then the best and median of ``--repeat`` timed calls (CUDA events).
  The best is the ceiling: it is what the card can do, and the figures below it are what our code gets of it.
- copy: ``dst.copy_(src)`` of ``--copy-mb`` MiB; 2 x bytes (read + write) per call, best and median.
- attention: torch SDPA with each of its kernels forced (flash, memory-efficient, cuDNN; on the CPU math and
  flash) at the DiT 1.3B's self-attention shape (12 heads of 128, 32,760 tokens: 480p x 81 frames), forward and
  forward+backward, and the kernel SDPA picks by itself. 70 % of the DiT's FLOPs are these matmuls, so this says
  which kernel the ``sdpa`` backend should run and what it can reach. FLOPs: ``4 N^2 D H`` forward, 2.5 x that
  backward (the FlashAttention papers' count). A kernel the device does not support is recorded with its error.
- nominal: the figures measured on the lent H100 before (``shared/notes/ENVIRONMENT.md``: bf16 dense matmul about
  790 TFLOP/s, device copy 3-4.3 TB/s), for the ratio of this run's ceiling to them.

Imports torch only. Writes JSON and prints a short table.
"""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch

from perf.measure import machine, time_calls, write_result

ATTENTION_SHAPE = {"heads": 12, "tokens": 32_760, "head_dim": 128}  # DiT 1.3B, 480p x 81 frames
ATTENTION_SMOKE = {"heads": 2, "tokens": 256, "head_dim": 64}

NOMINAL_MATMUL_TFLOPS = 790.0  # bf16 dense matmul, the lent H100 (shared/notes/ENVIRONMENT.md)
NOMINAL_COPY_GBS = 3350.0  # the H100 SXM's HBM3 figure; measured copies there ran 3-4.3 TB/s


def matmul_ceiling(device: str, n: int, repeat: int) -> dict[str, Any]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = time_calls(lambda: torch.matmul(a, b, out=out), repeat=repeat, device=device)
    flops = 2 * n**3
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "runs_s": times,
            "tflops": flops / min(times) / 1e12, "median_tflops": flops / statistics.median(times) / 1e12}


def copy_ceiling(device: str, megabytes: int, repeat: int) -> dict[str, Any]:
    numel = megabytes * 2**20 // 4
    src = torch.ones(numel, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), repeat=repeat, device=device)
    moved = 2 * numel * 4
    return {"megabytes": megabytes, "runs_s": times, "gbs": moved / min(times) / 1e9,
            "median_gbs": moved / statistics.median(times) / 1e9}


def attention_kernels(device: str, shape: dict[str, int], repeat: int) -> dict[str, Any]:
    """TFLOP/s of SDPA with each kernel forced, forward and forward+backward, and the kernel it picks itself."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    heads, tokens, dim = shape["heads"], shape["tokens"], shape["head_dim"]
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, dim, device=device, dtype=dtype, generator=generator)
               .requires_grad_() for _ in range(3))
    grad = torch.randn(1, heads, tokens, dim, device=device, dtype=dtype, generator=generator)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    forward_flops = 4 * tokens**2 * dim * heads
    kernels = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION") if device == "cuda" else \
        ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")
    result: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), **shape, "kernels": {}}
    try:  # private, so optional: the enum value of the kernel SDPA would pick for these inputs
        result["default"] = SDPBackend(int(torch._fused_sdp_choice(q, k, v))).name
    except Exception as error:  # noqa: BLE001 - a missing private helper only loses this one field
        result["default"] = f"unknown ({type(error).__name__})"
    for name in kernels:
        with sdpa_kernel(getattr(SDPBackend, name)):
            try:
                fwd = time_calls(lambda: sdpa(q.detach(), k.detach(), v.detach()), repeat=repeat, device=device)
                both = time_calls(lambda: torch.autograd.grad(sdpa(q, k, v), (q, k, v), grad), repeat=repeat,
                                  device=device)
            except (RuntimeError, torch.OutOfMemoryError) as error:  # not supported here for these inputs
                result["kernels"][name] = {"error": str(error).splitlines()[0][:300]}
                continue
        result["kernels"][name] = {"fwd_s": min(fwd), "fwd_bwd_s": min(both),
                                   "fwd_tflops": forward_flops / min(fwd) / 1e12,
                                   "fwd_bwd_tflops": 3.5 * forward_flops / min(both) / 1e12}
    return result


def measure(device: str, *, smoke: bool, save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The ceilings, then the attention kernels; ``save`` gets the result before the kernels run, so a kernel
    that brings the process down (a fused kernel's illegal memory access) leaves the ceilings written."""
    sizes = {"n": 256, "copy_mb": 32, "repeat": 3} if smoke else {"n": 8192, "copy_mb": 2048, "repeat": 50}
    result = machine(device)
    result["matmul"] = matmul_ceiling(device, sizes["n"], sizes["repeat"])
    result["copy"] = copy_ceiling(device, sizes["copy_mb"], sizes["repeat"])
    result["nominal"] = {"matmul_tflops": NOMINAL_MATMUL_TFLOPS, "copy_gbs": NOMINAL_COPY_GBS}
    result["smoke"] = smoke
    if save is not None:
        save(result)
    result["attention"] = attention_kernels(device, ATTENTION_SMOKE if smoke else ATTENTION_SHAPE,
                                            repeat=3 if smoke else 5)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['name']} ({result['device']}), torch {result['torch']}"
          + (f", CUDA {result['cuda']}, {result['total_memory_mb'] / 1024:.1f} GiB" if result["device"] == "cuda"
             else f", {result['threads']} threads"))
    matmul, copy = result["matmul"], result["copy"]
    print(f"  matmul {matmul['dtype']} {matmul['n']}^3: {matmul['tflops']:.4g} TFLOP/s best, "
          f"{matmul['median_tflops']:.4g} median ({matmul['tflops'] / NOMINAL_MATMUL_TFLOPS:.1%} of the nominal "
          f"{NOMINAL_MATMUL_TFLOPS:.0f})")
    print(f"  copy {copy['megabytes']} MiB: {copy['gbs']:.4g} GB/s best, {copy['median_gbs']:.4g} median "
          f"({copy['gbs'] / NOMINAL_COPY_GBS:.1%} of the nominal {NOMINAL_COPY_GBS:.0f})")
    attention = result["attention"]
    print(f"  SDPA {attention['dtype']} {attention['heads']} heads x {attention['tokens']} tokens x "
          f"{attention['head_dim']} (picks {attention['default']}):")
    for name, kernel in attention["kernels"].items():
        if "error" in kernel:
            print(f"    {name:<20} not run: {kernel['error']}")
        else:
            print(f"    {name:<20} {kernel['fwd_tflops']:8.4g} TFLOP/s forward, {kernel['fwd_bwd_tflops']:8.4g} "
                  f"forward+backward ({kernel['fwd_s'] * 1e3:.3g} / {kernel['fwd_bwd_s'] * 1e3:.3g} ms)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI): checks the code path only")
    parser.add_argument("--out", default="perf/results/gpu_info.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    result = measure(args.device, smoke=args.smoke, save=lambda ceilings: write_result(args.out, ceilings))
    print_table(result)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
