"""Wan-Bench cost: seconds per video per dimension on one CPU process, and the same dimensions through the scoring
job's Ray Data actor pools on all cores.

    python -m perf.bench [--videos 8] [--frames 16] [--size 128] [--dimensions large_motion,pixel_stability,...]
                         [--dimension-config '{"dim": {...}}'] [--out perf/results/bench.json]

Inputs: generated videos (a textured square moving over a noisy background; every other one pans the camera), the
same for both measurements. ``cpu``: each dimension is built once, then ``score`` is timed on every video in this
process (torch on one thread); the cost is the mean per video (the first call included). ``ray``: the videos are written as mp4s and scored
by ``bench.job.run_bench`` (decode pool + one scorer actor per core, one torch thread each); reported are the
job's wall time per video (all dimensions, actor start-up, decode and lake writes included; Ray's own start-up
excluded) and each dimension's mean time inside
the actors. The default dimensions need no weights (optical flow); a model-backed dimension needs its weights in
``--dimension-config``.

Anchor: VBench publishes no per-dimension cost (README, FAQ and papers searched); the one public figure found is a
user's report that the standard VBench suite takes "nearly half a day" on one H100 (Vchitect/VBench issue #195).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIMS = "large_motion,pixel_stability,camera_control"
ANCHOR = {"source": "https://github.com/Vchitect/VBench/issues/195",
          "note": "no per-dimension cost published by VBench; a user reports the full standard suite takes nearly "
                  "half a day on one H100"}


def make_video(i: int, frames: int, size: int) -> np.ndarray:
    """A bright square moving right over a fixed noise background; odd ``i``: the background pans too."""
    rng = np.random.default_rng(i)
    wide = rng.integers(0, 200, (size, size * 2, 3), dtype=np.uint8)
    out = []
    for t in range(frames):
        shift = 2 * t if i % 2 else 0
        frame = wide[:, shift:shift + size].copy()
        x = (5 + 3 * t) % (size - 24)
        frame[size // 3:size // 3 + 24, x:x + 24] = (250, 240, 40)
        out.append(frame)
    return np.stack(out)


def time_cpu(dims: list[str], configs: dict[str, Any], videos: list[np.ndarray], fps: float) -> dict[str, Any]:
    import torch

    from bench.dimensions import DIMENSIONS
    from bench.dimensions.base import BenchVideo

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for name in dims:
        t0 = time.perf_counter()
        dim = DIMENSIONS[name](configs.get(name))
        build = time.perf_counter() - t0
        costs, errors = [], 0
        for i, frames in enumerate(videos):
            video = BenchVideo(frames, fps, "a yellow square moves", {"camera": "pan_left" if i % 2 else "static"})
            t0 = time.perf_counter()
            try:
                dim.score(video)
            except ValueError:
                errors += 1
            costs.append(time.perf_counter() - t0)
        out[name] = {"s_per_video": float(np.mean(costs)), "build_s": build, "errors": errors}
    return out


def time_ray(dims: list[str], configs: dict[str, Any], videos: list[np.ndarray], fps: float,
             cores: int) -> dict[str, Any]:
    from bench.job import BenchJobConfig, run_bench
    from curation.ray_runtime import ensure_ray
    from wanmodel.pipelines.common import write_mp4

    tmp = Path(tempfile.mkdtemp(prefix="perf_bench_"))
    suite = []
    for i, frames in enumerate(videos):
        write_mp4(tmp / "videos" / f"video{i:03d}-0.mp4", frames, fps)
        suite.append({"prompt": "a yellow square moves", "file": f"video{i:03d}-0.mp4",
                      "meta": {"camera": "pan_left" if i % 2 else "static"}})
    (tmp / "suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite))
    cfg = BenchJobConfig(lake=str(tmp / "lake"), run="perf", videos_dir=str(tmp / "videos"), dimensions=dims,
                         prompts_file=str(tmp / "suite.jsonl"),
                         dimension_config={k: v for k, v in configs.items() if k in dims}, execution="ray",
                         decode={"concurrency": 1, "num_cpus": 0.5}, score={"concurrency": cores, "num_cpus": 1},
                         ray={"num_cpus": cores + 1}, torch_threads=1, commit_every=max(1, len(videos) // 2))
    ensure_ray(None, cores + 1)  # Ray's start-up is not the job's cost
    t0 = time.perf_counter()
    result = run_bench(cfg)
    wall = time.perf_counter() - t0
    from curation.lake import Lake

    rows = Lake(cfg.lake).read("bench_scores", columns=["dimension", "wall_s"]).to_pylist()
    per_dim = {d: float(np.mean([r["wall_s"] for r in rows if r["dimension"] == d])) for d in dims}
    return {"wall_s": wall, "s_per_video": wall / len(videos), "scorer_actors": cores,
            "in_actor_s_per_video": per_dim, "status": result["status"]}


def table(report: dict[str, Any]) -> str:
    lines = [f"{'dimension':<24}{'cpu s/video':>14}{'ray in-actor s/video':>22}"]
    for d, r in report["cpu"].items():
        lines.append(f"{d:<24}{r['s_per_video']:>14.3f}{report['ray']['in_actor_s_per_video'].get(d, 0):>22.3f}")
    cpu_total = sum(r["s_per_video"] for r in report["cpu"].values())
    lines.append(f"{'all (one process)':<24}{cpu_total:>14.3f}")
    lines.append(f"{'all (Ray job, wall)':<24}{report['ray']['s_per_video']:>14.3f}   "
                 f"({report['ray']['scorer_actors']} scorer actors; decode and lake writes included)")
    lines.append(f"VBench anchor: {ANCHOR['note']} ({ANCHOR['source']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--dimensions", default=DEFAULT_DIMS)
    p.add_argument("--dimension-config", default="{}", help="JSON {dimension: section} (weights paths)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="scorer actors in the Ray run")
    p.add_argument("--out", default="perf/results/bench.json")
    args = p.parse_args(argv)
    dims = [d for d in args.dimensions.split(",") if d]
    configs = json.loads(args.dimension_config)
    videos = [make_video(i, args.frames, args.size) for i in range(args.videos)]
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "inputs": {"videos": args.videos, "frames": args.frames, "size": args.size, "fps": args.fps},
              "cpu": time_cpu(dims, configs, videos, args.fps),
              "ray": time_ray(dims, configs, videos, args.fps, max(1, args.cores)), "vbench_anchor": ANCHOR}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
