"""One JSON of every figure ``perf/gpu.sh`` measured, each with its unit, its ceiling and the ratio to it.

    python -m perf.gpu_summary --dir DIR [--smoke 0|1] [--seconds N] [--pack]

Reads what the steps left in DIR (``steps.tsv``, ``gpu_info.json``, ``dit_*.json``, ``vae.json``, ``train.json``,
``sampling.json``, ``train_compiled.json``, ``curation_models.json``) and writes ``DIR/gpu.json``:

- ``ceilings``: measured in the same run by ``perf.gpu_info`` (matmul TFLOP/s, memory-copy GB/s) and the device's
  memory; ``nominal``: the figures measured on the lent H100 before (790 TFLOP/s bf16).
- ``figures``: ``{name, value, unit, ceiling, ratio}``; rates in TFLOP/s also carry ``ratio_nominal`` (to 790),
  so ``train.model_tflops`` (``train_compiled.model_tflops``: blocks compiled) gives the MFU against this run's
  ceiling (``ratio``) and against 790; ``attention.<kernel>.fwd|fwd_bwd.tflops``: torch SDPA with each kernel
  forced at the DiT 1.3B's attention shape (``device.sdpa_default_kernel``: the one SDPA picks itself). Peak memory is rated against the device's memory. Times and images/s have
  no ceiling (``null``).
- ``missing``: figures a step that ran should have produced but did not (an out-of-memory, a failure, a time-out),
  with the reason; ``steps``: each step's status, exit code and seconds. A step that failed or timed out still
  gives the figures its JSON holds (``perf.sampling`` writes it after each mode).

``--pack`` then moves everything else in DIR (each step's JSON, ``steps.tsv``, ``logs/``) into one archive,
``DIR/gpu_run.tar.gz``, so DIR holds two files: what comes back from a lent GPU box is capped at 8 files, and the
script leaves 14.

Exit status 0 only when every step that ran succeeded and nothing is missing. Prints the table. Standard library
only.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tarfile
from pathlib import Path
from typing import Any

OPS_DIT = ("fwd", "train")
OPS_VAE = ("encode", "decode")
ATTENTION_NAMES = {"MATH": "math", "FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "efficient",
                   "CUDNN_ATTENTION": "cudnn"}
TRAIN_FIGURES = (("step_s", "s"), ("tokens_per_s", "tokens/s"), ("samples_per_s", "samples/s"),
                 ("model_tflops", "TFLOP/s"), ("peak_mb", "MB"))


class Collector:
    """Figures and missing figures of one run, rated against its ceilings."""

    def __init__(self, ceilings: dict[str, float], nominal: dict[str, float]) -> None:
        self.ceilings, self.nominal = ceilings, nominal
        self.figures: list[dict[str, Any]] = []
        self.missing: list[dict[str, str]] = []

    def add(self, step: str, name: str, value: Any, unit: str, *, ceiling: float | None = None) -> None:
        """Record a figure, rated against ``ceiling`` or else the run's ceiling for its unit."""
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.missing.append({"step": step, "name": name, "reason": f"not a finite positive number: {value!r}"})
            return
        figure: dict[str, Any] = {"step": step, "name": name, "value": value, "unit": unit, "ceiling": None,
                                  "ratio": None}
        if ceiling is None:
            ceiling = {"TFLOP/s": self.ceilings.get("matmul_tflops"), "GB/s": self.ceilings.get("copy_gbs"),
                       "MB": self.ceilings.get("memory_mb")}.get(unit)
        if ceiling:
            figure.update(ceiling=ceiling, ratio=value / ceiling)
        if unit == "TFLOP/s":
            figure["ratio_nominal"] = value / self.nominal["matmul_tflops"]
        self.figures.append(figure)

    def lack(self, step: str, name: str, reason: str) -> None:
        self.missing.append({"step": step, "name": name, "reason": reason})


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(directory: Path) -> list[dict[str, Any]]:
    with open(directory / "steps.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["rc"] = int(row["rc"]) if row["rc"] else None
        row["seconds"] = int(row["seconds"] or 0)
    return rows


def ceilings_of(info: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, float]]:
    if info is None:
        return {}, {"matmul_tflops": 790.0, "copy_gbs": 3350.0}
    return ({"matmul_tflops": info["matmul"]["tflops"], "copy_gbs": info["copy"]["gbs"],
             "memory_mb": info["total_memory_mb"]}, info["nominal"])


# ------------------------------------------------------------------------------------------ per step
def collect_info(out: Collector, info: dict[str, Any]) -> None:
    """The ceilings themselves, rated against the nominal H100 figures."""
    out.add("gpu_info", "matmul_tflops", info["matmul"]["tflops"], "TFLOP/s",
            ceiling=info["nominal"]["matmul_tflops"])
    out.add("gpu_info", "copy_gbs", info["copy"]["gbs"], "GB/s", ceiling=info["nominal"]["copy_gbs"])
    for kernel, figures in info.get("attention", {}).get("kernels", {}).items():
        if "error" in figures:  # a kernel this device does not run (cuDNN on an old card, the CPU's fused ones)
            continue
        name = f"attention.{ATTENTION_NAMES.get(kernel, kernel.lower())}"
        out.add("gpu_info", f"{name}.fwd.tflops", figures["fwd_tflops"], "TFLOP/s")
        out.add("gpu_info", f"{name}.fwd_bwd.tflops", figures["fwd_bwd_tflops"], "TFLOP/s")


def collect_dit(out: Collector, step: str, result: dict[str, Any], memory: bool) -> None:
    backend = step.removeprefix("dit_")
    for case in result["cases"]:
        for op in OPS_DIT:
            prefix = f"dit.{backend}.{op}"
            if f"{op}_error" in case or f"{op}_ours_s" not in case:
                out.lack(step, prefix, case.get(f"{op}_error", "not measured"))
                continue
            out.add(step, f"{prefix}.s", case[f"{op}_ours_s"], "s")
            out.add(step, f"{prefix}.tflops", case[f"{op}_ours_tflops"], "TFLOP/s")
            if memory:
                memory_figure(out, step, f"{prefix}.peak_mb", case, op)


def memory_figure(out: Collector, step: str, name: str, result: dict[str, Any], op: str) -> None:
    """``{op}_ours_mb``, or the out-of-memory its measurement recorded (``{op}_ours_mb_error``) as the reason."""
    error = result.get(f"{op}_ours_mb_error")
    if error:
        out.lack(step, name, error)
    else:
        out.add(step, name, result.get(f"{op}_ours_mb"), "MB")


def collect_vae(out: Collector, result: dict[str, Any], memory: bool) -> None:
    for label, clip in result["clips"].items():
        for op in OPS_VAE:
            prefix = f"vae.{label}.{op}"
            seconds = clip.get(f"{op}_ours_s")
            out.add("vae", f"{prefix}.s", seconds, "s")
            out.add("vae", f"{prefix}.frames_per_s", clip["frames"] / seconds if seconds else None, "frames/s")
            if memory:
                memory_figure(out, "vae", f"{prefix}.peak_mb", clip, op)


def collect_train(out: Collector, step: str, result: dict[str, Any]) -> None:
    """``train`` (eager) or ``train_compiled`` (blocks compiled): the figures are named after the step."""
    for case in result["cases"]:
        if "error" in case:
            out.lack(step, step, case["error"])
            continue
        for key, unit in TRAIN_FIGURES:
            out.add(step, f"{step}.{key}", case.get(key), unit)


def collect_sampling(out: Collector, result: dict[str, Any], memory: bool) -> None:
    """Per mode that ran: per-step and per-video time, speed-up over plain, peak memory (not in the smoke: a CPU
    RSS delta at tiny sizes can be 0). A mode that is not available here is no figure; one that failed is missing."""
    for row in result["cases"]:
        prefix = f"sampling.{row['mode']}"
        if not row["available"]:
            if row.get("failed"):
                out.lack("sampling", prefix, row["reason"])
            continue
        out.add("sampling", f"{prefix}.step_s", row.get("step_s"), "s")
        out.add("sampling", f"{prefix}.video_s", row.get("video_s"), "s")
        if row["mode"] != "plain":
            out.add("sampling", f"{prefix}.speedup", row.get("speedup"), "x")
        if memory:
            out.add("sampling", f"{prefix}.peak_mb", row.get("peak_mb"), "MB")


def collect_curation(out: Collector, result: dict[str, Any]) -> None:
    for row in result["rows"]:
        out.add("curation_models", f"curation.{row['model']}.b{row['batch_size']}.images_per_s",
                row["images_per_s"], "images/s")


def collect(directory: Path, steps: list[dict[str, Any]], smoke: bool) -> Collector:
    info = read_json(directory / "gpu_info.json")
    out = Collector(*ceilings_of(info))
    for row in steps:
        step = row["step"]
        if row["status"] == "skipped":
            continue
        finished = row["status"] == "ok"
        if not finished:
            out.lack(step, step, f"step {row['status']} (exit {row['rc']}), see {row['note']}")
        # a step that stopped early still counts what it saved (sampling after each mode, gpu_info its ceilings);
        # gpu.sh deletes each step's JSON before the step runs, so none is left from an earlier run
        result = info if step == "gpu_info" else read_json(directory / f"{step}.json")
        if result is None:
            if finished:
                out.lack(step, step, f"no {step}.json")
        elif step == "gpu_info":
            collect_info(out, result)
        elif step.startswith("dit_"):
            collect_dit(out, step, result, memory=not smoke and step == "dit_sdpa")
        elif step == "vae":
            collect_vae(out, result, memory=not smoke)
        elif step in ("train", "train_compiled"):
            collect_train(out, step, result)
        elif step == "sampling":
            collect_sampling(out, result, memory=not smoke)
        elif step == "curation_models":
            collect_curation(out, result)
    return out


# ------------------------------------------------------------------------------------------- output
def print_table(summary: dict[str, Any]) -> None:
    device = summary["device"]
    print(f"\nGPU figures: {device.get('name', '?')} ({device.get('device', '?')}), torch {device.get('torch', '?')}"
          f"{', smoke (CPU, tiny sizes)' if summary['smoke'] else ''}, {summary['seconds']} s in all")
    print(f"{'figure':<34} {'value':>12} {'unit':<9} {'ceiling':>10} {'ratio':>7} {'of 790':>7}")
    for figure in summary["figures"]:
        ceiling = "" if figure["ceiling"] is None else f"{figure['ceiling']:.4g}"
        ratio = "" if figure["ratio"] is None else f"{figure['ratio']:.1%}"
        nominal = f"{figure['ratio_nominal']:.1%}" if "ratio_nominal" in figure else ""
        print(f"{figure['name']:<34} {figure['value']:>12.4g} {figure['unit']:<9} {ceiling:>10} {ratio:>7} "
              f"{nominal:>7}")
    for step in summary["steps"]:
        if step["status"] != "ok":
            print(f"step {step['step']}: {step['status']} {step['note']}")
    for lack in summary["missing"]:
        print(f"MISSING {lack['name']} ({lack['step']}): {lack['reason']}")
    print("ceilings measured in this run (gpu_info); TFLOP/s ratio = share of the measured matmul ceiling "
          "(train.model_tflops: MFU), 'of 790' = share of the nominal H100 bf16 figure; MB against device memory")


def summarize(directory: Path, *, smoke: bool, seconds: int) -> dict[str, Any]:
    steps = read_steps(directory)
    out = collect(directory, steps, smoke)
    info = read_json(directory / "gpu_info.json") or {}
    device = {key: info[key] for key in ("name", "device", "torch", "cuda", "capability", "total_memory_mb")
              if key in info}
    if "attention" in info:
        device["sdpa_default_kernel"] = info["attention"]["default"]
    ok = not out.missing and all(step["status"] in ("ok", "skipped") for step in steps)
    return {"smoke": smoke, "seconds": seconds, "ok": ok, "device": device, "ceilings": out.ceilings,
            "nominal": out.nominal, "steps": steps, "figures": out.figures, "missing": out.missing}


ARCHIVE = "gpu_run.tar.gz"


def pack(directory: Path) -> Path:
    """Everything in ``directory`` but ``gpu.json`` into ``gpu_run.tar.gz`` (paths relative to it), then removed:
    the archive is written and closed before anything is deleted."""
    keep = {"gpu.json", ARCHIVE, ARCHIVE + ".part"}
    entries = sorted(path for path in directory.iterdir() if path.name not in keep)
    archive = directory / ARCHIVE
    partial = archive.with_name(ARCHIVE + ".part")
    with tarfile.open(partial, "w:gz") as tar:
        for path in entries:
            tar.add(path, arcname=path.name)
    partial.replace(archive)
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the folder perf/gpu.sh wrote")
    parser.add_argument("--smoke", type=int, default=0, choices=[0, 1])
    parser.add_argument("--seconds", type=int, default=0, help="the script's wall time so far")
    parser.add_argument("--pack", action="store_true", help=f"then move the rest of DIR into DIR/{ARCHIVE}")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    try:
        summary = summarize(directory, smoke=bool(args.smoke), seconds=args.seconds)
        (directory / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_table(summary)
        print(f"wrote {directory / 'gpu.json'}")
    finally:  # also when the summary fails: the step files and logs still come back, in the archive
        if args.pack:
            print(f"packed the step files and logs into {pack(directory)}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
