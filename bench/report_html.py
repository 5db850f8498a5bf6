"""The Wan-Bench HTML page: Table 2, a radar chart as inline SVG, and sample cards. No script, no network."""
from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

from bench.summary import RunSummary

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
GROUP_TITLES = {"dynamic_quality": "Dynamic quality", "image_quality": "Image quality",
                "instruction_following": "Instruction following"}
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
table.t2{border-collapse:collapse;min-width:480px} .t2 td,.t2 th{border:1px solid #ccc;padding:4px 10px}
.t2 th{background:#f3f3f3} .t2 td.num{text-align:right;font-variant-numeric:tabular-nums}
.t2 tr.group td{background:#eef3fa;font-weight:600} .t2 tr.total td{font-weight:700;background:#fafafa}
.t2 td.best{color:#0a6b0a;font-weight:700}
.cards{display:flex;flex-wrap:wrap;gap:12px} .card{border:1px solid #ddd;border-radius:6px;padding:8px;width:280px}
.card img{width:128px;image-rendering:pixelated;border:1px solid #eee;display:block;margin-bottom:6px}
.card .prompt{font-size:13px;font-style:italic;margin-bottom:4px} .card table{font-size:12px;width:100%}
.card details{font-size:11px;color:#444} .card pre{white-space:pre-wrap;word-break:break-word;margin:2px 0}
.err{color:#b00020;font-size:12px} .qa{font-size:11px;margin:3px 0;color:#333} .legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
"""


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.2f}%"


def table2(summaries: list[RunSummary], groups: list[tuple[str, list[str]]]) -> str:
    """Rows: dimensions under their group, then the weighted total; columns: runs (the best run in bold)."""
    head = "".join(f"<th>{html.escape(s.run)}</th>" for s in summaries)
    rows = [f"<table class='t2'><tr><th>Dimension</th>{head}</tr>"]
    for group, dims in groups:
        rows.append(f"<tr class='group'><td colspan='{len(summaries) + 1}'>"
                    f"{html.escape(GROUP_TITLES.get(group, group))}</td></tr>")
        for dim in dims:
            rows.append(f"<tr><td>{html.escape(dim)}</td>{_cells([s.means.get(dim) for s in summaries])}</tr>")
    rows.append(f"<tr class='total'><td>Weighted total</td>{_cells([s.total for s in summaries])}</tr></table>")
    return "\n".join(rows)


def _cells(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    best = max(known) if len(known) > 1 else None
    return "".join(f"<td class='num{' best' if v is not None and v == best else ''}'>{_pct(v)}</td>" for v in values)


def radar_svg(summaries: list[RunSummary], dims: list[str], size: int = 420) -> str:
    """One polygon per run over the dimensions (0 at the centre, 1 on the outer ring)."""
    if not dims:
        return "<p>(no dimension scored)</p>"
    c, r = size / 2, size / 2 - 40
    def point(i: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * i / len(dims)
        return c + r * v * math.cos(a), c + r * v * math.sin(a)
    pad = 110  # room for the axis labels left and right
    parts = [(f"<svg class='radar' xmlns='http://www.w3.org/2000/svg' width='{size + 2 * pad}' height='{size}' "
              f"viewBox='{-pad} 0 {size + 2 * pad} {size}'>")]
    for ring in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, ring) for i in range(len(dims))))
        parts.append(f"<polygon points='{pts}' fill='none' stroke='#ccc'/>")
    for i, dim in enumerate(dims):
        x, y = point(i, 1.0)
        lx, ly = point(i, 1.12)
        anchor = "middle" if abs(lx - c) < 5 else ("start" if lx > c else "end")
        parts.append(f"<line x1='{c}' y1='{c}' x2='{x:.1f}' y2='{y:.1f}' stroke='#ddd'/>"
                     f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='11' text-anchor='{anchor}'>{html.escape(dim)}</text>")
    for k, s in enumerate(summaries):
        colour = COLOURS[k % len(COLOURS)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, s.means.get(d) or 0.0) for i, d in enumerate(dims)))
        parts.append(f"<polygon class='run' data-run='{html.escape(s.run)}' points='{pts}' fill='{colour}' "
                     f"fill-opacity='0.15' stroke='{colour}' stroke-width='2'/>")
    parts.append("</svg>")
    legend = "".join(f"<span><i style='background:{COLOURS[k % len(COLOURS)]}'></i>{html.escape(s.run)}</span>"
                     for k, s in enumerate(summaries))
    return "".join(parts) + f"<div class='legend'>{legend}</div>"


def _value(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, int | float) else html.escape(str(v))


def judge_answers(dim: str, evidence: Any) -> list[str]:
    """The VLM judge's questions and answers of one score (evidence ``{"judge": [{question, answer, value}]}``)."""
    if not isinstance(evidence, dict) or not isinstance(evidence.get("judge"), list):
        return []
    out = []
    for a in evidence["judge"]:
        if isinstance(a, dict):
            out.append(f"<div class='qa'><b>{html.escape(dim)}</b> Q: {html.escape(str(a.get('question', '')))}"
                       f"<br>A: {html.escape(str(a.get('answer', '')))} ({_value(a.get('value'))})</div>")
    return out


def card(sample: dict[str, Any]) -> str:
    """A sample's thumbnail, prompt, per-dimension scores and evidence."""
    img = (f"<img alt='{html.escape(sample['sample_id'])}' src='data:image/png;base64,"
           f"{base64.b64encode(sample['thumbnail']).decode()}'>" if sample.get("thumbnail") else "")
    rows, details, answers = [], [], []
    for dim, s in sorted(sample["scores"].items()):
        value = _pct(s["score"]) if s["error"] is None else "<span class='err'>error</span>"
        rows.append(f"<tr><td>{html.escape(dim)}</td><td class='num'>{value}</td></tr>")
        body = s["error"] if s["error"] is not None else json.dumps(s["evidence"], indent=1)[:1500]
        details.append(f"<b>{html.escape(dim)}</b><pre>{html.escape(str(body))}</pre>")
        answers += judge_answers(dim, s["evidence"])
    err = f"<div class='err'>{html.escape(sample['error'])}</div>" if sample.get("error") else ""
    return (f"<div class='card'>{img}<div class='prompt'>{html.escape(sample.get('prompt') or '')}</div>"
            f"<div style='font-size:11px;color:#777'>{html.escape(sample['sample_id'])}</div>{err}"
            f"<table>{''.join(rows)}</table>{''.join(answers)}<details><summary>evidence</summary>{''.join(details)}</details></div>")


def render_page(summaries: list[RunSummary], groups: list[tuple[str, list[str]]],
                cards: dict[str, list[dict[str, Any]]]) -> str:
    runs = ", ".join(s.run for s in summaries)
    dims = [d for _, ds in groups for d in ds]
    weights = "; ".join(f"{html.escape(s.run)}: {html.escape(s.weights_source)} weights" for s in summaries)
    intro = f"<p>Scores in [0, 1] shown as percentages, higher is better; {weights}.</p>"
    body = [f"<h1>Wan-Bench: {html.escape(runs)}</h1>", intro, "<h2>Per-dimension scores (Table 2 layout)</h2>",
            table2(summaries, groups),
            "<h2>Radar</h2>", radar_svg(summaries, dims)]
    for s in summaries:
        shown = cards.get(s.run, [])
        body.append(f"<h2>Samples of {html.escape(s.run)} ({len(shown)} shown)</h2><div class='cards'>"
                    + "".join(card(c) for c in shown) + "</div>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Wan-Bench {html.escape(runs)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
