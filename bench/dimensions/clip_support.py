"""CLIP for the CLIP-backed dimensions: the ``clip`` section names a local open_clip model exactly as the curation
embed stage does (``path`` of an open_clip folder, or ``architecture`` + ``weights``), loaded by
``curation.models.clip.load_clip`` (a missing file: ``WeightsNotFoundError`` naming the path). Tests may pass an
``encoder`` with the same two methods (``encode_images`` of RGB frames, ``encode_text``) instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from curation.jobconfig import ConfigError, Strict


class ClipSection(Strict):
    path: str | None = None
    architecture: str | None = None
    weights: str | None = None
    device: str = "cpu"


def clip_encoder(section: ClipSection | None, encoder: Any = None, dimension: str = "") -> Any:
    """``encoder`` if given, else the CLIP model the section names."""
    if encoder is not None:
        return encoder
    if section is None or (section.path is None and section.weights is None):
        raise ConfigError(f"invalid config: {dimension} needs 'clip.path' (an open_clip folder) or "
                          "'clip.architecture' and 'clip.weights'")
    from curation.models.clip import load_clip

    return load_clip(section.path, section.architecture, section.weights, device=section.device)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (zero rows give 0)."""
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    return (a / np.maximum(na, 1e-12)) @ (b / np.maximum(nb, 1e-12)).T
