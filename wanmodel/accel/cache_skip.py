"""Adaptive step skipping for ``DiffusionCache``: the MagCache and TeaCache decisions.

Each policy answers, per step, whether the whole DiT call may be skipped; the cache then reuses the last computed
residual (DiT output - its input) for every pass. ``skips`` is called on every step (TeaCache must see every
step's indicator) with ``can_skip`` False where no residual exists yet. Both keep the first ``retention`` fraction
of steps and the last ``keep_last`` steps exact, and reset their accumulated estimate on each computed step.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from wanmodel.accel.cache_config import (
    MagCacheConfig,
    TeaCacheConfig,
    calibration_ratios,
)

__all__ = ["MagCacheSkipper", "TeaCacheSkipper", "interpolate_ratios", "modulated_input", "relative_l1"]


def interpolate_ratios(ratios: list[float] | tuple[float, ...], num_steps: int) -> list[float]:
    """Calibrated per-step ratios resampled (linearly, over the fraction of sampling done) to ``num_steps``."""
    ratios = [float(r) for r in ratios]
    if len(ratios) == num_steps:
        return ratios
    if num_steps == 1:
        return [ratios[0]]
    out = []
    for i in range(num_steps):
        x = i * (len(ratios) - 1) / (num_steps - 1)
        low = min(math.floor(x), len(ratios) - 2)
        out.append(ratios[low] + (x - low) * (ratios[low + 1] - ratios[low]))
    return out


def relative_l1(now: torch.Tensor, before: torch.Tensor) -> float:
    """mean |now - before| / mean |before|."""
    return float((now.float() - before.float()).abs().mean() / before.float().abs().mean().clamp_min(1e-12))


def modulated_input(runner: Any, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """TeaCache's indicator: the first block's timestep-modulated, normalised input tokens of the conditional
    rows (patch embedding, one LayerNorm and the modulation: cheap next to a DiT call)."""
    dit = runner.dit
    x = latents.to(runner.dit_dtype)
    if "y" in runner.extra:
        x = torch.cat([x, runner.extra["y"][: runner.batch].to(x.dtype)], dim=1)
    with torch.no_grad():
        tokens, _ = dit.patchify(x)
        _, e0 = dit.time_embed(t.to(device=latents.device, dtype=torch.float32).expand(latents.shape[0]))
        block = dit.blocks[0]
        shift, scale = block.modulation_terms(e0)[:2]
        return torch.addcmul(shift.unsqueeze(1), block.norm1(tokens), 1 + scale.unsqueeze(1))


class MagCacheSkipper:
    """MagCache: the calibrated magnitude ratios multiply into an accumulated ratio, ``|1 - ratio|`` adds to the
    error; skip while the error is under the threshold and at most ``max_skips`` steps in a row."""

    def __init__(self, config: MagCacheConfig, num_steps: int) -> None:
        ratios = config.ratios if config.ratios is not None else calibration_ratios(config.calibration)
        self.config = config
        self.ratios = interpolate_ratios(ratios, num_steps)
        self.first = math.ceil(config.retention * num_steps - 1e-9)
        self.last = num_steps - config.keep_last
        self.ratio, self.error, self.steps = 1.0, 0.0, 0

    def skips(self, index: int, t: torch.Tensor, latents: torch.Tensor, can_skip: bool) -> bool:
        if not can_skip or not self.first <= index < self.last:
            return False
        self.ratio *= self.ratios[index]
        self.error += abs(1.0 - self.ratio)
        self.steps += 1
        if self.error < self.config.threshold and self.steps <= self.config.max_skips:
            return True
        self.ratio, self.error, self.steps = 1.0, 0.0, 0
        return False


class TeaCacheSkipper:
    """TeaCache: the polynomial-rescaled relative L1 change of ``modulated_input`` accumulates; skip while the sum
    is under the threshold."""

    def __init__(self, config: TeaCacheConfig, num_steps: int, runner: Any) -> None:
        self.config, self.runner = config, runner
        self.first = math.ceil(config.retention * num_steps - 1e-9)
        self.last = num_steps - config.keep_last
        self.previous: torch.Tensor | None = None
        self.accumulated = 0.0

    def rescale(self, change: float) -> float:
        """The fitted polynomial at ``change``, clamped at 0 (a fit may dip below 0 outside its data; a negative
        estimated change would let the skips run on unchecked)."""
        value = 0.0
        for coefficient in self.config.coefficients:  # Horner, highest power first
            value = value * change + coefficient
        return max(value, 0.0)

    def skips(self, index: int, t: torch.Tensor, latents: torch.Tensor, can_skip: bool) -> bool:
        indicator = modulated_input(self.runner, t, latents)
        previous, self.previous = self.previous, indicator
        if previous is None or not can_skip or not self.first <= index < self.last:
            self.accumulated = 0.0
            return False
        self.accumulated += self.rescale(relative_l1(indicator, previous))
        if self.accumulated < self.config.threshold:
            return True
        self.accumulated = 0.0
        return False
