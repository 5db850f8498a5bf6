"""The preference weighting recovers planted weights; the table formats read alike; bad tables are named."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from bench.dimensions import DIMENSIONS
from bench.weights import (
    PreferenceError,
    Weights,
    fit_weights,
    read_preferences,
    scores_from_rows,
    uniform_weights,
    weighted_total,
)


def planted(seed: int = 0, n_videos: int = 2000, n_pairs: int = 30000, rough: bool = False):
    """Videos with random dimension scores, a latent human score = planted weights . scores, and noisy pairwise
    preferences (plus rough scores) drawn from it."""
    rng = np.random.default_rng(seed)
    dims = list(DIMENSIONS)
    w = rng.permutation(np.arange(1, len(dims) + 1, dtype=float))
    w /= w.sum()
    s = rng.uniform(0, 1, (n_videos, len(dims)))
    latent = s @ w
    vids = [f"v{i}" for i in range(n_videos)]
    a, b = rng.integers(0, n_videos, n_pairs), rng.integers(0, n_videos, n_pairs)
    keep = a != b
    a, b = a[keep], b[keep]
    noisy = latent + rng.normal(0, 0.03, n_videos)
    rows = [{"prompt": f"p{i % 50}", "video_a": vids[i_a], "video_b": vids[i_b],
             "preferred": "a" if noisy[i_a] > noisy[i_b] else "b"} for i, (i_a, i_b) in enumerate(zip(a, b))]
    if rough:
        for r, i_a, i_b in zip(rows, a, b):
            r["score_a"], r["score_b"] = float(latent[i_a] * 10 + rng.normal(0, 0.3)), float(
                latent[i_b] * 10 + rng.normal(0, 0.3))
    scores = {v: dict(zip(dims, s[i])) for i, v in enumerate(vids)}
    return dict(zip(dims, w)), rows, scores


@pytest.mark.parametrize("rough", [False, True])
def test_fit_recovers_planted_weights(rough):
    truth, rows, scores = planted(rough=rough)
    fit = fit_weights(rows, scores)
    dims = sorted(truth)
    rho = spearmanr([truth[d] for d in dims], [fit.weights[d] for d in dims]).statistic
    assert rho >= 0.9, rho
    assert fit.fitted and abs(sum(fit.weights.values()) - 1) < 1e-9


def test_weighted_total_and_uniform_until_fitted():
    u = uniform_weights(["a", "b"])
    assert weighted_total({"a": 1.0, "b": 0.0}, u) == 0.5
    w = Weights({"a": 0.75, "b": 0.25})
    assert weighted_total({"a": 1.0, "b": 0.0}, w) == 0.75
    assert weighted_total({"a": 0.2}, w) == pytest.approx(0.2)  # renormalised over present dimensions
    assert Weights.from_json(w.to_json()) == w
    none = fit_weights([{"prompt": "p", "video_a": "x", "video_b": "y", "preferred": "tie"}],
                       {"x": {"a": 1.0, "b": 0.0}, "y": {"a": 0.0, "b": 1.0}})
    assert not none.fitted and none.weights == {"a": 0.5, "b": 0.5}


def test_csv_jsonl_parquet_read_alike(tmp_path):
    _, rows, scores = planted(n_videos=50, n_pairs=400)
    table = pa.Table.from_pylist(rows)
    pcsv.write_csv(table, tmp_path / "p.csv")
    pq.write_table(table, tmp_path / "p.parquet")
    (tmp_path / "p.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    fits = [fit_weights(tmp_path / f"p.{ext}", scores).weights for ext in ("csv", "jsonl", "parquet")]
    assert fits[0] == pytest.approx(fits[1]) and fits[1] == pytest.approx(fits[2])
    assert read_preferences(tmp_path / "p.csv")[0]["preferred"] in ("a", "b")


def test_bad_tables_are_named(tmp_path):
    (tmp_path / "bad.csv").write_text("prompt,video_a,video_b\np,x,y\n")
    with pytest.raises(PreferenceError, match="missing column.*preferred"):
        read_preferences(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("prompt,video_a,video_b,preferred\np,x,y,both\n")
    with pytest.raises(PreferenceError, match="bad2.csv row 1"):
        read_preferences(tmp_path / "bad2.csv")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(PreferenceError, match="format"):
        read_preferences(tmp_path / "p.txt")


def test_scores_from_bench_rows():
    rows = [{"sample_id": "s1", "dimension": "large_motion", "score": 0.5},
            {"sample_id": "s1", "dimension": "smoothness", "score": None}]
    assert scores_from_rows(rows) == {"s1": {"large_motion": 0.5}}
