"""Clips per second per CPU core of the classical curation stack, next to a plain PyAV decode of the same files.

    python -m perf.curation_throughput [--media DIR] [--preset test|demo] [--heights 0,720] [--repeat 2] [--ray]

Both sides run pinned to one core in this process (decoder threads off, OpenCV single-threaded), so the ratio
compares work, not parallelism: "decode" is the floor (every frame decoded, nothing else), "ours" is the whole
classical stack per video (decode once, shot split, keyframes, duration/resolution, borders, exposure, blur,
motion, watermark, phash). The generated set is 180p, where decoding is nearly free; ``--heights`` re-encodes
the same files at other heights (0 = as generated) so the ratio is also shown where decode costs what it costs
on real footage. ``--ray`` also times the same stack through Ray Data on all cores (per core shown).
Writes ``perf/results/curation_throughput.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from curation.config import parse_config
from curation.media.probe import IMAGE_EXTENSIONS, probe
from curation.pipeline import analysis_settings
from curation.stages.shots import ShotSettings, split_video


def _media(args: argparse.Namespace) -> list[str]:
    if args.media:
        root = Path(args.media)
    else:
        from curation.synth import generate

        root = Path(tempfile.mkdtemp()) / "corpus"
        generate(root, preset=args.preset, seed=0)
        root = root / "media"
    return sorted(str(p) for p in root.iterdir() if p.suffix.lower() in {".mp4", *IMAGE_EXTENSIONS})


def rescaled_copy(paths: list[str], height: int, out_dir: Path) -> list[str]:
    """The same media re-encoded (H.264, crf 18) / resized so that their height is ``height``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        dst = out_dir / os.path.basename(p)
        out.append(str(dst))
        if dst.exists():
            continue
        if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS:
            img = cv2.imread(p)
            w = int(round(img.shape[1] * height / img.shape[0] / 2)) * 2
            cv2.imwrite(str(dst), cv2.resize(img, (w, height), interpolation=cv2.INTER_CUBIC))
            continue
        with av.open(p) as src, av.open(str(dst), "w") as sink:
            vs = src.streams.video[0]
            w = int(round(vs.codec_context.width * height / vs.codec_context.height / 2)) * 2
            enc = sink.add_stream("libx264", rate=vs.average_rate)
            enc.width, enc.height, enc.pix_fmt = w, height, "yuv420p"
            enc.options = {"crf": "18", "preset": "veryfast"}
            for frame in src.decode(vs):
                sink.mux(enc.encode(frame.reformat(w, height, "yuv420p", interpolation="BICUBIC")))
            sink.mux(enc.encode(None))
    return out


def plain_decode(path: str) -> int:
    """The floor: decode every frame (or the image), convert nothing."""
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        return 1
    n = 0
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        for _ in c.decode(s):
            n += 1
    return n


def _video_rows(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        info = probe(p)
        rows.append({"video_id": os.path.basename(p), "uri": p, "media_type": info.media_type, "fps": info.fps,
                     "width": info.width, "height": info.height, "num_frames": info.num_frames})
    return rows


def _time(fn, items, repeat: int) -> tuple[float, list]:
    best, out = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = [fn(x) for x in items]
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", help="folder of media (default: generate the preset)")
    ap.add_argument("--preset", default="test", choices=["test", "demo"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--heights", default="0,720", help="comma-separated heights to re-encode to (0: as made)")
    ap.add_argument("--cache", default="perf/results/media_cache", help="where re-encoded copies are kept")
    ap.add_argument("--ray", action="store_true", help="also time the stack through Ray Data on all cores")
    ap.add_argument("--out", default="perf/results/curation_throughput.json")
    args = ap.parse_args()
    base = _media(args)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    results = []
    for height in [int(h) for h in args.heights.split(",")]:
        paths = base if height == 0 else rescaled_copy(base, height, Path(args.cache) / f"{height}p")
        results.append(_measure(paths, height, args))
    print(f"{'set':>8} {'':34}{'clips/s/core':>14}{'frames/s/core':>15}{'seconds':>10}")
    for r in results:
        label = "as made" if r["height"] == 0 else f"{r['height']}p"
        print(f"{label:>8} {'plain PyAV decode (floor)':34}{r['decode_clips_per_s_per_core']:>14.2f}"
              f"{r['decode_frames_per_s_per_core']:>15.0f}{r['decode_s']:>10.2f}")
        print(f"{label:>8} {'classical stack (ours)':34}{r['ours_clips_per_s_per_core']:>14.2f}"
              f"{r['ours_frames_per_s_per_core']:>15.0f}{r['ours_s']:>10.2f}")
        if "ray_s" in r:
            print(f"{label:>8} {'classical stack via Ray, per core':34}{r['ray_clips_per_s_per_core']:>14.2f}"
                  f"{'':>15}{r['ray_s']:>10.2f}")
        print(f"{label:>8} ratio ours / plain decode: {r['ratio_ours_to_decode']:.2f} ({r['files']} files, "
              f"{r['clips']} clips, {r['frames']} frames, {r['scorer_errors']} scorer errors)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                   "results": results}, f, indent=2)
    print(f"wrote {args.out}")


def _measure(paths: list[str], height: int, args: argparse.Namespace) -> dict:
    cfg = parse_config({"lake": tempfile.mkdtemp(), "input": {"paths": paths}})
    settings = ShotSettings(cfg.shots, analysis_settings(cfg))
    videos = _video_rows(paths)
    t_decode, frames = _time(plain_decode, paths, args.repeat)
    t_ours, outs = _time(lambda v: split_video(v, settings), videos, args.repeat)
    n_clips = sum(len(o["clips"]) for o in outs)
    n_frames = int(sum(frames))
    errors = sum(r["status"] != "ok" for o in outs for rows in o.values() for r in rows)
    result = {
        "height": height, "files": len(paths), "clips": n_clips, "frames": n_frames, "scorer_errors": errors,
        "scorers": list(settings.analysis.scorers), "sample_fps": cfg.shots.sample_fps,
        "analysis_max_side": cfg.shots.analysis_max_side, "decode_s": t_decode, "ours_s": t_ours,
        "decode_clips_per_s_per_core": n_clips / t_decode, "ours_clips_per_s_per_core": n_clips / t_ours,
        "decode_frames_per_s_per_core": n_frames / t_decode, "ours_frames_per_s_per_core": n_frames / t_ours,
        "ratio_ours_to_decode": t_decode / t_ours,
    }
    if args.ray:
        result.update(_ray_run(paths, cfg, n_clips))
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    return result


def _ray_run(paths: list[str], cfg, n_clips: int) -> dict:
    """The same stack as a Ray Data job (ingest excluded) on every core of this machine."""
    from curation.lake import Lake
    from curation.stages.ingest import run_ingest
    from curation.ray_runtime import ensure_ray
    from curation.stages.shots import run_shots

    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    ensure_ray()
    import ray

    cores = int(ray.cluster_resources().get("CPU", 1))
    lake = Lake(tempfile.mkdtemp())
    run_ingest(lake, cfg.input, cfg.ingest, backend="local")
    t0 = time.perf_counter()
    run_shots(lake, ShotSettings(cfg.shots, analysis_settings(cfg)), items_per_task=2, commit_every=16)
    dt = time.perf_counter() - t0
    return {"ray_s": dt, "ray_cores": cores, "ray_clips_per_s_per_core": n_clips / dt / cores}


if __name__ == "__main__":
    main()
