"""Tensors in lake rows as ``bytes + shape + dtype`` (the lake's columnar rule: no pickles).

``to_bytes`` stores a tensor C-contiguous in ``float32``, ``float16`` or ``bfloat16`` (bfloat16 as its raw 16-bit
pattern); ``from_bytes`` gives it back as a torch tensor. DuckDB or NumPy readers see plain bytes and a shape.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["STORE_DTYPES", "from_bytes", "text_key", "to_bytes"]

STORE_DTYPES = ("float32", "float16", "bfloat16")


def to_bytes(tensor: torch.Tensor, dtype: str = "float32") -> tuple[bytes, list[int], str]:
    """(bytes, shape, dtype name) of ``tensor`` cast to ``dtype``."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"store dtype must be one of {STORE_DTYPES}, got {dtype!r}")
    t = tensor.detach().to("cpu", getattr(torch, dtype)).contiguous()
    raw = t.view(torch.int16).numpy() if dtype == "bfloat16" else t.numpy()
    return raw.tobytes(), list(t.shape), dtype


def from_bytes(data: bytes, shape: Sequence[int], dtype: str) -> torch.Tensor:
    """The tensor ``to_bytes`` stored (a copy, writable)."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"unknown stored dtype {dtype!r} (expected one of {STORE_DTYPES})")
    expected = int(np.prod(shape)) * (4 if dtype == "float32" else 2)
    if len(data) != expected:
        raise ValueError(f"tensor bytes hold {len(data)} bytes, shape {list(shape)} {dtype} needs {expected}")
    if dtype == "bfloat16":
        return torch.from_numpy(np.frombuffer(data, np.int16).copy()).view(torch.bfloat16).reshape(*shape)
    return torch.from_numpy(np.frombuffer(data, np.dtype(dtype)).copy()).reshape(*shape)


def text_key(encoder_id: str, text: str) -> str:
    """Key of a caption's row in ``text_embeddings``: sha256(encoder_id + "\\n" + text)[:32]."""
    return hashlib.sha256(f"{encoder_id}\n{text}".encode()).hexdigest()[:32]
