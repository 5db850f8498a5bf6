"""Fully random weights for parity checks and benchmarks: the released init zeroes some projections (and the DiT
head), so two implementations given that init would agree trivially."""
from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make every parameter random, in place: norm gains near 1 (``*gamma``, and 1-D ``*weight`` such as
    LayerNorm/RMSNorm gains), small biases, other weights fan-in scaled so activations stay O(1) through a deep
    network. Deterministic in ``seed``; returns ``model``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("gamma") or (name.endswith("weight") and param.ndim == 1):
                param.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                param.copy_(0.05 * noise)
            else:
                param.copy_(noise / param[0].numel() ** 0.5)
    return model
