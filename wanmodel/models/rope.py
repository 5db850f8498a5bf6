"""3D rotary position embedding (RoPE) of the Wan DiT.

Each attention head's channels are split into three groups rotated by the token's frame, row and column index:
``d - 4 * (d // 6)``, ``2 * (d // 6)``, ``2 * (d // 6)`` channels (44 / 42 / 42 for the released head dim 128),
each group with its own frequency ladder ``theta ** (-2i / group_dim)``. Adjacent channels (2i, 2i + 1) form one
complex pair, as in the official code (``torch.view_as_complex`` over the last dim reshaped to (-1, 2)).

The angles are computed in float64 (positions up to a few hundred times frequencies near 1 lose digits in float32)
and the rotation is applied in float32, whatever the activation dtype. Tables depend only on the latent grid, so
``RopeCache`` keeps them per (grid, device) and a sampling loop computes them once.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

__all__ = ["THETA", "RopeCache", "apply_rope", "axis_dims", "rope_angles", "rope_tables"]

THETA = 10000.0

RopeTables = tuple[torch.Tensor, torch.Tensor]


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head rotated by frame, height and width position (44, 42, 42 for head dim 128)."""
    if head_dim < 6 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim of at least 6, got {head_dim}")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_frequencies(dim: int, theta: float) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = THETA) -> torch.Tensor:
    """Rotation angles in float64, shape [F * H * W, head_dim // 2], tokens in (frame, row, column) order."""
    frames, height, width = (int(size) for size in grid)
    if min(frames, height, width) < 1:
        raise ValueError(f"RoPE grid sizes must be positive, got {grid}")
    shapes = ((frames, 1, 1), (1, height, 1), (1, 1, width))
    parts = []
    for size, dim, shape in zip((frames, height, width), axis_dims(head_dim), shapes):
        angles = torch.outer(torch.arange(size, dtype=torch.float64), _axis_frequencies(dim, theta))
        parts.append(angles.view(*shape, -1).expand(frames, height, width, -1))
    return torch.cat(parts, dim=-1).reshape(frames * height * width, head_dim // 2)


def rope_tables(grid: tuple[int, int, int], head_dim: int, *, theta: float = THETA,
                device: torch.device | str | None = None) -> RopeTables:
    """(cos, sin), float32 [F * H * W, 1, head_dim // 2]: computed in float64 on the CPU (MPS has no float64),
    then moved to ``device``; the middle axis broadcasts over heads."""
    angles = rope_angles(grid, head_dim, theta)
    cos = angles.cos().to(torch.float32).unsqueeze(1)
    sin = angles.sin().to(torch.float32).unsqueeze(1)
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` [B, L, heads, head_dim] by the tables of ``rope_tables``; float32 result."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)


class RopeCache:
    """RoPE tables per (grid, device), least recently used evicted beyond ``max_entries``.

    Not a module buffer on purpose: ``model.to(torch.bfloat16)`` must not round the tables, and a meta-device
    model must not hold them.
    """

    def __init__(self, head_dim: int, *, theta: float = THETA, max_entries: int = 8) -> None:
        axis_dims(head_dim)  # validate early
        self.head_dim = head_dim
        self.theta = theta
        self.max_entries = max_entries
        self._tables: OrderedDict[tuple[tuple[int, int, int], torch.device], RopeTables] = OrderedDict()

    def get(self, grid: tuple[int, int, int], device: torch.device | str) -> RopeTables:
        key = (tuple(int(size) for size in grid), torch.device(device))
        tables = self._tables.get(key)
        if tables is None:
            tables = rope_tables(key[0], self.head_dim, theta=self.theta, device=key[1])
            self._tables[key] = tables
            while len(self._tables) > self.max_entries:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return tables

    def clear(self) -> None:
        self._tables.clear()
