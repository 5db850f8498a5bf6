"""Human artifacts: an ultralytics YOLO detector trained on artifact classes (malformed hands, faces, limbs),
loaded from the local file ``weights`` (``.pt`` from ``YOLO(...).save`` or training; the optional ``yolo`` extra).

Per sampled frame the detections above ``min_confidence`` give three pieces of evidence: the likelihood (the
mean confidence of the detections), the box area (the fraction of the frame the boxes cover, union) and the
duration (the fraction of frames with any detection). Severity = duration x mean over frames with detections of
``confidence x min(1, area / area_ref)``; the score is ``1 - severity`` (1: no artifact found).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.common import parse_section, sample_frames, unit
from curation.jobconfig import ConfigError, Strict


class ArtifactSection(Strict):
    weights: str | None = None
    min_confidence: float = Field(default=0.25, ge=0, le=1)
    area_ref: float = Field(default=0.05, gt=0, le=1)  # box area fraction that counts fully
    max_frames: int = Field(default=16, ge=1, le=129)
    imgsz: int = Field(default=320, ge=32, le=2048)
    device: str = "cpu"


def load_yolo(path: str) -> Any:
    from curation.models import require_file, yolo_class

    file = require_file(path, "human_artifacts YOLO weights")
    return yolo_class("human_artifacts")(str(file))


class HumanArtifacts:
    name: ClassVar[str] = "human_artifacts"
    group: ClassVar[str] = "dynamic_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames"})

    def __init__(self, section: Any = None, model: Any = None) -> None:
        self.cfg = parse_section(ArtifactSection, section)
        if model is None and self.cfg.weights is None:
            raise ConfigError("invalid config: human_artifacts needs 'weights' (a local YOLO .pt file)")
        self.model = model if model is not None else load_yolo(self.cfg.weights)

    def _frame(self, result: Any, area: float) -> tuple[float, float]:
        """(mean confidence, covered area fraction) of one frame's detections (0, 0 when none)."""
        boxes = result.boxes
        conf = boxes.conf.cpu().numpy() if boxes is not None else np.zeros(0)
        keep = conf >= self.cfg.min_confidence
        if not keep.any():
            return 0.0, 0.0
        h, w = result.orig_shape
        mask = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in boxes.xyxy.cpu().numpy()[keep].astype(int):
            mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        return float(conf[keep].mean()), float(mask.mean())

    def score(self, video: BenchVideo) -> DimensionScore:
        frames = [np.ascontiguousarray(f[..., ::-1]) for f in sample_frames(video, self.cfg.max_frames)]  # BGR
        results = self.model.predict(frames, imgsz=self.cfg.imgsz, conf=self.cfg.min_confidence,
                                     device=self.cfg.device, verbose=False)
        per = [self._frame(r, 0.0) for r in results]
        hit = [(c, a) for c, a in per if c > 0]
        duration = len(hit) / len(per)
        severity = duration * (np.mean([c * min(1.0, a / self.cfg.area_ref) for c, a in hit]) if hit else 0.0)
        return DimensionScore(unit(1.0 - severity), {
            "likelihood": float(np.mean([c for c, _ in hit])) if hit else 0.0,
            "box_area": float(np.mean([a for _, a in hit])) if hit else 0.0,
            "duration": duration, "num_frames": len(per)})
