"""A Wan-Bench run's summary: per-dimension means over its ok rows, and the weighted total.

The weights are uniform over the scored dimensions unless a fitted weights file is given (JSON ``{dimension:
weight}``, or ``{"weights": {...}}`` as ``bench.weights`` writes it); either way they are normalised over the
dimensions the run has a mean for, so the total stays in [0, 1]. The summary is appended to ``bench_runs``
(key ``f"{run}@{scored rows}"``); a run's latest row is its summary.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.lake.schemas import STATUS_OK
from curation.lake.tables import KeyedWriter, Lake


@dataclass
class RunSummary:
    run: str
    means: dict[str, float]
    counts: dict[str, dict[str, int]]
    groups: dict[str, str]
    weights: dict[str, float]
    weights_source: str
    total: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"run {self.run}: weighted total {_fmt(self.total)} ({self.weights_source} weights)"]
        for dim, mean in sorted(self.means.items()):
            c = self.counts.get(dim, {})
            lines.append(f"  {dim:<28} {_fmt(mean)}  ok {c.get('ok', 0)}  error {c.get('error', 0)}")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def read_weights(path: str | None, dims: list[str]) -> tuple[dict[str, float], str]:
    """``(weights over dims, source)``: the file's (missing dimensions get 0) or uniform."""
    if path is None:
        return {d: 1.0 for d in dims}, "uniform"
    data = json.loads(Path(path).read_text())
    data = data.get("weights", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"weights_file {path}: need a JSON object {{dimension: weight}}")
    return {d: float(data.get(d, 0.0)) for d in dims}, str(path)


def weighted_total(means: dict[str, float], weights: dict[str, float]) -> float | None:
    """Σ w·mean / Σ w over the dimensions with a mean (None when no weight is left)."""
    used = {d: w for d, w in weights.items() if d in means and w > 0}
    norm = sum(used.values())
    return sum(w * means[d] for d, w in used.items()) / norm if norm > 0 else None


def scores_of(lake: Lake, runs: list[str] | None = None) -> pa.Table:
    """The ``bench_scores`` rows of ``runs`` (all runs when None)."""
    if not lake.exists("bench_scores"):
        return pa.table({})
    where = None if runs is None else "run IN (" + ", ".join("'" + r.replace("'", "''") + "'" for r in runs) + ")"
    return lake.read("bench_scores", columns=["run", "sample_id", "dimension", "group", "score", "evidence_json",
                                              "status", "error"], filter=where)


def summarize(rows: pa.Table, run: str, groups: dict[str, str], weights_file: str | None = None) -> RunSummary:
    """The summary of ``run`` from its score rows; ``groups`` names the dimensions (and their group)."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, dict[str, int]] = {d: {"ok": 0, "error": 0} for d in groups}
    seen_groups = dict(groups)
    for r in rows.to_pylist() if rows.num_rows else []:
        if r["run"] != run:
            continue
        dim = r["dimension"]
        seen_groups.setdefault(dim, r["group"] or "")
        c = counts.setdefault(dim, {"ok": 0, "error": 0})
        if r["status"] == STATUS_OK and r["score"] is not None:
            c["ok"] += 1
            sums.setdefault(dim, []).append(r["score"])
        else:
            c["error"] += 1
    means = {d: sum(v) / len(v) for d, v in sums.items()}
    weights, source = read_weights(weights_file, sorted(counts))
    return RunSummary(run, means, counts, seen_groups, weights, source, weighted_total(means, weights))


def write_summary(lake: Lake, run: str, groups: dict[str, str], weights_file: str | None = None) -> RunSummary:
    """Summarise ``run`` from the lake and append it to ``bench_runs``."""
    summary = summarize(scores_of(lake, [run]), run, groups, weights_file)
    n = sum(c["ok"] + c["error"] for c in summary.counts.values())
    KeyedWriter(lake, "bench_runs").append([{
        "summary_id": f"{run}@{n}@{summary.weights_source}", "run": run, "means_json": json.dumps(summary.means),
        "counts_json": json.dumps(summary.counts), "groups_json": json.dumps(summary.groups),
        "weights_json": json.dumps(summary.weights), "weights_source": summary.weights_source,
        "total": summary.total, "created_at": dt.datetime.now(dt.UTC)}])
    return summary


def load_summary(lake: Lake, run: str, weights_file: str | None = None) -> RunSummary:
    """A run's summary recomputed from its scores (with ``weights_file`` when given, else its recorded weights)."""
    rows = scores_of(lake, [run])
    if rows.num_rows == 0:
        known = sorted(set(scores_of(lake).column("run").to_pylist())) if lake.exists("bench_scores") else []
        raise ValueError(f"no bench run {run!r} in {lake.root}; runs there: {known}")
    groups = {d: g or "" for d, g in zip(rows.column("dimension").to_pylist(), rows.column("group").to_pylist())}
    if weights_file is None and lake.exists("bench_runs"):
        recorded = lake.read("bench_runs", filter="run = '" + run.replace("'", "''") + "'")
        if recorded.num_rows and recorded.column("weights_source")[0].as_py() != "uniform":
            latest = max(recorded.to_pylist(), key=lambda r: r["created_at"])
            weights_file = latest["weights_source"] if Path(latest["weights_source"]).is_file() else None
    return summarize(rows, run, groups, weights_file)
