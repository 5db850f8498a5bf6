"""Wan-Bench reports: one HTML page for a run or a comparison of runs, and the VBench-style JSON export.

The page (``bench.report_html``) holds the per-dimension table in the shape of the Wan 2.1 report's Table 2 (rows:
the dimensions grouped as dynamic quality / image quality / instruction following, then the weighted total;
columns: the runs), a radar chart (inline SVG), and per-sample thumbnails with their scores and the evidence
(the judge's answers). Everything is inline: the page opens without a network.

The JSON export follows VBench's ``*_eval_results.json``: ``{dimension: [mean, [{"video_path", "video_results"},
...]]}``, one file per run (with ``prompt`` and ``evidence`` added to each video's entry), and ``summary.json`` with
every run's means, weights and weighted total.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.summary import RunSummary, load_summary, scores_of
from curation.lake.schemas import STATUS_OK
from curation.lake.tables import Lake

GROUP_ORDER = ("dynamic_quality", "image_quality", "instruction_following")
MAX_SAMPLES = 48  # thumbnails per run on the page


def ordered_dimensions(summaries: list[RunSummary]) -> list[tuple[str, list[str]]]:
    """``[(group, [dimension...])]`` in the report's group order (unknown groups last), dimensions sorted."""
    groups: dict[str, set[str]] = {}
    for s in summaries:
        for dim in s.counts:
            groups.setdefault(s.groups.get(dim) or "other", set()).add(dim)
    order = [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)
    return [(g, sorted(groups[g])) for g in order]


def comparison_text(lake: Lake, runs: list[str], weights_file: str | None = None) -> str:
    """The Table 2 layout as plain text (one column per run)."""
    summaries = [load_summary(lake, r, weights_file) for r in runs]
    width = max(12, *(len(r) + 2 for r in runs))
    lines = ["dimension".ljust(30) + "".join(r.rjust(width) for r in runs)]
    for group, dims in ordered_dimensions(summaries):
        lines.append(f"[{group}]")
        for dim in dims:
            lines.append(f"  {dim}".ljust(30) + "".join(_cell(s.means.get(dim)).rjust(width) for s in summaries))
    lines.append("weighted total".ljust(30) + "".join(_cell(s.total).rjust(width) for s in summaries))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def sample_cards(lake: Lake, run: str, limit: int = MAX_SAMPLES) -> list[dict[str, Any]]:
    """Up to ``limit`` samples of ``run``: prompt, thumbnail PNG, status and ``{dimension: (score, evidence, error)}``."""
    if not lake.exists("bench_samples"):
        return []
    quoted = run.replace("'", "''")
    samples = lake.read("bench_samples", columns=["sample_id", "prompt", "thumbnail", "status", "error"],
                        filter=f"run = '{quoted}'").to_pylist()
    samples.sort(key=lambda r: r["sample_id"])
    samples = samples[:limit]
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for r in scores_of(lake, [run]).to_pylist():
        scores.setdefault(r["sample_id"], {})[r["dimension"]] = {
            "score": r["score"], "evidence": json.loads(r["evidence_json"]) if r["evidence_json"] else None,
            "error": r["error"]}
    return [{**s, "scores": scores.get(s["sample_id"], {})} for s in samples]


def vbench_results(lake: Lake, run: str) -> dict[str, list[Any]]:
    """VBench's eval-results shape for one run: ``{dimension: [mean, [per-video entries]]}`` (ok rows only)."""
    prompts = {}
    if lake.exists("bench_samples"):
        quoted = run.replace("'", "''")
        rows = lake.read("bench_samples", columns=["sample_id", "prompt"], filter=f"run = '{quoted}'")
        prompts = dict(zip(rows.column("sample_id").to_pylist(), rows.column("prompt").to_pylist()))
    per_dim: dict[str, list[dict[str, Any]]] = {}
    for r in scores_of(lake, [run]).to_pylist():
        if r["status"] == STATUS_OK and r["score"] is not None:
            per_dim.setdefault(r["dimension"], []).append({
                "video_path": r["sample_id"], "video_results": r["score"], "prompt": prompts.get(r["sample_id"]),
                "evidence": json.loads(r["evidence_json"]) if r["evidence_json"] else None})
    out: dict[str, list[Any]] = {}
    for dim in sorted(per_dim):
        videos = sorted(per_dim[dim], key=lambda v: v["video_path"])
        out[dim] = [sum(v["video_results"] for v in videos) / len(videos), videos]
    return out


def write_report(lake_uri: str, runs: list[str], out: str | Path, weights_file: str | None = None) -> dict[str, Any]:
    """Write ``report.html``, ``summary.json`` and ``<run>_eval_results.json`` per run into ``out``."""
    from bench.report_html import render_page

    lake = Lake(lake_uri)
    summaries = [load_summary(lake, r, weights_file) for r in runs]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    per_run = []
    for run in runs:
        path = folder / f"{_safe(run)}_eval_results.json"
        path.write_text(json.dumps(vbench_results(lake, run), indent=1))
        per_run.append(str(path))
    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps({"runs": [s.to_dict() for s in summaries],
                                        "groups": ordered_dimensions(summaries)}, indent=1))
    html = render_page(summaries, ordered_dimensions(summaries), {r: sample_cards(lake, r) for r in runs})
    html_path = folder / "report.html"
    html_path.write_text(html, encoding="utf-8")
    return {"html": str(html_path), "json": str(summary_path), "runs": per_run}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
