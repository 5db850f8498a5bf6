"""Models for the demo: tiny random-initialised ones where the config names the demo's model folder, and an
overexposure expert trained on the generator's ground truth between the ``embed`` and ``experts`` stages.

A config path under ``out/demo/models/`` (as ``jobs/configs/demo.yaml`` has them) is moved under the demo's output
folder and, when missing, filled with a tiny random model of the right kind; any other path is a user's real
weights and is used as given (and must exist).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

from curation.lake.tables import Lake

log = logging.getLogger(__name__)

DEMO_MODELS = "out/demo/models/"


def _demo_path(path: str | None, out: str) -> str | None:
    if path is None or not path.startswith(DEMO_MODELS):
        return None
    return os.path.join(out, "models", path[len(DEMO_MODELS):])


def prepare_demo_models(cfg: Any, out: str) -> Any:
    """``cfg`` with demo model paths under ``out/models`` and tiny random CLIP / aesthetic / NSFW-head weights
    created where missing (expert heads are trained later, by ``train_demo_experts``)."""
    from curation.models.aesthetic import save_random_aesthetic_head
    from curation.models.clip import CONFIG_FILE, save_tiny_clip
    from curation.stages.model_stages import embedding_dim

    cfg = cfg.model_copy(deep=True)
    if cfg.embed.clip is not None and (p := _demo_path(cfg.embed.clip.path, out)):
        if not os.path.exists(os.path.join(p, CONFIG_FILE)):
            log.info("demo: writing a tiny random open_clip model to %s", p)
            save_tiny_clip(p)
        cfg.embed.clip.path = p
    if (p := _demo_path(cfg.aesthetic.weights, out)) is not None:
        if not os.path.exists(p) and cfg.embed.clip is not None:
            save_random_aesthetic_head(p, embedding_dim(cfg.embed))
        cfg.aesthetic.weights = p
    cfg.experts.heads = {k: _demo_path(v, out) or v for k, v in cfg.experts.heads.items()}
    return cfg


def ground_truth_table(lake: Lake, labels: pa.Table, flag: str, out_uri: str) -> int:
    """A labelled table (``clip_id``, ``label``) from the generator's boolean ``flag`` column (e.g.
    ``overexposed``), one row per clip matched to a labelled segment; returns its row count."""
    from curation.evaluation import _match

    clips = lake.read("clips", columns=["clip_id", "uri", "start_frame", "end_frame"], filter="status = 'ok'")
    pairs = _match(labels.to_pylist(), clips.to_pylist())
    rows = {c["clip_id"]: int(bool(seg[flag])) for seg, c in pairs if c is not None}
    table = pa.table({"clip_id": list(rows), "label": pa.array(list(rows.values()), pa.int8())})
    lance.write_dataset(table, out_uri, mode="overwrite")
    return table.num_rows


def train_demo_experts(cfg: Any, labels: pa.Table, out: str) -> dict[str, dict[str, float]]:
    """Train every expert named in ``cfg.experts.heads`` under the demo's model folder whose label the generator
    knows (``overexposure`` from ``overexposed``); returns each head's held-out metrics."""
    from curation.stages.train_expert import train_expert

    flags = {"overexposure": "overexposed"}
    lake = Lake(cfg.lake)
    metrics = {}
    for name, path in cfg.experts.heads.items():
        if not path.startswith(os.path.join(out, "models")) or os.path.exists(path):
            continue
        if name not in flags:
            raise ValueError(f"the demo can train expert '{name}' only if the generator labels it "
                             f"(known: {sorted(flags)}); name a trained head instead")
        table = str(Path(out) / "models" / f"{name}_labels.lance")
        n = ground_truth_table(lake, labels, flags[name], table)
        head = train_expert(name, table, path, "binary", lake=lake, hidden=32)
        log.info("demo: expert %s trained on %d clips: %s", name, n, head.metrics)
        metrics[name] = head.metrics
    return metrics


def text_detection_scores(lake: Lake, labels: pa.Table, max_text_coverage: float) -> dict[str, float]:
    """OCR text detection against the generator's text overlays: a clip "has text" when its max keyframe
    coverage exceeds ``max_text_coverage`` (select's threshold). Accuracy, F1 and the counts."""
    from curation.evaluation import _match

    if not lake.exists("stages/ocr"):
        return {}
    clips = lake.read("clips", columns=["clip_id", "uri", "start_frame", "end_frame"], filter="status = 'ok'")
    ocr = {r["clip_id"]: r["text_coverage_max"] for r in
           lake.read("stages/ocr", columns=["clip_id", "text_coverage_max"], filter="status = 'ok'").to_pylist()}
    pairs = [(bool(seg["text_strings"]), (ocr.get(c["clip_id"]) or 0.0) > max_text_coverage)
             for seg, c in _match(labels.to_pylist(), clips.to_pylist()) if c is not None]
    tp = sum(t and p for t, p in pairs)
    fp = sum(p and not t for t, p in pairs)
    fn = sum(t and not p for t, p in pairs)
    n = len(pairs)
    return {"accuracy": (n - fp - fn) / n if n else 0.0, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "n": float(n), "true_pos": float(tp), "false_pos": float(fp), "false_neg": float(fn)}
