"""Scores a curated lake against the generator's ground truth (``curation.synth`` labels).

Used by the tests (which assert the accuracies) and by the demo (which prints them), so a user sees how well
each classical filter does on media whose answers are known.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.config import MOTION_TIERS, SelectConfig
from curation.lake.tables import Lake
from curation.stages.decisions import has_watermark, motion_tier


@dataclass
class Evaluation:
    """Per-filter accuracy/F1 against labels, shot-boundary recall/precision, the motion confusion matrix."""

    n_segments: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    f1: dict[str, float] = field(default_factory=dict)
    shots: dict[str, float] = field(default_factory=dict)
    crop_max_error_px: float = 0.0
    confusion: dict[str, Counter] = field(default_factory=dict)  # true tier -> Counter(predicted)
    mismatches: dict[str, list[str]] = field(default_factory=dict)

    def confusion_text(self) -> str:
        tiers = list(MOTION_TIERS)
        head = "true \\ pred".ljust(15) + "".join(t[:9].rjust(10) for t in tiers) + "     other"
        rows = [head]
        for t in tiers:
            c = self.confusion.get(t, Counter())
            other = sum(v for k, v in c.items() if k not in tiers)
            rows.append(t.ljust(15) + "".join(str(c.get(p, 0)).rjust(10) for p in tiers) + str(other).rjust(10))
        return "\n".join(rows)

    def text(self) -> str:
        lines = [f"segments evaluated: {self.n_segments}"]
        for k in sorted(self.accuracy):
            f1 = f", F1 {self.f1[k]:.3f}" if k in self.f1 else ""
            lines.append(f"  {k:<14} accuracy {self.accuracy[k]:.3f}{f1}")
        lines.append("  shots          " + ", ".join(f"{k} {v:.3f}" for k, v in self.shots.items()))
        lines.append(f"  crop box max error {self.crop_max_error_px:.1f} px (detected borders)")
        lines.append("motion tier confusion:\n" + self.confusion_text())
        return "\n".join(lines)


def _f1(pairs: list[tuple[bool, bool]]) -> float:
    tp = sum(p and t for t, p in pairs)
    fp = sum(p and not t for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _match(labels: list[dict[str, Any]], clips: list[dict[str, Any]]) -> list[tuple[dict, dict | None]]:
    """Each label segment with the clip of the same file that overlaps it most."""
    by_file: dict[str, list[dict]] = {}
    for c in clips:
        by_file.setdefault(os.path.basename(c["uri"]), []).append(c)
    out = []
    for seg in labels:
        best, best_ov = None, 0
        for c in by_file.get(seg["file"], []):
            ov = min(seg["end_frame"], c["end_frame"]) - max(seg["start_frame"], c["start_frame"])
            if ov > best_ov:
                best, best_ov = c, ov
        out.append((seg, best))
    return out


def evaluate(lake: Lake, labels: pa.Table, min_duration_s: float = 4.0, shot_tolerance: int = 2,
             select: SelectConfig | None = None) -> Evaluation:
    """Compare the lake's stage tables with the labels of the media it ingested. The motion tier and the watermark
    flag are decided from the stored statistics as ``select`` decides them (``select`` thresholds, default ones
    when not given)."""
    select = select or SelectConfig()
    clips = lake.read("clips", columns=["clip_id", "uri", "start_frame", "end_frame", "media_type", "status"],
                      filter="status = 'ok'").to_pylist()
    stage = {}
    for name in ("borders", "blur", "exposure", "motion", "watermark", "duration_resolution"):
        if lake.exists(f"stages/{name}"):
            stage[name] = {r["clip_id"]: r for r in lake.read(f"stages/{name}").to_pylist()}
    dedup = {r["clip_id"]: r for r in lake.read("stages/dedup").to_pylist()} if lake.exists("stages/dedup") else {}
    rows = labels.to_pylist()
    matched = _match(rows, clips)
    ev = Evaluation(n_segments=len(rows))
    pairs: dict[str, list[tuple[bool, bool]]] = {k: [] for k in ("borders", "blur", "overexposure", "duration",
                                                                   "watermark", "watermark_moving_camera")}
    crop_err = []
    seen: dict[str, int] = {}
    for seg, clip in matched:
        cid = clip["clip_id"] if clip else None
        name = f"{seg['file']}#{seg['segment_index']}"

        def get(s: str, cid: str | None = cid) -> dict | None:
            r = stage.get(s, {}).get(cid)
            return r if r and r["status"] == "ok" else None

        truth_border = any(seg[f"border_{s}"] > 0 for s in ("top", "bottom", "left", "right"))
        if (r := get("borders")) is not None:
            pairs["borders"].append((truth_border, bool(r["has_border"])))
            if truth_border and r["has_border"]:
                want = (seg["border_left"], seg["border_top"], seg["width"] - seg["border_right"],
                        seg["height"] - seg["border_bottom"])
                got = (r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"])
                crop_err.append(max(abs(a - b) for a, b in zip(want, got)))
        if (r := get("blur")) is not None:
            pairs["blur"].append((bool(seg["blurred"]), r["blur_score"] > 0.5))
        if (r := get("exposure")) is not None:
            pairs["overexposure"].append((bool(seg["overexposed"]), r["overexposure_score"] > 0.5))
        if seg["media_type"] == "video" and (r := get("duration_resolution")) is not None:
            pairs["duration"].append((seg["segment_duration_s"] > min_duration_s, r["duration_s"] > min_duration_s))
        if seg["media_type"] == "video" and (r := get("watermark")) is not None:
            pairs["watermark"].append((bool(seg["logo"]), has_watermark(r, select)))
            if seg["motion_kind"] in ("camera_driven", "shaky") and not seg["text_strings"]:
                # Edge persistence can only tell an overlay from the scene when the scene moves under it; burnt-in
                # captions are static overlays too, but the labels mark logos only, so captioned clips are left out.
                pairs["watermark_moving_camera"].append((bool(seg["logo"]), has_watermark(r, select)))
        if seg["media_type"] == "video" and seg["motion_kind"] and (r := get("motion")) is not None:
            tier = motion_tier(r, select)
            ev.confusion.setdefault(seg["motion_kind"], Counter())[tier] += 1
            if tier != seg["motion_kind"]:
                ev.mismatches.setdefault("motion", []).append(f"{name}: {seg['motion_kind']} -> {tier}")
        for k, lst in pairs.items():  # a pair added for this segment that disagrees is a mismatch
            if len(lst) > seen.get(k, 0) and lst[-1][0] != lst[-1][1]:
                ev.mismatches.setdefault(k, []).append(f"{name}: truth {lst[-1][0]}, predicted {lst[-1][1]}")
            seen[k] = len(lst)
    for k, lst in pairs.items():
        if lst:
            ev.accuracy[k] = sum(t == p for t, p in lst) / len(lst)
            ev.f1[k] = _f1(lst)
    total = sum(sum(c.values()) for c in ev.confusion.values())
    if total:
        ev.accuracy["motion_tier"] = sum(c.get(t, 0) for t, c in ev.confusion.items()) / total
    ev.crop_max_error_px = float(max(crop_err)) if crop_err else 0.0
    ev.shots = _shot_metrics(rows, clips, shot_tolerance)
    if dedup:
        ev.accuracy.update(_dedup_metrics(rows, clips, dedup))
    return ev


def _shot_metrics(labels: list[dict], clips: list[dict], tol: int) -> dict[str, float]:
    truth: dict[str, set[int]] = {}
    for seg in labels:
        if seg["media_type"] == "video":
            truth.setdefault(seg["file"], set()).update(seg["cut_frames"] or [])
    found: dict[str, set[int]] = {}
    for c in clips:
        if c["media_type"] == "video" and c["start_frame"] > 0:
            found.setdefault(os.path.basename(c["uri"]), set()).add(c["start_frame"])
    tp_truth = sum(any(abs(t - f) <= tol for f in found.get(file, ())) for file, ts in truth.items() for t in ts)
    n_truth = sum(len(ts) for ts in truth.values())
    tp_found = sum(any(abs(t - f) <= tol for t in truth.get(file, ())) for file, fs in found.items() for f in fs)
    n_found = sum(len(fs) for fs in found.values())
    return {"cut_recall": tp_truth / n_truth if n_truth else 1.0,
            "cut_precision": tp_found / n_found if n_found else 1.0}


def _dedup_metrics(labels: list[dict], clips: list[dict], dedup: dict[str, dict]) -> dict[str, float]:
    """Pairwise recall/precision of near-duplicate groups over files (a file's clips share its original)."""
    root = {}
    for seg in labels:
        root[seg["file"]] = seg["duplicate_of"] or seg["file"]
    group_of = {}
    for c in clips:
        d = dedup.get(c["clip_id"])
        if d:
            group_of[c["clip_id"]] = (os.path.basename(c["uri"]), c["start_frame"], d["dup_group"])
    items = list(group_of.values())
    tp = fp = fn = 0
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (fa, sa, ga), (fb, sb, gb) = items[i], items[j]
            same_truth = fa != fb and root.get(fa) == root.get(fb) and sa == sb
            same_pred = ga == gb and ga is not None
            tp += same_truth and same_pred
            fp += same_pred and not same_truth
            fn += same_truth and not same_pred
    return {"dedup_recall": tp / (tp + fn) if tp + fn else 1.0,
            "dedup_precision": tp / (tp + fp) if tp + fp else 1.0}
