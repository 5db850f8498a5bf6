"""The generated corpus's ground truth for the embedding stages in the demo.

A simulated rater: 1-5 ratings of the ``ratings_todo`` clips from the generator's labels, standing in for the
people who rate real data (report 3.1 "Scoring"). A clean clip gets 5; each known defect takes points off: blur
and overexposure 2 each, a logo, burnt-in text, a black border, or shaky / low-quality motion 1 each (floor 1). The
ratings go through the same file import a real rating round uses.

And the scores of the quality expert and of semantic dedup against the labels (the generator's re-encoded and
resized copies are the known near-duplicates).
"""
from __future__ import annotations

import os

import pyarrow as pa

from curation.lake.tables import Lake

DEFECT_POINTS = {"blurred": 2, "overexposed": 2, "logo": 1, "text": 1, "border": 1, "bad_motion": 1}


def rating_from_label(segment: dict) -> int:
    """The simulated rating of one generator label row."""
    defects = {
        "blurred": bool(segment.get("blurred")),
        "overexposed": bool(segment.get("overexposed")),
        "logo": bool(segment.get("logo")),
        "text": bool(segment.get("text_strings")),
        "border": any((segment.get(f"border_{s}") or 0) > 0 for s in ("top", "bottom", "left", "right")),
        "bad_motion": segment.get("motion_kind") in ("shaky", "low_quality"),
    }
    return max(1, 5 - sum(DEFECT_POINTS[k] for k, v in defects.items() if v))


def ratings_from_labels(lake: Lake, labels: pa.Table) -> dict[str, int]:
    """``{clip_id: rating}`` for every ok clip matched to a labelled segment."""
    from curation.evaluation import _match

    clips = lake.read("clips", columns=["clip_id", "uri", "start_frame", "end_frame"], filter="status = 'ok'")
    return {c["clip_id"]: rating_from_label(seg) for seg, c in _match(labels.to_pylist(), clips.to_pylist())
            if c is not None}


def rate_todo_from_labels(lake: Lake, labels: pa.Table, quality_cfg, out_csv: str) -> int:
    """Write ``ratings_todo`` (as the quality stage would), rate those clips from the labels into ``out_csv``
    and import it into ``ratings``; returns the number of ratings imported."""
    from curation.stages.quality import import_ratings, write_ratings_todo

    write_ratings_todo(lake, quality_cfg)
    truth = ratings_from_labels(lake, labels)
    todo = [c for c in lake.read("ratings_todo", columns=["clip_id"]).column("clip_id").to_pylist() if c in truth]
    os.makedirs(os.path.dirname(out_csv) or ".", exist_ok=True)
    with open(out_csv, "w") as f:
        f.write("clip_id,rating,rater\n")
        f.writelines(f"{c},{truth[c]},simulated\n" for c in todo)
    return import_ratings(lake, out_csv)


def quality_agreement(lake: Lake, labels: pa.Table) -> dict[str, float]:
    """Spearman correlation between the quality scores and the simulated ratings on clips nobody rated (how
    well the expert generalises; near 0 with a random-initialised CLIP model, as the demo uses by default)."""
    from scipy.stats import spearmanr

    truth = ratings_from_labels(lake, labels)
    rated = set(lake.read("ratings", columns=["clip_id"]).column("clip_id").to_pylist())
    q = lake.read("stages/quality", columns=["clip_id", "quality"], filter="status = 'ok'")
    pairs = [(s, truth[c]) for c, s in zip(q.column("clip_id").to_pylist(), q.column("quality").to_pylist())
             if c in truth and c not in rated]
    if len(pairs) < 3 or len({t for _, t in pairs}) < 2:
        return {"held_out": float(len(pairs))}
    return {"held_out": float(len(pairs)), "spearman": float(spearmanr(*zip(*pairs)).statistic)}


def semantic_dedup_agreement(lake: Lake, labels: pa.Table) -> dict[str, float]:
    """Precision and recall of ``stages/semantic_dedup`` against the generator's duplicate files (a segment of an
    original and the same segment of its re-encoded and resized copies form one set)."""
    from curation.evaluation import _match

    clips = lake.read("clips", columns=["clip_id", "uri", "start_frame", "end_frame"], filter="status = 'ok'")
    group = {c["clip_id"]: (seg["duplicate_of"] or seg["file"], seg["segment_index"])
             for seg, c in _match(labels.to_pylist(), clips.to_pylist()) if c is not None}
    sizes: dict[tuple[str, int], int] = {}
    for g in group.values():
        sizes[g] = sizes.get(g, 0) + 1
    should = sum(n - 1 for n in sizes.values())
    rows = lake.read("stages/semantic_dedup", columns=["clip_id", "is_duplicate", "duplicate_of"]).to_pylist()
    dropped = [r for r in rows if r["is_duplicate"]]
    correct = sum(1 for r in dropped if group.get(r["clip_id"]) is not None
                  and group.get(r["clip_id"]) == group.get(r["duplicate_of"]))
    return {"dropped": float(len(dropped)), "precision": correct / len(dropped) if dropped else 1.0,
            "recall": correct / should if should else 1.0}
