"""Comprehensive image quality and scene generation quality (CLIP-based).

``image_quality``: the mean of three per-frame quality heads, averaged over at most ``max_frames`` frames:
MANIQA, the LAION aesthetic predictor and MUSIQ. pyiqa is not installed in this project (its MANIQA and MUSIQ
download their weights at run time), so MANIQA and MUSIQ are our own heads with local weights: a linear head on
the L2-normalised CLIP image embedding (the LAION linear-predictor file format: ``weight`` [1, D], ``bias`` [1]),
squashed by a sigmoid into [0, 1]; train them on MANIQA/MUSIQ scores of real frames and name the files in
``maniqa_weights`` / ``musiq_weights``. The LAION head (``aesthetic_weights``, scores ~1..10) is mapped by
``(s - 1) / 9``. ``save_random_quality_head`` writes a random head for tests and the demo.

``scene_quality``: CLIP similarity of consecutive frames (temporal coherence) and of frames to the prompt, mixed
``temporal_weight`` : ``prompt_weight``; the prompt similarity is rescaled from ``prompt_sim_range`` (typical
CLIP cosine similarities of unrelated and matching text) to [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.clip_support import ClipSection, clip_encoder, cosine
from bench.dimensions.common import need_frames, parse_section, sample_frames, unit
from curation.jobconfig import ConfigError, Strict


def save_random_quality_head(path: str | Path, input_dim: int, seed: int = 0) -> Path:
    """A random linear quality head on ``input_dim``-d embeddings (safetensors), for tests and the demo."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.randn(1, input_dim, generator=gen), "bias": torch.zeros(1)}, str(out))
    return out


class ImageQualitySection(Strict):
    clip: ClipSection | None = None
    aesthetic_weights: str | None = None
    maniqa_weights: str | None = None
    musiq_weights: str | None = None
    max_frames: int = Field(default=8, ge=1, le=129)


class ImageQuality:
    name: ClassVar[str] = "image_quality"
    group: ClassVar[str] = "image_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, section: Any = None, encoder: Any = None) -> None:
        from curation.models.aesthetic import load_aesthetic_head

        self.cfg = parse_section(ImageQualitySection, section)
        self.encoder = clip_encoder(self.cfg.clip, encoder, self.name)
        heads = {"maniqa": self.cfg.maniqa_weights, "aesthetic": self.cfg.aesthetic_weights,
                 "musiq": self.cfg.musiq_weights}
        missing = [k for k, v in heads.items() if v is None]
        if missing:
            raise ConfigError(f"invalid config: image_quality needs {', '.join(k + '_weights' for k in missing)}")
        self.heads = {k: load_aesthetic_head(v) for k, v in heads.items()}

    def score(self, video: BenchVideo) -> DimensionScore:
        from curation.models.aesthetic import aesthetic_scores

        emb = self.encoder.encode_images(list(sample_frames(video, self.cfg.max_frames)))
        raw = {k: float(aesthetic_scores(h, emb).mean()) for k, h in self.heads.items()}
        parts = {"maniqa": 1.0 / (1.0 + np.exp(-raw["maniqa"])), "musiq": 1.0 / (1.0 + np.exp(-raw["musiq"])),
                 "aesthetic": (raw["aesthetic"] - 1.0) / 9.0}
        parts = {k: unit(v) for k, v in parts.items()}
        return DimensionScore(unit(np.mean(list(parts.values()))), {"parts": parts, "raw": raw,
                                                                   "num_frames": len(emb)})


class SceneQualitySection(Strict):
    clip: ClipSection | None = None
    max_frames: int = Field(default=16, ge=2, le=129)
    temporal_weight: float = Field(default=0.5, ge=0)
    prompt_weight: float = Field(default=0.5, ge=0)
    prompt_sim_range: tuple[float, float] = (0.15, 0.40)


class SceneQuality:
    name: ClassVar[str] = "scene_quality"
    group: ClassVar[str] = "image_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "prompt"})

    def __init__(self, section: Any = None, encoder: Any = None) -> None:
        self.cfg = parse_section(SceneQualitySection, section)
        lo, hi = self.cfg.prompt_sim_range
        if hi <= lo or self.cfg.temporal_weight + self.cfg.prompt_weight <= 0:
            raise ConfigError("invalid config: scene_quality needs prompt_sim_range lo < hi and a positive weight")
        self.encoder = clip_encoder(self.cfg.clip, encoder, self.name)

    def score(self, video: BenchVideo) -> DimensionScore:
        need_frames(video, 1, self.name)
        emb = self.encoder.encode_images(list(sample_frames(video, self.cfg.max_frames)))
        text = self.encoder.encode_text([video.prompt])
        temporal = float(np.mean([cosine(emb[i:i + 1], emb[i + 1:i + 2])[0, 0] for i in range(len(emb) - 1)])
                         ) if len(emb) > 1 else 1.0
        lo, hi = self.cfg.prompt_sim_range
        sim = float(cosine(emb, text).mean())
        prompt = unit((sim - lo) / (hi - lo))
        wt, wp = self.cfg.temporal_weight, self.cfg.prompt_weight
        total = (wt * unit(temporal) + wp * prompt) / (wt + wp)
        return DimensionScore(unit(total), {"temporal_similarity": temporal, "prompt_similarity": sim,
                                            "prompt_score": prompt, "num_frames": len(emb)})
