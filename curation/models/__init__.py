"""Models behind the model-backed curation stages, each loaded from local files named in config.

``clip`` (open_clip image/text encoders), ``aesthetic`` (the LAION aesthetic MLP on CLIP embeddings),
``nsfw`` (NudeNet's bundled ONNX detector, or a head on CLIP embeddings), ``ocr`` (PP-OCR through
rapidocr-onnxruntime, or paddleocr), ``expert_head`` (small trainable heads on embeddings: the synthetic-image
and overexposure experts, the quality regressor). Nothing here downloads weights: a missing file is a
``WeightsNotFoundError`` naming the path that was expected.
"""
from __future__ import annotations

from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """A model file named in config is not where it was said to be."""


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing file; otherwise a ``WeightsNotFoundError`` naming it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"{what}: expected a file at {p} (no weights are downloaded at run time)")
    return p


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing directory; otherwise a ``WeightsNotFoundError``."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise WeightsNotFoundError(f"{what}: expected a directory at {p} (no weights are downloaded at run time)")
    return p


def pick_device(num_gpus: float) -> str:
    """``"cuda"`` when the stage asked for a GPU and torch sees one, else ``"cpu"``."""
    if num_gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def yolo_class(what: str) -> type:
    """ultralytics' ``YOLO`` class, imported without its side effect on this process: when ``OMP_NUM_THREADS`` is
    unset, importing ultralytics sets it to 1 in ``os.environ``, so every process started afterwards (Ray workers,
    subprocesses, the demo under a test session) ran torch on one thread. A value the user set stays as it was."""
    import os

    had = "OMP_NUM_THREADS" in os.environ
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise ImportError(f"{what} needs ultralytics (pip install '.[yolo]')") from e
    finally:
        if not had:
            os.environ.pop("OMP_NUM_THREADS", None)
    return YOLO
