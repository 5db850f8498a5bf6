"""Motion-tier accuracy of ``curation.scorers.motion`` on the synthetic corpus (``curation.synth``).

Usage::

    python tests/curation/motion_eval.py [SEED ...]        # generates into a temp dir, prints confusion matrices

Each labelled video segment is decoded with PyAV, downscaled to long side 384 (INTER_AREA), sampled at ~8 fps,
scored, and compared with the segment's ``motion_kind``.
"""
from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq

from curation.media.frames import ClipFrames
from curation.scorers.motion import TIERS, MotionConfig, analyse
from curation.scorers.motion_rules import MotionTierRules, classify

MAX_SIDE = 384
SAMPLE_FPS = 8.0


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def segment_clip(frames: list[np.ndarray], start: int, end: int, fps: float, name: str) -> ClipFrames:
    """ClipFrames of ``frames[start:end]`` sampled at ~``SAMPLE_FPS``, long side <= ``MAX_SIDE``."""
    step = max(1, int(round(fps / SAMPLE_FPS)))
    idx = np.arange(start, end, step, dtype=np.int64)
    h, w = frames[0].shape[:2]
    s = min(1.0, MAX_SIDE / max(h, w))
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    sel = [frames[i] if s == 1.0 else cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx]
    return ClipFrames(
        clip_id=f"{name}:{start:06d}-{end:06d}", media_type="video", source_fps=fps, sample_fps=fps / step,
        source_width=w, source_height=h, frames=np.stack(sel), frame_indices=idx,
    )


def evaluate(out_dir: Path, cfg: MotionConfig | None = None, verbose: bool = False) -> dict:
    """Score every labelled video segment under ``out_dir``; return accuracy, confusion matrix and rows."""
    cfg = cfg or MotionConfig()
    labels = pq.read_table(out_dir / "labels.parquet").to_pylist()
    cache: dict[str, list[np.ndarray]] = {}
    rows, pair_times = [], []
    for r in labels:
        if r["media_type"] != "video" or r["motion_kind"] is None:
            continue
        if r["file"] not in cache:
            cache = {r["file"]: _decode(out_dir / "media" / r["file"])}
        clip = segment_clip(cache[r["file"]], r["start_frame"], r["end_frame"], r["fps"], r["file"])
        t0 = time.perf_counter()
        res = analyse(clip, cfg)
        res["motion_tier"] = classify(res, MotionTierRules())[0]  # select's rule, default thresholds
        pair_times.append((time.perf_counter() - t0) / max(1, clip.num_frames - 1))
        rows.append({**{k: r[k] for k in ("file", "start_frame", "motion_kind", "blurred", "overexposed", "logo",
                                          "border_top", "border_left", "text_strings", "width")}, **res})
    conf = np.zeros((len(TIERS), len(TIERS)), int)
    for row in rows:
        conf[TIERS.index(row["motion_kind"]), TIERS.index(row["motion_tier"])] += 1
    acc = float(np.trace(conf) / max(1, conf.sum()))
    return {"accuracy": acc, "confusion": conf, "rows": rows, "ms_per_pair": 1e3 * float(np.median(pair_times))}


def format_confusion(conf: np.ndarray) -> str:
    short = [t[:8] for t in TIERS]
    lines = ["truth \\ pred  " + " ".join(f"{s:>8s}" for s in short)]
    for t, row in zip(TIERS, conf):
        lines.append(f"{t:13s} " + " ".join(f"{v:8d}" for v in row))
    return "\n".join(lines)


def describe(row: dict) -> str:
    deg = [k for k in ("blurred", "overexposed", "logo") if row[k]]
    if row["border_top"] or row["border_left"]:
        deg.append("border")
    if row["text_strings"]:
        deg.append("text")
    return (
        f"{row['file']:26s} {row['start_frame']:5d} w={row['width']:3d} {row['motion_kind']:13s} -> "
        f"{row['motion_tier']:13s} cam={row['camera_motion']:.3f} subj={row['subject_motion']:.3f} "
        f"mf={row['moving_fraction']:.4f} nm={row['num_movers']:.1f} shk={row['shakiness']:.4f} "
        f"sm={row['smooth_step']:.4f} {','.join(deg)}"
    )


def run(seeds: Iterable[int], root: Path | None = None, verbose: bool = True) -> list[dict]:
    from curation.synth.generate import generate

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            d = (root or Path(tmp)) / f"seed{seed}"
            if not (d / "labels.parquet").exists():
                generate(d, preset="test", seed=seed)
            res = evaluate(d)
            out.append(res)
            if verbose:
                print(f"seed {seed}: accuracy {res['accuracy']:.3f} over {res['confusion'].sum()} segments, "
                      f"{res['ms_per_pair']:.2f} ms per frame pair (median)")
                print(format_confusion(res["confusion"]))
                for row in res["rows"]:
                    mark = "  " if row["motion_kind"] == row["motion_tier"] else "XX"
                    print(mark, describe(row))
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:]]
    root = None
    if args and args[0].startswith("--root="):
        root = Path(args.pop(0).split("=", 1)[1])
    run([int(a) for a in args] or [0, 1], root)
