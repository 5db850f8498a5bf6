"""One attention entry point for every block of the DiT, with a choice of kernel.

Layout everywhere is [batch, tokens, heads, head_dim] (the layout of the projections, and the one flash-attn and
SageAttention take directly). Backends:

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (any device and dtype; torch picks its own
  flash / memory-efficient / math kernel).
- ``"flash"``: flash-attn (FlashAttention-3's ``flash_attn_interface`` on Hopper when installed, else
  FlashAttention-2's ``flash_attn``). CUDA only, fp16/bf16: float32 inputs are cast to the autocast dtype (bf16
  without autocast), as the official Wan code does, and the result is cast back.
- ``"sage"``: SageAttention's ``sageattn`` (8-bit QK^T, lossy). CUDA only, fp16/bf16 (cast as for flash).
- ``"auto"``: on CUDA with fp16/bf16 inputs, flash if installed, else sage if installed, else sdpa; sdpa otherwise.

Naming a backend whose package is not installed is an error that says which package it needs.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
from functools import cache
from types import ModuleType

import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "attention", "available_backends", "reference_attention", "resolve_backend"]

BACKENDS = ("auto", "sdpa", "flash", "sage")
_HALF = (torch.float16, torch.bfloat16)
# backend -> importable modules providing it, in order of preference
_PACKAGES = {"flash": ("flash_attn_interface", "flash_attn"), "sage": ("sageattention",)}
_INSTALL_HINT = {"flash": "the flash-attn package (module flash_attn, or flash_attn_interface for FlashAttention-3)",
                 "sage": "the sageattention package (module sageattention)"}


@cache
def _module(backend: str) -> ModuleType | None:
    for name in _PACKAGES[backend]:
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return None


def available_backends() -> tuple[str, ...]:
    """Backends usable in this environment (``"sdpa"`` always)."""
    return ("sdpa",) + tuple(name for name in ("flash", "sage") if _module(name) is not None)


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    """The concrete backend ``attention`` would use for ``q`` (``"auto"`` resolved; errors as ``attention``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        if q.is_cuda and q.dtype in _HALF:
            for name in ("flash", "sage"):
                if _module(name) is not None:
                    return name
        return "sdpa"
    if backend != "sdpa":
        if _module(backend) is None:
            raise RuntimeError(f"attention backend {backend!r} needs {_INSTALL_HINT[backend]}, which is not "
                               f"installed; use backend='sdpa' or 'auto'")
        if not q.is_cuda:
            raise ValueError(f"attention backend {backend!r} runs on CUDA tensors only, got device {q.device}")
    return backend


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention takes [batch, tokens, heads, head_dim] tensors, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


def _half_dtype(q: torch.Tensor) -> torch.dtype:
    if q.dtype in _HALF:
        return q.dtype
    if torch.is_autocast_enabled("cuda"):
        dtype = torch.get_autocast_dtype("cuda")
        if dtype in _HALF:
            return dtype
    return torch.bfloat16


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto",
              scale: float | None = None) -> torch.Tensor:
    """Softmax attention without mask, [B, Lq, H, D] x [B, Lk, H, D] -> [B, Lq, H, Dv] in the dtype of ``v``
    (``scale`` defaults to 1 / sqrt(D)). See the module docstring for ``backend``."""
    _check_shapes(q, k, v)
    name = resolve_backend(backend, q)
    if name == "sdpa":
        dtype = v.dtype
        out = F.scaled_dot_product_attention(q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2),
                                             v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)
    out_dtype = v.dtype
    dtype = _half_dtype(v)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    module = _module(name)
    if name == "flash":
        out = module.flash_attn_func(q, k, v, softmax_scale=scale)
        if isinstance(out, tuple):  # FlashAttention-3 releases return (out, softmax_lse)
            out = out[0]
    else:
        out = module.sageattn(q, k, v, tensor_layout="NHD", is_causal=False, sm_scale=scale)
    return out.to(out_dtype)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                        scale: float | None = None) -> torch.Tensor:
    """Plain float64 softmax(q k^T * scale) v in the same layout; a ground truth for tests, not for speed."""
    _check_shapes(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v.double()).to(v.dtype)
