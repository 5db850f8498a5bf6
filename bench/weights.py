"""Human-preference weighting of the Wan-Bench dimensions (report section 4.6).

Input: a table of human pairwise preferences, as CSV, JSON lines or Parquet (by file extension), one row per
comparison, with the columns

    prompt     str    the prompt both videos were sampled from
    video_a    str    the first video's sample id (as in ``bench_scores``)
    video_b    str    the second video's sample id
    preferred  str    "a", "b" or "tie" (the preferred video's id is accepted too)
    score_a    float  optional: a rough human score of video a (any scale, higher is better)
    score_b    float  optional: the same for video b

and the dimension scores of the videos: ``{sample_id: {dimension: score}}`` (``scores_from_rows`` builds it from
``bench_scores``-style rows with ``sample_id``, ``dimension`` and ``score``).

Human score of a video: the mean of its rough scores when every row carries both, else its win rate
(wins + ties / 2, over its comparisons). Fit: each dimension's weight is the Pearson correlation, over the videos
with both, of its scores with the human scores; negative or undefined correlations count 0, and the weights are
normalised to sum 1 (uniform when none is positive). Until a user fits weights, ``uniform_weights`` applies.
The weighted total of a video is the weighted mean of the dimensions it has scores for.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED = ("prompt", "video_a", "video_b", "preferred")


class PreferenceError(ValueError):
    """A preference table that cannot be used; the message names the file, row or column."""


@dataclass(frozen=True)
class Weights:
    weights: dict[str, float]
    correlations: dict[str, float | None] = field(default_factory=dict)
    num_videos: int = 0
    fitted: bool = False

    def to_json(self) -> str:
        return json.dumps({"weights": self.weights, "correlations": self.correlations,
                           "num_videos": self.num_videos, "fitted": self.fitted}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Weights:
        d = json.loads(text)
        return cls(d["weights"], d.get("correlations", {}), d.get("num_videos", 0), d.get("fitted", False))


def uniform_weights(dimensions: Iterable[str]) -> Weights:
    dims = list(dimensions)
    return Weights({d: 1.0 / len(dims) for d in dims})


def read_preferences(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a preference table (``.csv``, ``.jsonl``/``.json``, ``.parquet``), checked."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise PreferenceError(f"preference table not found: {p}")
    readers = {".csv": pcsv.read_csv, ".jsonl": pjson.read_json, ".json": pjson.read_json,
               ".parquet": pq.read_table}
    if p.suffix.lower() not in readers:
        raise PreferenceError(f"{p}: unknown preference table format {p.suffix!r} (csv, jsonl, parquet)")
    table = readers[p.suffix.lower()](str(p))
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise PreferenceError(f"{p}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    rows = table.to_pylist()
    for i, r in enumerate(rows, start=1):
        r["preferred"] = _side(r, f"{p.name} row {i}")
    return rows


def _side(row: Mapping[str, Any], where: str) -> str:
    pref = str(row["preferred"]).strip()
    if pref.lower() in ("a", "b", "tie"):
        return pref.lower()
    if pref == str(row["video_a"]):
        return "a"
    if pref == str(row["video_b"]):
        return "b"
    raise PreferenceError(f"{where}: preferred must be 'a', 'b', 'tie' or one of the two videos, got {pref!r}")


def human_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per video: its mean rough score when every row has both, else its win rate."""
    rough = all(r.get("score_a") is not None and r.get("score_b") is not None for r in rows) and rows
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        a, b = str(r["video_a"]), str(r["video_b"])
        if rough:
            acc[a].append(float(r["score_a"]))
            acc[b].append(float(r["score_b"]))
        else:
            win_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[r["preferred"]]
            acc[a].append(win_a)
            acc[b].append(1.0 - win_a)
    return {v: float(np.mean(s)) for v, s in acc.items()}


def scores_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{sample_id: {dimension: score}}`` from rows with ``sample_id``, ``dimension``, ``score`` (None skipped)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("score") is not None:
            out[str(r["sample_id"])][str(r["dimension"])] = float(r["score"])
    return dict(out)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def fit_weights(preferences: list[dict[str, Any]] | str | Path, scores: Mapping[str, Mapping[str, float]]
                ) -> Weights:
    """Each dimension's weight: its scores' Pearson correlation with the human scores, clipped at 0, normalised."""
    rows = read_preferences(preferences) if isinstance(preferences, (str, Path)) else [
        {**r, "preferred": _side(r, f"row {i}")} for i, r in enumerate(preferences, start=1)]
    human = human_scores(rows)
    dims = sorted({d for s in scores.values() for d in s})
    corr: dict[str, float | None] = {}
    for d in dims:
        vids = [v for v in human if d in scores.get(v, {})]
        corr[d] = _pearson(np.array([scores[v][d] for v in vids]), np.array([human[v] for v in vids]))
    raw = {d: max(0.0, c or 0.0) for d, c in corr.items()}
    total = sum(raw.values())
    if total <= 0:
        return Weights(uniform_weights(dims).weights, corr, len(human), fitted=False)
    return Weights({d: w / total for d, w in raw.items()}, corr, len(human), fitted=True)


def weighted_total(scores: Mapping[str, float], weights: Weights) -> float:
    """The weighted mean of the dimensions ``scores`` has (weights renormalised over them)."""
    present = [(weights.weights[d], s) for d, s in scores.items() if d in weights.weights]
    wsum = sum(w for w, _ in present)
    if wsum <= 0:
        raise ValueError(f"no weighted dimension among {sorted(scores)}")
    return float(sum(w * s for w, s in present) / wsum)
