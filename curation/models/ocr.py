"""Text detection and recognition on frames: PP-OCR through ``rapidocr-onnxruntime`` (default; it ships the
PP-OCRv4 detection, direction and recognition ONNX models) or ``paddleocr`` (optional, imported only when chosen).

Per frame: the text coverage (area of the union of the detected text polygons over the frame area; polygons are
rasterised into one mask, so overlapping boxes count once) and the recognised strings. Detection uses DB's
``unclip_ratio`` 1.5 (PaddleOCR's default; rapidocr's own 1.6 draws boxes about 5 % wider), which keeps the
coverage close to the area of the text lines themselves. With recognition on, a box whose text is shorter than
``min_text_chars`` (2 by default) is dropped: isolated "characters" are mostly shapes in the scene (a rectangle
reads as 口 with 0.99 confidence, a ring as O).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from curation.models import require_dir, require_file


@dataclass(frozen=True)
class FrameText:
    """OCR of one frame: coverage in [0, 1], the recognised strings (top-to-bottom) and their confidences."""

    coverage: float
    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)  # (4, 2) float32 each, frame pixels


def polygon_coverage(polygons: Sequence[np.ndarray], width: int, height: int) -> float:
    """Area of the union of ``polygons`` (pixel coordinates) over ``width * height``."""
    if not polygons or width <= 0 or height <= 0:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    for p in polygons:  # one call per polygon: a single fillPoly call does not fill overlaps as a union
        cv2.fillPoly(mask, [np.round(np.asarray(p, np.float32)).astype(np.int32)], 1)
    return float(mask.mean())


class OcrBackend(Protocol):
    name: str

    def __call__(self, frame_bgr: np.ndarray) -> FrameText: ...


class RapidOcrBackend:
    """PP-OCRv4 det + cls + rec on onnxruntime. ``recognize=False`` runs detection only (coverage, no texts)."""

    name = "rapidocr"

    def __init__(self, recognize: bool = True, min_text_score: float = 0.5, min_text_chars: int = 2,
                 unclip_ratio: float = 1.5, box_thresh: float = 0.5, threads: int = 1, use_gpu: bool = False, det_model: str | None = None,
                 rec_model: str | None = None, cls_model: str | None = None) -> None:
        from rapidocr_onnxruntime import RapidOCR

        kwargs: dict[str, Any] = {"intra_op_num_threads": threads if threads > 0 else -1,
                                  "inter_op_num_threads": 1 if threads > 0 else -1}
        for key, path in (("det_model_path", det_model), ("rec_model_path", rec_model), ("cls_model_path", cls_model)):
            if path is not None:
                kwargs[key] = str(require_file(path, f"OCR {key.split('_')[0]} model"))
        if use_gpu:
            kwargs.update(det_use_cuda=True, cls_use_cuda=True, rec_use_cuda=True)
        self.engine = RapidOCR(**kwargs)
        self.recognize = recognize
        self.min_text_chars = min_text_chars
        self.call_kwargs = {"box_thresh": box_thresh, "unclip_ratio": unclip_ratio, "text_score": min_text_score}

    def __call__(self, frame_bgr: np.ndarray) -> FrameText:
        h, w = frame_bgr.shape[:2]
        result, _ = self.engine(frame_bgr, use_rec=self.recognize, use_cls=self.recognize, **self.call_kwargs)
        if not result:
            return FrameText(0.0)
        if not self.recognize:  # detection only: a list of boxes
            polys = [np.asarray(box, np.float32) for box in result]
            return FrameText(polygon_coverage(polys, w, h), polygons=polys)
        result = [r for r in result if len(str(r[1]).strip()) >= self.min_text_chars]
        polys = [np.asarray(r[0], np.float32) for r in result]
        return FrameText(polygon_coverage(polys, w, h), [str(r[1]) for r in result], [float(r[2]) for r in result],
                         polys)


class PaddleOcrBackend:
    """The ``paddleocr`` package (3.x ``predict`` API, or 2.x ``ocr``) with model folders from local paths."""

    name = "paddleocr"

    def __init__(self, det_model_dir: str | None, rec_model_dir: str | None, lang: str = "ch",
                 min_text_score: float = 0.5, min_text_chars: int = 2, use_gpu: bool = False) -> None:
        try:
            import paddleocr
        except ImportError as e:
            raise ImportError("OCR backend 'paddleocr' needs the optional packages paddleocr and paddlepaddle "
                              "(pip install paddleocr paddlepaddle); the default backend 'rapidocr' needs "
                              "neither") from e
        if det_model_dir is None or rec_model_dir is None:
            raise ValueError("OCR backend 'paddleocr' needs local model folders: set ocr.paddle_det_model_dir and "
                             "ocr.paddle_rec_model_dir (paddleocr would otherwise download them)")
        det = str(require_dir(det_model_dir, "paddleocr detection model"))
        rec = str(require_dir(rec_model_dir, "paddleocr recognition model"))
        major = int(str(getattr(paddleocr, "__version__", "3")).split(".")[0])
        if major >= 3:
            self.engine = paddleocr.PaddleOCR(text_detection_model_dir=det, text_recognition_model_dir=rec,
                                              use_doc_orientation_classify=False, use_doc_unwarping=False,
                                              use_textline_orientation=False, lang=lang,
                                              device="gpu" if use_gpu else "cpu")
        else:
            self.engine = paddleocr.PaddleOCR(det_model_dir=det, rec_model_dir=rec, lang=lang, use_angle_cls=False,
                                              use_gpu=use_gpu, show_log=False)
        self.v3 = major >= 3
        self.min_text_score = min_text_score
        self.min_text_chars = min_text_chars

    def __call__(self, frame_bgr: np.ndarray) -> FrameText:
        h, w = frame_bgr.shape[:2]
        raw = self.engine.predict(frame_bgr) if self.v3 else self.engine.ocr(frame_bgr, cls=False)
        polys, texts, scores = parse_paddle_result(raw, self.v3)
        keep = [i for i, (t, s) in enumerate(zip(texts, scores))
                if s >= self.min_text_score and len(t.strip()) >= self.min_text_chars]
        polys = [polys[i] for i in keep]
        return FrameText(polygon_coverage(polys, w, h), [texts[i] for i in keep], [scores[i] for i in keep], polys)


def parse_paddle_result(raw: Any, v3: bool) -> tuple[list[np.ndarray], list[str], list[float]]:
    """Polygons, texts and scores from one image's paddleocr output. 3.x: a list with one result mapping
    ``rec_polys`` / ``rec_texts`` / ``rec_scores``; 2.x: ``[[[box, (text, score)], ...]]`` (``[None]`` when
    nothing was found)."""
    if not raw:
        return [], [], []
    first = raw[0]
    if v3:
        return ([np.asarray(p, np.float32) for p in first["rec_polys"]], [str(t) for t in first["rec_texts"]],
                [float(s) for s in first["rec_scores"]])
    if first is None:
        return [], [], []
    return ([np.asarray(line[0], np.float32) for line in first], [str(line[1][0]) for line in first],
            [float(line[1][1]) for line in first])


def make_ocr_backend(backend: str, **kwargs: Any) -> OcrBackend:
    """``"rapidocr"`` or ``"paddleocr"`` with that backend's keyword arguments."""
    if backend == "rapidocr":
        return RapidOcrBackend(**kwargs)
    if backend == "paddleocr":
        return PaddleOcrBackend(**kwargs)
    raise ValueError(f"unknown OCR backend {backend!r}; known: rapidocr, paddleocr")
