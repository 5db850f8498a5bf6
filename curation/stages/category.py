"""Stage ``category``: the zero-shot category (the report's 12 major categories, 3.2) and style of every
embedded clip, from CLIP text prompts (``curation.embeddings.zero_shot``) encoded by the text tower of the same
open_clip model that made the image embeddings (``embed.clip``).

The text embeddings are computed once on the driver; an actor pool then assigns each clip the label nearest its
stored embedding, writing ``stages/category``. Rows made with other labels, prompts or model are recomputed.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

from curation.config import CategoryConfig, ClipModelConfig
from curation.embeddings.zero_shot import LabelSet, TextEncoder, build_label_set
from curation.lake.schemas import EMBED_TABLE, stage_schema
from curation.lake.tables import Lake
from curation.stages.cluster import require_embeddings
from curation.stages.model_runner import ModelStageSpec, run_model_stage

STAGE = "category"
VERSION = "1"


class CategoryModel:
    """Actor model: the nearest category and style of each clip's embedding."""

    def __init__(self, categories: LabelSet, styles: LabelSet) -> None:
        self.categories, self.styles = categories, styles

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        if row.get("embedding") is None:
            raise ValueError("no embedding")
        emb = np.asarray(row["embedding"], np.float32)
        if emb.shape != (self.categories.embeddings.shape[1],):
            raise ValueError(f"embedding width {emb.shape} differs from the text embeddings' "
                             f"{self.categories.embeddings.shape[1]}")
        return emb

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        x = np.stack(prepared)
        cats, cat_p = self.categories.labels(x)
        styles, style_p = self.styles.labels(x)
        return [{"category": c, "category_score": float(cp), "style": s, "style_score": float(sp)}
                for c, cp, s, sp in zip(cats, cat_p, styles, style_p)]


def clip_text_encoder(clip: ClipModelConfig) -> TextEncoder:
    """The text tower of the configured open_clip model, as a function of a list of prompts."""
    from curation.models.clip import load_clip

    encoder = load_clip(clip.path, clip.architecture, clip.weights, device="cpu", precision="fp32")
    return encoder.encode_text


def label_sets(cfg: CategoryConfig, encode_text: TextEncoder) -> tuple[LabelSet, LabelSet]:
    """Text embeddings of the configured categories and styles."""
    return (build_label_set(cfg.categories, cfg.templates, encode_text),
            build_label_set(cfg.styles, cfg.templates, encode_text))


def labels_version(categories: LabelSet, styles: LabelSet) -> str:
    """``stage_version`` of rows labelled with these label sets (names and text embeddings)."""
    digest = hashlib.sha256()
    for ls in (categories, styles):
        digest.update("\x00".join(ls.names).encode())
        digest.update(np.round(ls.embeddings, 5).astype(np.float32).tobytes())
    return f"{VERSION}-{digest.hexdigest()[:12]}"


def run_category(lake: Lake, cfg: CategoryConfig, clip: ClipModelConfig | None, *, backend: str = "ray",
                 commit_every: int = 1024, encode_text: TextEncoder | None = None) -> dict[str, Any]:
    """Label every embedded clip; ``encode_text`` replaces the open_clip text tower (tests)."""
    index = require_embeddings(lake, STAGE)
    if index is None or len(index) == 0:
        if not lake.exists(f"stages/{STAGE}"):
            lake.overwrite(f"stages/{STAGE}", stage_schema(STAGE).empty_table())
        return {"in": 0, "ok": 0, "failed": 0}
    if encode_text is None:
        if clip is None:
            raise ValueError("stage 'category' needs the CLIP model of 'embed.clip' for its text prompts")
        encode_text = clip_text_encoder(clip)
    categories, styles = label_sets(cfg, encode_text)
    spec = ModelStageSpec(name=STAGE, version=labels_version(categories, styles),
                          make_model=functools.partial(CategoryModel, categories, styles), input_table=EMBED_TABLE,
                          input_columns=("clip_id", "embedding"), batch_size=cfg.batch_size,
                          concurrency=cfg.concurrency, num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus)
    res = run_model_stage(lake, spec, backend=backend, commit_every=commit_every, record=False)
    st = res.status.get(spec.table, {})
    return {"in": res.count_in, "ok": st.get("ok", 0), "failed": st.get("error", 0),
            "total": lake.count(spec.table)}
