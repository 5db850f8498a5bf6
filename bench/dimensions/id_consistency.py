"""ID consistency: does the subject stay the same through the video?

Frame features (``feature``): ``dinov2`` (default; the CLS token of a DINOv2 model through transformers, loaded
from the local folder ``dinov2_path`` saved with ``save_pretrained``) or ``colour_histogram`` (a deterministic
8x8x8 RGB histogram, L2-normalised; needs no weights). The score, as VBench's subject consistency: the mean over
frames 2..N of the average of the cosine similarity to the first frame and to the previous frame, clipped to [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.clip_support import cosine
from bench.dimensions.common import need_frames, parse_section, sample_frames, unit
from curation.jobconfig import ConfigError, Strict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class IdSection(Strict):
    feature: Literal["dinov2", "colour_histogram"] = "dinov2"
    dinov2_path: str | None = None
    device: str = "cpu"
    max_frames: int = Field(default=16, ge=2, le=129)
    histogram_bins: int = Field(default=8, ge=2, le=32)


def save_tiny_dinov2(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random-initialised DINOv2 (transformers ``Dinov2Model``) saved with ``save_pretrained``."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14)
    Dinov2Model(cfg).eval().save_pretrained(str(out_dir))
    return Path(out_dir)


class _Dinov2:
    def __init__(self, path: str, device: str) -> None:
        from transformers import Dinov2Model

        from curation.models import require_dir, require_file

        folder = require_dir(path, "DINOv2 model folder")
        require_file(folder / "config.json", "DINOv2 config")
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise FileNotFoundError(f"DINOv2 weights: expected {folder / 'model.safetensors'}")
        self.model = Dinov2Model.from_pretrained(str(folder)).eval().to(device)
        self.size = int(self.model.config.image_size)
        self.device = device

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            return self.model(pixel_values=x.to(self.device)).last_hidden_state[:, 0].float().cpu().numpy()


def colour_histograms(frames: np.ndarray, bins: int) -> np.ndarray:
    """``(N, bins**3)`` joint RGB histograms, L2-normalised."""
    q = (frames.astype(np.int64) * bins) // 256
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.stack([np.bincount(c.ravel(), minlength=bins ** 3) for c in codes]).astype(np.float64)
    return hist / np.linalg.norm(hist, axis=1, keepdims=True)


class IdConsistency:
    name: ClassVar[str] = "id_consistency"
    group: ClassVar[str] = "dynamic_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, section: Any = None) -> None:
        self.cfg = parse_section(IdSection, section)
        self.dino = None
        if self.cfg.feature == "dinov2":
            if self.cfg.dinov2_path is None:
                raise ConfigError("invalid config: id_consistency with feature 'dinov2' needs 'dinov2_path'")
            self.dino = _Dinov2(self.cfg.dinov2_path, self.cfg.device)

    def features(self, frames: np.ndarray) -> np.ndarray:
        return self.dino(frames) if self.dino is not None else colour_histograms(frames, self.cfg.histogram_bins)

    def score(self, video: BenchVideo) -> DimensionScore:
        need_frames(video, 2, self.name)
        feats = self.features(sample_frames(video, self.cfg.max_frames))
        sims = cosine(feats, feats)
        per_frame = [(sims[0, i] + sims[i - 1, i]) / 2.0 for i in range(1, len(feats))]
        return DimensionScore(unit(np.mean(per_frame)), {"feature": self.cfg.feature,
                                                        "min_frame_similarity": float(np.min(per_frame)),
                                                        "num_frames": len(feats)})
