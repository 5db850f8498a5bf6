"""Training an expert head from a labelled Lance table (``wan curate train-expert``).

The table holds a label column (0/1 or bool for a classifier, a number for a regressor) and either ``clip_id``
(embeddings are read from the lake's ``stages/embed``, so they are exactly what the ``experts`` stage will score)
or ``image`` (JPEG/PNG bytes, embedded here with the CLIP model the ``embed`` stage uses). The head is saved as
safetensors + JSON (``curation.models.expert_head``) with its held-out metrics.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import lance
import numpy as np

from curation.lake.schemas import EMBED_TABLE, STATUS_OK
from curation.lake.tables import Lake
from curation.models.expert_head import Head, HeadKind, train_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledEmbeddings:
    embeddings: np.ndarray  # (N, D) float32
    targets: np.ndarray  # (N,) float32
    source: str  # "clip_id" | "image"
    skipped: int  # rows without an embedding or with an undecodable image


def _targets(values: list[Any], kind: HeadKind, column: str) -> np.ndarray:
    if any(v is None for v in values):
        raise ValueError(f"label column '{column}' has null values")
    y = np.asarray([float(v) for v in values], np.float32)
    if kind == "binary" and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"a binary expert needs labels 0/1 (or bool) in '{column}', got {sorted(set(y.tolist()))[:6]}")
    return y


def labelled_embeddings(table_uri: str, kind: HeadKind, label_column: str = "label", lake: Lake | None = None,
                        clip: Any | None = None, batch_size: int = 64) -> LabelledEmbeddings:
    """Embeddings and targets of a labelled table. ``clip_id`` rows need ``lake`` (its ``stages/embed``);
    ``image`` rows need ``clip`` (a ``ClipEncoder``)."""
    if not Path(table_uri).exists() and "://" not in table_uri:
        raise FileNotFoundError(f"labelled table not found: {table_uri}")
    ds = lance.dataset(table_uri)
    names = ds.schema.names
    if label_column not in names:
        raise ValueError(f"labelled table {table_uri} has no '{label_column}' column (columns: {names})")
    if "clip_id" in names:
        if lake is None:
            raise ValueError("a table keyed by clip_id needs the lake whose stages/embed holds the embeddings")
        t = ds.to_table(columns=["clip_id", label_column]).sort_by("clip_id")  # seeded split: row-order free
        emb = lake.read(EMBED_TABLE, columns=["clip_id", "embedding"], filter=f"status = '{STATUS_OK}'")
        by_id = dict(zip(emb.column("clip_id").to_pylist(), range(emb.num_rows)))
        ids, labels = t.column("clip_id").to_pylist(), t.column(label_column).to_pylist()
        keep = [i for i, c in enumerate(ids) if c in by_id]
        if not keep:
            raise ValueError(f"none of the {len(ids)} clip_ids of {table_uri} has an embedding in {lake.root}: "
                             "run the 'embed' stage first")
        flat = emb.column("embedding").combine_chunks()
        dim = flat.type.list_size if hasattr(flat.type, "list_size") else len(flat[0])
        matrix = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
        x = matrix[[by_id[ids[i]] for i in keep]]
        y = _targets([labels[i] for i in keep], kind, label_column)
        return LabelledEmbeddings(x, y, "clip_id", len(ids) - len(keep))
    if "image" in names:
        if clip is None:
            raise ValueError("a table of images needs a CLIP model to embed them (--clip or a config with embed.clip)")
        t = ds.to_table(columns=["image", label_column])
        images, labels, skipped = [], [], 0
        for data, label in zip(t.column("image").to_pylist(), t.column(label_column).to_pylist()):
            frame = cv2.imdecode(np.frombuffer(data or b"", np.uint8), cv2.IMREAD_COLOR) if data else None
            if frame is None:
                skipped += 1
                continue
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            labels.append(label)
        if not images:
            raise ValueError(f"no decodable image in {table_uri}")
        x = np.concatenate([clip.encode_images(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        return LabelledEmbeddings(x, _targets(labels, kind, label_column), "image", skipped)
    raise ValueError(f"labelled table {table_uri} needs a 'clip_id' or an 'image' column (columns: {names})")


def train_expert(name: str, table_uri: str, out: str | Path, kind: HeadKind = "binary", label_column: str = "label",
                 lake: Lake | None = None, clip: Any | None = None, **train_kwargs: Any) -> Head:
    """Train and save expert ``name`` from a labelled table; returns the head (metrics in ``head.metrics``)."""
    data = labelled_embeddings(table_uri, kind, label_column, lake, clip)
    if data.skipped:
        log.warning("train-expert %s: %d rows skipped (no embedding or undecodable image)", name, data.skipped)
    info = {"name": name, "table": table_uri, "label_column": label_column, "source": data.source,
            "rows": len(data.targets), "skipped": data.skipped,
            "embed_model": getattr(clip, "model_id", None)}
    head = train_head(data.embeddings, data.targets, kind, info=info, **train_kwargs)
    head.save(out)
    return head
