"""Zero-shot labels from CLIP text prompts (report 3.2: the 12 major categories, and style).

A label is a name with one or more descriptions; each description is put into each prompt template, the text
embeddings are L2-normalised and averaged (prompt ensembling, as in the CLIP paper), and an image takes the
label whose averaged text embedding has the highest cosine similarity with its image embedding.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from curation.embeddings.kmeans import l2_normalize

TextEncoder = Callable[[list[str]], np.ndarray]
"""Texts -> their embeddings (n x D), in the same space as the image embeddings."""


def prompts_for(descriptions: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every description put into every template (``{}`` marks the place)."""
    return [t.format(d) for d in descriptions for t in templates]


@dataclass(frozen=True)
class LabelSet:
    """Label names and their unit-length text embeddings (one row per label)."""

    names: tuple[str, ...]
    embeddings: np.ndarray

    def assign(self, image_embeddings: np.ndarray, temperature: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
        """Label index of each image and its softmax probability over the labels (CLIP's logit scale 100)."""
        sims = l2_normalize(image_embeddings) @ self.embeddings.T
        logits = temperature * (sims - sims.max(axis=1, keepdims=True))
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        idx = sims.argmax(axis=1)
        return idx.astype(np.int32), probs[np.arange(len(idx)), idx].astype(np.float32)

    def labels(self, image_embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Label names of the images and their probabilities."""
        idx, prob = self.assign(image_embeddings)
        return [self.names[i] for i in idx], prob


def build_label_set(labels: Mapping[str, Sequence[str]], templates: Sequence[str],
                    encode_text: TextEncoder) -> LabelSet:
    """Text embeddings of each label: the mean of its prompts' unit embeddings, re-normalised."""
    if not labels:
        raise ValueError("no labels given")
    names = tuple(labels)
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for name in names:
        p = prompts_for(labels[name] or [name], templates)
        spans.append((len(texts), len(texts) + len(p)))
        texts += p
    emb = l2_normalize(np.asarray(encode_text(texts), dtype=np.float32))
    if emb.shape[0] != len(texts):
        raise ValueError(f"text encoder returned {emb.shape[0]} embeddings for {len(texts)} prompts")
    means = np.stack([emb[a:b].mean(axis=0) for a, b in spans])
    return LabelSet(names, l2_normalize(means))
