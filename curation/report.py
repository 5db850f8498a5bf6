"""A readable report of a curation run: a text summary and one HTML page with score histograms and
thumbnail strips of kept and rejected clips (keyframes from ``clips``), self-contained (inline SVG and JPEG)."""
from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import Counter
from typing import Any

import pyarrow as pa

from curation.config import ReportConfig
from curation.lake.tables import Lake

LOG_SCALE_SCORES = {"blur.laplacian_var"}  # heavy-tailed: shown as log10

HISTOGRAM_SCORES = [
    "duration_resolution.duration_s", "blur.laplacian_var", "blur.blur_score", "exposure.overexposure_score",
    "exposure.clipped_high_fraction", "borders.border_fraction", "motion.camera_motion", "motion.subject_motion",
    "motion.moving_fraction", "motion.shakiness", "watermark.watermark_score",
]


def text_summary(lake: Lake) -> str:
    """Counts per status, per reject reason and per motion tier, and the failed inputs with their messages."""
    videos = lake.read("videos", columns=["uri", "media_type", "status", "error", "duplicate_of"])
    curated = lake.read("curated", columns=["clip_id", "uri", "start_frame", "end_frame", "media_type", "keep", "reject_reasons", "motion_tier"])
    lines = ["== curation summary =="]
    st = Counter(videos.column("status").to_pylist())
    lines.append(f"inputs: {videos.num_rows} ({', '.join(f'{k} {v}' for k, v in sorted(st.items()))})")
    kept = sum(curated.column("keep").to_pylist())
    lines.append(f"clips: {curated.num_rows}, kept {kept}, rejected {curated.num_rows - kept}")
    reasons = Counter(r.split(":")[0] if r.startswith("error:") else r
                      for rs in curated.column("reject_reasons").to_pylist() for r in rs or [])
    if reasons:
        lines.append("reject reasons (a clip may have several):")
        lines += [f"  {r:<24} {n}" for r, n in reasons.most_common()]
    tiers = Counter(t for t in curated.column("motion_tier").to_pylist() if t)
    if tiers:
        lines.append("motion tiers: " + ", ".join(f"{t} {n}" for t, n in tiers.most_common()))
    near = near_threshold_rows(lake)
    if near:
        lines.append(f"near threshold ({len(near)} clips within the select.near_margin of a deciding threshold):")
        lines += [f"  {_clip_name(r)}: {'; '.join(r['near_threshold'])}" for r in near]
    failed = [(u, e) for u, s, e in zip(videos.column("uri").to_pylist(), videos.column("status").to_pylist(),
                                        videos.column("error").to_pylist()) if s == "error"]
    if failed:
        lines.append("failed inputs:")
        lines += [f"  {os.path.basename(u)}: {e}" for u, e in failed]
    return "\n".join(lines)


def near_threshold_rows(lake: Lake) -> list[dict[str, Any]]:
    """``curated`` rows with a decision near its threshold (a re-encode or a small threshold change could flip
    it), with ``near_threshold`` naming each statistic, its value and the threshold."""
    ds = lake.dataset("curated")
    if ds is None or "near_threshold" not in ds.schema.names:  # a lake curated before the column existed
        return []
    t = lake.read("curated", columns=["clip_id", "uri", "start_frame", "end_frame", "keep", "near_threshold"])
    return [r for r in t.to_pylist() if r["near_threshold"]]


def _clip_name(r: dict[str, Any]) -> str:
    return f'{os.path.basename(r["uri"])} [{r["start_frame"]}, {r["end_frame"]})'


def _near_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No decision sits within the margin of its threshold.</p>"
    body = "".join(f"<tr><td><code>{html.escape(_clip_name(r))}</code></td><td>{'kept' if r['keep'] else 'rejected'}"
                   f"</td><td>{html.escape('; '.join(r['near_threshold']))}</td></tr>" for r in rows)
    return f"<table><tr><th>clip</th><th>decision</th><th>statistic ~ threshold</th></tr>{body}</table>"


def _svg_histogram(title: str, kept: list[float], rejected: list[float], bins: int = 20) -> str:
    values = kept + rejected
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1.0
    width, height, pad = 320, 120, 18

    def counts(vs: list[float]) -> list[int]:
        c = [0] * bins
        for v in vs:
            c[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
        return c

    ck, cr = counts(kept), counts(rejected)
    top = max(a + b for a, b in zip(ck, cr)) or 1
    bw = (width - 2 * pad) / bins
    bars = []
    for i, (a, b) in enumerate(zip(ck, cr)):
        x = pad + i * bw
        ha, hb = (height - 2 * pad) * a / top, (height - 2 * pad) * b / top
        y0 = height - pad
        bars.append(f'<rect x="{x:.1f}" y="{y0 - ha:.1f}" width="{bw - 1:.1f}" height="{ha:.1f}" fill="#3a7"/>')
        bars.append(f'<rect x="{x:.1f}" y="{y0 - ha - hb:.1f}" width="{bw - 1:.1f}" height="{hb:.1f}" fill="#c55"/>')
    return (f'<figure><svg width="{width}" height="{height}" role="img"><title>{html.escape(title)}</title>'
            + "".join(bars)
            + f'<text x="{pad}" y="{height - 3}" font-size="10">{lo:.3g}</text>'
            + f'<text x="{width - pad}" y="{height - 3}" font-size="10" text-anchor="end">{hi:.3g}</text>'
            + f'</svg><figcaption>{html.escape(title)} (green kept, red rejected)</figcaption></figure>')


def _thumb_strip(rows: list[dict[str, Any]], keyframes: dict[str, list[bytes]]) -> str:
    cells = []
    for r in rows:
        imgs = "".join(f'<img src="data:image/jpeg;base64,{base64.b64encode(k).decode()}" height="72">'
                       for k in (keyframes.get(r["clip_id"]) or [])[:3])
        why = ", ".join(r["reject_reasons"] or []) or "kept"
        name = f'{os.path.basename(r["uri"])} [{r["start_frame"]}, {r["end_frame"]})'
        cells.append(f'<div class="clip">{imgs}<br><code>{html.escape(name)}</code> '
                     f'{html.escape(r.get("motion_tier") or "")}<br><small>{html.escape(why)}</small></div>')
    return "".join(cells)


def write_report(lake: Lake, cfg: ReportConfig, out_dir: str | None = None) -> str:
    """Write ``summary.txt`` and ``report.html`` under ``out_dir`` (default: ``report.out_dir``, else
    ``<lake>/reports`` for a local lake and ``./curation_report`` for an object-store one); returns it."""
    out_dir = out_dir or cfg.out_dir or (os.path.join(lake.root, "reports") if lake.is_local
                                         else "curation_report")
    os.makedirs(out_dir, exist_ok=True)
    summary = text_summary(lake)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    curated = lake.read("curated", columns=["clip_id", "uri", "start_frame", "end_frame", "media_type", "keep", "reject_reasons", "motion_tier",
                                            "scores_json"])
    rows = curated.to_pylist()
    scores = [json.loads(r["scores_json"]) for r in rows]
    for s, r in zip(scores, rows):
        if r["media_type"] == "image":  # an image has no duration or motion: keep it out of those histograms
            for key in [k for k in s if k.startswith(("duration_resolution.duration", "motion."))]:
                del s[key]
    figs = []
    for key in HISTOGRAM_SCORES:
        log = key in LOG_SCALE_SCORES
        f = (lambda v: math.log10(max(v, 1e-6))) if log else float
        kept = [f(s[key]) for s, r in zip(scores, rows) if r["keep"] and _ok(s.get(key))]
        rej = [f(s[key]) for s, r in zip(scores, rows) if not r["keep"] and _ok(s.get(key))]
        figs.append(_svg_histogram(f"log10({key})" if log else key, kept, rej))
    n = cfg.thumbnails_per_group
    kept_rows = [r for r in rows if r["keep"]][:n]
    rej_rows = [r for r in rows if not r["keep"]][:n]
    ids = [r["clip_id"] for r in kept_rows + rej_rows]
    keyframes: dict[str, list[bytes]] = {}
    if ids:
        t = lake.read("clips", columns=["clip_id", "keyframes"])
        t = t.filter(pa.compute.is_in(t.column("clip_id"), pa.array(ids)))
        keyframes = dict(zip(t.column("clip_id").to_pylist(), t.column("keyframes").to_pylist()))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Curation report</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:.5em}}
.clip{{display:inline-block;margin:.4em;padding:.3em;border:1px solid #ccc;font-size:12px;vertical-align:top}}
pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>Curation report</h1><pre>{html.escape(summary)}</pre>
<h2>Score histograms</h2>{''.join(figs)}
<h2>Near threshold</h2>{_near_table(near_threshold_rows(lake))}
<h2>Kept clips (first {len(kept_rows)})</h2>{_thumb_strip(kept_rows, keyframes)}
<h2>Rejected clips (first {len(rej_rows)})</h2>{_thumb_strip(rej_rows, keyframes)}
</body></html>"""
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(page)
    return out_dir


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
