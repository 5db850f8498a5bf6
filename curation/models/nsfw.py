"""NSFW scores per frame: NudeNet's bundled ONNX detector (default) or a binary head on CLIP embeddings.

NudeNet (``nudenet`` package, ``320n.onnx``, a YOLOv8-style detector of 18 body-part labels) sees the frame padded
to a square at the bottom and right and resized to 320 px, exactly as ``nudenet.NudeDetector`` 3.4 prepares it
(its ``RGBA2BGR`` conversion and ``swapRB`` cancel out on a 3-channel BGR frame, so the network gets BGR). A
frame's score is the highest confidence among the anchors whose best class is one of the unsafe labels: the top
confidence of NudeNet's own detections of those labels whenever that is at least NudeNet's cut-off (0.2), and a
continuous value below it, so a threshold in ``select`` can sit anywhere.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from curation.models import require_file

NUDENET_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
"""Class order of NudeNet 3.4's detector output."""

UNSAFE_LABELS: tuple[str, ...] = ("FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
                                  "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")


def bundled_nudenet_model() -> Path:
    """The ``320n.onnx`` that the ``nudenet`` package ships."""
    import nudenet

    return Path(nudenet.__file__).resolve().parent / "320n.onnx"


def nudenet_input(frame_bgr: np.ndarray, size: int = 320) -> np.ndarray:
    """``(1, 3, size, size)`` float32 in [0, 1], channels in BGR order as nudenet feeds them: padded to a square
    (bottom/right, black), then resized."""
    h, w = frame_bgr.shape[:2]
    side = max(h, w)
    padded = cv2.copyMakeBorder(frame_bgr, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return cv2.dnn.blobFromImage(padded, 1 / 255.0, (size, size), (0, 0, 0), swapRB=False, crop=False)


def unsafe_scores(output: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Per image of a raw detector output ``(N, 4 + classes, anchors)``: the highest anchor confidence among
    anchors whose best class is in ``class_ids`` (0 when there is none)."""
    probs = output[:, 4:, :]  # (N, C, A)
    best = probs.argmax(axis=1)  # (N, A)
    conf = probs.max(axis=1)
    unsafe = np.isin(best, np.asarray(class_ids))
    return np.where(unsafe, conf, 0.0).max(axis=1).astype(np.float32)


class NudeNetScorer:
    """NudeNet's ONNX detector, batched; ``labels`` are the classes that count as unsafe."""

    name = "nudenet"

    def __init__(self, model_path: str | None = None, labels: Sequence[str] = UNSAFE_LABELS, threads: int = 1,
                 use_gpu: bool = False, resolution: int = 320) -> None:
        import onnxruntime as ort

        bad = [lb for lb in labels if lb not in NUDENET_LABELS]
        if bad:
            raise ValueError(f"unknown NudeNet label(s) {bad}; known: {list(NUDENET_LABELS)}")
        path = require_file(model_path, "NudeNet model") if model_path else bundled_nudenet_model()
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.class_ids = [NUDENET_LABELS.index(lb) for lb in labels]
        self.resolution = resolution

    def __call__(self, frames_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Unsafe score of each frame, float32 ``(N,)``."""
        if len(frames_bgr) == 0:
            return np.zeros(0, np.float32)
        blob = np.concatenate([nudenet_input(f, self.resolution) for f in frames_bgr])
        (output,) = self.session.run(None, {self.input_name: blob})[:1]
        return unsafe_scores(output, self.class_ids)
