"""What every benchmark in ``perf/`` measures with: synchronised timing, peak memory (CUDA allocator, or the CPU
process's high-water mark and torch's CPU allocator events), the machine's description, and the JSON result file.

- ``time_ops``: one warm-up call each, then ``repeat`` timed calls, alternating the order so drift hits all sides
  alike (``perf.dit``, ``perf.vae``, ``perf.sampling``); ``time_calls``: one function, CUDA events on a GPU (no
  host overhead in the figure, for the ceilings of ``perf.gpu_info``).
- ``reset_peak`` / ``peak_mb``: CUDA ``max_memory_allocated``; on CPU the process's ``VmHWM`` after resetting it
  through ``/proc/self/clear_refs`` (Linux).
- ``machine_busy_s`` / ``thread_cpu_s`` / ``thread_cpu_per_wall``: CPU seconds of the whole machine
  (``/proc/stat``) and of each thread of this process (``/proc/self/task``), and where a timed window's CPU went.
- ``tensor_peak_bytes``: peak of the running sum of torch's CPU allocator events in a ``torch.profiler`` profile
  (``profile_memory=True``): tensor memory at op granularity, which ``tracemalloc`` cannot see.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["machine", "machine_busy_s", "peak_mb", "proc_status_kb", "release_freed_memory", "reset_peak", "sync",
           "tensor_peak_bytes", "thread_cpu_per_wall", "thread_cpu_s", "time_calls", "time_ops", "write_result"]


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_ops(fns: dict[str, Callable[[], Any]], *, repeat: int, device: str = "cpu",
             no_grad: bool = True) -> dict[str, list[float]]:
    """One warm-up call each, then ``repeat`` timed calls, alternating the order so drift hits all sides alike."""
    names = list(fns)
    with torch.set_grad_enabled(not no_grad):
        for name in names:
            fns[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for index in range(repeat):
            for name in names if index % 2 == 0 else names[::-1]:
                sync(device)
                start = time.perf_counter()
                fns[name]()
                sync(device)
                times[name].append(time.perf_counter() - start)
    return times


def time_calls(fn: Callable[[], Any], *, repeat: int, device: str) -> list[float]:
    """Seconds of each of ``repeat`` calls after one warm-up call (CUDA: events, so no host overhead)."""
    fn()
    times = []
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        for _ in range(repeat):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return times
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return times


# ----------------------------------------------------------------------------------------------- memory
def proc_status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have spent so far (``/proc/stat``, idle and iowait left out; -1
    where there is no ``/proc``): over the timed steps, the cores every process kept busy, the workers included."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except (OSError, ValueError):
        return -1.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread id and name (Linux ``/proc``; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[f"{task.name}:{name}"] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def thread_cpu_per_wall(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU per wall second between two ``thread_cpu_s`` readings, summed by thread name, the calling thread as ``step``
    (the Ray worker runs ~30 threads: its training thread, Ray's Python threads, gRPC and event-loop threads; the
    spawned processes a main thread and gloo's), busiest first; under 0.1 % left out."""
    import threading

    step_tid = str(threading.get_native_id())
    by_name: dict[str, float] = {}
    for key, seconds in after.items():
        tid, name = key.split(":", 1)
        name = "step" if tid == step_tid else name
        by_name[name] = by_name.get(name, 0.0) + (seconds - before.get(key, 0.0)) / wall
    return {k: round(v, 4) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v >= 1e-3}


def release_freed_memory() -> None:
    """``gc.collect`` and glibc's ``malloc_trim``, so a CPU baseline does not count freed-but-held memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline is then a little high, the delta a little low
        pass


def reset_peak(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current RSS


def peak_mb(device: str) -> float:
    """Peak since ``reset_peak``: CUDA allocator MB, or the process's RSS high-water mark on CPU."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_kb("VmHWM") / 1024


def tensor_peak_bytes(prof: torch.profiler.profile) -> int:
    """Peak of the running sum of CPU allocator events (each op's own allocations minus frees, in start order)."""
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


# ------------------------------------------------------------------------------------------ the result
def machine(device: str) -> dict[str, Any]:
    """Device, torch, Python, CPU, cores, threads; CUDA: the GPU's name, capability, memory, SMs."""
    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                            "threads": torch.get_num_threads()}
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update({"name": props.name, "gpu": props.name, "cuda": torch.version.cuda,
                     "capability": f"{props.major}.{props.minor}", "total_memory_mb": props.total_memory / 2**20,
                     "multiprocessors": props.multi_processor_count})
    else:
        info["name"] = info["cpu"]
        info["total_memory_mb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return info


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """The benchmark's JSON (parents created), written whole: to ``NAME.part``, then renamed, so a benchmark killed
    at its timeout while rewriting a partial result leaves the last complete one. Prints where it went."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    print(f"wrote {out}")
    return out
