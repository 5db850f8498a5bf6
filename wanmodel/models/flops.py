"""The analytic FLOP count of a Wan DiT forward pass: the one counting function of MFU in training
(``wanmodel.train.metrics``) and of TFLOP/s in the benchmarks (``perf.dit``, ``perf.train``). Pure arithmetic on a
``DiTConfig``; checked against torch's ``FlopCounterMode`` in the tests.

FLOPs count multiply-adds as 2 and include every matrix product of the forward pass: patch embedding, text and
time MLPs, per block the self-attention projections and its ``QK^T`` and ``AV`` products, the cross-attention
(queries from the video tokens, keys and values from the ``text_len`` text tokens the model pads to; I2V/FLF2V
also the image tokens), the MLP, and the head.
"""
from __future__ import annotations

from typing import Any

__all__ = ["IMAGE_TOKENS", "dit_forward_flops"]

IMAGE_TOKENS = 257  # CLIP ViT-H/14 tokens of one frame, the I2V image context (FLF2V: two frames)


def dit_forward_flops(config: Any, latent_shape: tuple[int, int, int, int], attention: bool = True) -> int:
    """FLOPs of one sample's forward pass through a ``WanDiT`` of ``config`` on latents [C, F, H, W]
    (``attention=False``: without the attention products ``QK^T`` and ``AV``, i.e. the weight matmuls only)."""
    c = config
    pt, ph, pw = c.patch_size
    _, f, h, w = latent_shape
    tokens = (f // pt) * (h // ph) * (w // pw)
    d, text = c.dim, c.text_len
    patch = pt * ph * pw
    flops = 2 * tokens * c.in_dim * patch * d  # patch embedding
    flops += 2 * text * (c.text_dim * d + d * d)  # text MLP
    flops += 2 * (c.freq_dim * d + d * d) + 2 * d * 6 * d  # time MLP and projection (once per sample)
    a = 1 if attention else 0
    block = 2 * tokens * 4 * d * d + a * 2 * 2 * tokens * tokens * d  # self-attention: q, k, v, o; QK^T and AV
    block += 2 * tokens * 2 * d * d + 2 * text * 2 * d * d + a * 2 * 2 * tokens * text * d  # cross-attention
    block += 2 * 2 * tokens * d * c.ffn_dim  # MLP
    if c.is_i2v:
        image = c.image_tokens or IMAGE_TOKENS
        block += 2 * image * 2 * d * d + a * 2 * 2 * tokens * image * d
        flops += 2 * image * (c.image_dim * c.image_dim + c.image_dim * d)
    flops += c.num_layers * block
    flops += 2 * tokens * d * c.out_dim * patch  # head
    return int(flops)
