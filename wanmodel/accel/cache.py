"""Diffusion caches for sampling (report section 4.4.2, plus the adaptive step skipping of MagCache / TeaCache).

One ``StepCache`` object per run: the denoising loop (``wanmodel.pipelines.common.denoise``) asks it for the guided
velocity of step ``i`` and it decides what to compute. ``DiffusionCache`` holds the caches, each off by default:

- **attention cache** (report): each block's attention output (``self_attn``, optionally ``cross_attn``) is
  recomputed every k steps inside a step range and reused in between. Installed from outside the model while the
  run lasts, by wrapping those modules' ``forward`` on the instance (removed in ``end``); reused outputs are kept
  per pass (cond / uncond), so a call that runs only the conditional pass reuses the right rows.
- **CFG cache** (report, FasterCache's CFG-Cache): late in sampling the unconditional pass runs every k steps;
  in between it is estimated as ``cond_t - delta``, with ``delta = cond - uncond`` from the last full step split
  into low and high spatial frequencies by FFT and each part weighted (``CFGCacheConfig``); ``plain`` reuses the
  last unconditional output instead (no compensation).
- **MagCache**: a whole step's DiT call is skipped while the accumulated error estimate from the calibrated
  magnitude ratios of successive residuals (residual = DiT output - its input) stays under a threshold; the
  skipped step's output is its input + the last computed residual, for each pass. **TeaCache** does the same
  from the accumulated relative L1 change of the first block's timestep-modulated input (``cache_skip``).

Counting: ``CacheStats`` counts DiT calls and passes computed (a pass = one of cond / uncond over the batch), so the
speed-up in DiT work is ``exact passes / computed passes``. With every cache off (period 1, threshold 0) the run
does exactly the exact loop's operations, so its result is bitwise the exact sampler's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from wanmodel.accel.cache_config import CacheConfig, cache_preset, step_range
from wanmodel.accel.cache_skip import (
    MagCacheSkipper,
    TeaCacheSkipper,
    interpolate_ratios,
)

__all__ = ["CacheStats", "DiTPasses", "DiffusionCache", "StepCache", "build_cache", "interpolate_ratios"]

PASSES = ("cond", "uncond")


class DiTPasses:
    """The DiT calls of one run: ``(latents, t, passes) -> {pass: float32 velocity [B, ...]}`` in one DiT call.

    ``text`` holds the padded cond rows then (when guided) the uncond rows, ``extra`` the I2V conditions doubled
    the same way; the full call is the exact loop's call (one batch of 2B), a cond-only call takes the first B
    rows."""

    def __init__(self, dit: torch.nn.Module, text: torch.Tensor, extra: dict[str, torch.Tensor], batch: int,
                 guidance_scale: float, dit_dtype: torch.dtype) -> None:
        self.dit, self.text, self.extra, self.batch = dit, text, extra, batch
        self.guidance_scale = guidance_scale
        self.guided = guidance_scale > 1.0
        self.dit_dtype = dit_dtype
        self.passes: tuple[str, ...] = PASSES if self.guided else ("cond",)

    def _rows(self, tensor: torch.Tensor, passes: tuple[str, ...]) -> torch.Tensor:
        if passes == self.passes:
            return tensor
        index = PASSES.index(passes[0])
        return tensor[index * self.batch:(index + 1) * self.batch]

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, passes: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if len(passes) not in (1, len(self.passes)) or any(p not in self.passes for p in passes):
            raise ValueError(f"passes must be one of {self.passes} or all of them, got {passes}")
        model_input = latents.to(self.dit_dtype)
        if len(passes) == 2:
            model_input = torch.cat([model_input, model_input])
        timestep = t.to(device=latents.device, dtype=torch.float32).expand(model_input.shape[0])
        extra = {key: self._rows(value, passes) for key, value in self.extra.items()}
        velocity = self.dit(model_input, timestep, self._rows(self.text, passes), **extra).float()
        if len(passes) == 1:
            return {passes[0]: velocity}
        return {"cond": velocity[:self.batch], "uncond": velocity[self.batch:]}

    def guide(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Classifier-free guidance, the exact loop's formula."""
        if not self.guided:
            return out["cond"]
        cond, uncond = out["cond"], out["uncond"]
        return uncond + self.guidance_scale * (cond - uncond)


@dataclass
class CacheStats:
    """What one run computed. ``speedup``: exact passes / computed passes (DiT work saved)."""

    steps: int = 0
    guided: bool = True
    dit_calls: int = 0
    cond_passes: int = 0
    uncond_passes: int = 0
    skipped_steps: int = 0
    uncond_estimated: int = 0
    attention_computed: int = 0
    attention_reused: int = 0
    skipped: list[int] = field(default_factory=list)
    flops_exact: float = 0.0  # estimated DiT block FLOPs of the exact run (0 when the DiT has no WanDiT config)
    flops_computed: float = 0.0

    @property
    def exact_passes(self) -> int:
        return self.steps * (2 if self.guided else 1)

    @property
    def computed_passes(self) -> int:
        return self.cond_passes + self.uncond_passes

    @property
    def speedup(self) -> float:
        return self.exact_passes / max(self.computed_passes, 1)

    @property
    def call_speedup(self) -> float:
        return self.steps / max(self.dit_calls, 1)

    @property
    def flops_speedup(self) -> float:
        """Estimated block FLOPs of the exact run / of this run (counts attention reuse too)."""
        return self.flops_exact / self.flops_computed if self.flops_computed else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exact_passes": self.exact_passes, "computed_passes": self.computed_passes,
                "speedup": self.speedup, "call_speedup": self.call_speedup, "flops_speedup": self.flops_speedup}


@runtime_checkable
class StepCache(Protocol):
    """What ``denoise(..., cache=)`` drives: ``begin`` once, ``velocity`` per step, ``end`` once (always)."""

    stats: CacheStats

    def begin(self, runner: DiTPasses, num_steps: int) -> None: ...

    def velocity(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor: ...

    def end(self) -> None: ...


def block_flops(config: Any, tokens: int, rows: int) -> dict[str, float]:
    """Estimated multiply-add FLOPs (x2) of one block's parts for ``rows`` samples of ``tokens`` video tokens:
    ``self_attn`` (q, k, v, o and L^2 attention), ``cross_attn`` (q, o, text k/v and attention to ``text_len``
    tokens), ``ffn``. Embeddings, norms, modulation and the head are left out (small next to the blocks)."""
    d, text = config.dim, config.text_len
    return {"self_attn": rows * (8.0 * tokens * d * d + 4.0 * tokens * tokens * d),
            "cross_attn": rows * (4.0 * tokens * d * d + 4.0 * text * d * d + 4.0 * tokens * text * d),
            "ffn": rows * 4.0 * tokens * d * config.ffn_dim}


def _split_frequencies(delta: torch.Tensor, low_freq: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta`` [..., h, w] -> (low, high) parts: the per-frame 2D spectrum inside / outside radius ``low_freq``
    (a fraction of Nyquist); low + high == delta up to float rounding."""
    h, w = delta.shape[-2:]
    fy = torch.fft.fftfreq(h, device=delta.device).abs() / 0.5
    fx = torch.fft.fftfreq(w, device=delta.device).abs() / 0.5
    mask = ((fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() <= low_freq).to(delta.dtype)
    low = torch.fft.ifft2(torch.fft.fft2(delta.float()) * mask).real
    return low, delta.float() - low


class DiffusionCache:
    """The caches of ``CacheConfig`` for one run at a time (reusable: ``begin`` resets everything).

    ``record_residuals``: keep each computed step's conditional residual norm per sample (``residual_norms``),
    for MagCache calibration."""

    def __init__(self, config: CacheConfig | None = None, *, record_residuals: bool = False) -> None:
        self.config = config or CacheConfig(name="off")
        self.record_residuals = record_residuals
        self.stats = CacheStats()
        self.residual_norms: list[tuple[int, torch.Tensor]] = []
        self._hooks: list[tuple[torch.nn.Module, Any]] = []
        self.runner: DiTPasses | None = None

    # ------------------------------------------------------------------------------------------ run
    def begin(self, runner: DiTPasses, num_steps: int) -> None:
        if self._hooks:
            raise RuntimeError("this DiffusionCache is already driving a run; use one object per concurrent run")
        config = self.config
        self.runner, self.num_steps = runner, num_steps
        self.stats = CacheStats(guided=runner.guided)
        self.residual_norms = []
        self._layout: tuple[str, ...] = runner.passes
        self._attn_reuse = False
        self._attn_store: dict[str, dict[str, torch.Tensor]] = {}
        self._attn_range = step_range(config.attention.start, config.attention.end, num_steps)
        self._cfg_range = step_range(config.cfg.start, config.cfg.end, num_steps)
        self._cfg_ref: torch.Tensor | None = None  # delta (fft/delta) or uncond (plain) of the last full step
        self._cfg_split: tuple[torch.Tensor, torch.Tensor] | None = None
        self._residual: dict[str, torch.Tensor] | None = None
        self._flops: dict[str, float] | None = None
        self._calls_in_range: dict[str, int] = {}
        self._skippers: list[MagCacheSkipper | TeaCacheSkipper] = []
        if config.magcache.active:
            self._skippers.append(MagCacheSkipper(config.magcache, num_steps))
        if config.teacache.active:
            self._skippers.append(TeaCacheSkipper(config.teacache, num_steps, runner))
        if config.attention.active:
            self._install(runner.dit)

    def end(self) -> None:
        for module, previous in reversed(self._hooks):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self._hooks = []
        self._attn_store = {}
        self._cfg_ref = self._cfg_split = self._residual = None

    def velocity(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.runner is None:
            raise RuntimeError("call begin(runner, num_steps) before velocity")
        runner = self.runner
        self.stats.steps += 1
        if self._flops is None:
            self._flops = self._block_flops(latents)
        self.stats.flops_exact += len(runner.passes) * self._flops["total"]
        if self._skips(index, t, latents):
            self.stats.skipped_steps += 1
            self.stats.skipped.append(index)
            return runner.guide({p: latents + r for p, r in self._residual.items()})
        cfg, attention = self.config.cfg, self.config.attention
        reuse_cfg = cfg.active and self._in_period(index, self._cfg_range, "cfg", cfg.period)
        estimate_uncond = runner.guided and reuse_cfg and self._cfg_ref is not None
        passes = ("cond",) if estimate_uncond else runner.passes
        self._layout = passes
        self._attn_reuse = attention.active and self._in_period(index, self._attn_range, "attention",
                                                                attention.period)
        self.stats.flops_computed += len(passes) * self._flops["total"]
        out = runner(latents, t, passes)
        self.stats.dit_calls += 1
        self.stats.cond_passes += 1
        self.stats.uncond_passes += int("uncond" in passes)
        if estimate_uncond:
            out["uncond"] = self._estimate_uncond(out["cond"], index)
            self.stats.uncond_estimated += 1
        elif runner.guided and cfg.active:
            self._store_cfg(out)
        self._after_compute(index, latents, out)
        return runner.guide(out)

    def _in_period(self, index: int, steps: range, name: str, period: int) -> bool:
        """Whether this computed step reuses (True) or refreshes (False) cache ``name``: inside ``steps`` the
        cache refreshes on every ``period``-th DiT call (counting calls, not steps, so MagCache's skipped steps do
        not line the refreshes up with the computed steps)."""
        if index not in steps:
            return False
        calls = self._calls_in_range.get(name, 0)
        self._calls_in_range[name] = calls + 1
        return calls % period != 0

    def _block_flops(self, latents: torch.Tensor) -> dict[str, float]:
        """Per pass (B rows): FLOPs of each part of one block, and ``total`` over all blocks."""
        config = getattr(self.runner.dit, "config", None)
        blocks = len(getattr(self.runner.dit, "blocks", ()))
        if config is None or not hasattr(config, "patch_size") or not blocks:
            return {"self_attn": 0.0, "cross_attn": 0.0, "ffn": 0.0, "total": 0.0}
        tokens = math.prod(size // patch for size, patch in zip(latents.shape[2:], config.patch_size))
        parts = block_flops(config, tokens, latents.shape[0])
        return {**parts, "total": blocks * sum(parts.values())}

    # ------------------------------------------------------------------------------------------ step skipping
    def _skips(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> bool:
        """MagCache / TeaCache: skip when every active policy agrees (each sees every step)."""
        if not self._skippers:
            return False
        votes = [skipper.skips(index, t, latents, self._residual is not None) for skipper in self._skippers]
        return all(votes)

    def _after_compute(self, index: int, latents: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        if self._skippers:
            self._residual = {p: v - latents for p, v in out.items()}
        if self.record_residuals:
            residual = (out["cond"] - latents).flatten(1)
            self.residual_norms.append((index, residual.norm(dim=1).cpu()))

    # ------------------------------------------------------------------------------------------ CFG cache
    def _store_cfg(self, out: dict[str, torch.Tensor]) -> None:
        plain = self.config.cfg.compensation == "plain"
        self._cfg_ref = out["uncond"] if plain else out["cond"] - out["uncond"]
        self._cfg_split = None

    def _estimate_uncond(self, cond: torch.Tensor, index: int) -> torch.Tensor:
        cfg = self.config.cfg
        if cfg.compensation == "plain":
            return self._cfg_ref
        if cfg.compensation == "delta":
            return cond - self._cfg_ref
        if self._cfg_split is None:
            self._cfg_split = _split_frequencies(self._cfg_ref, cfg.low_freq)
        low, high = self._cfg_split
        early = index < cfg.switch * self.num_steps
        w_low, w_high = (1.0 + cfg.alpha, 1.0) if early else (1.0, 1.0 + cfg.alpha)
        return cond - (w_low * low + w_high * high).to(cond.dtype)

    # ------------------------------------------------------------------------------------------ attention cache
    def _install(self, dit: torch.nn.Module) -> None:
        blocks = getattr(dit, "blocks", None)
        if blocks is None:
            raise ValueError(f"the attention cache needs a DiT with .blocks (a WanDiT), got {type(dit).__name__}")
        for number, block in enumerate(blocks):
            for name in self.config.attention.modules:
                module = getattr(block, name)
                previous = module.__dict__.get("forward")
                key = f"{number}.{name}"
                module.forward = self._hook(key, module.forward)
                self._hooks.append((module, previous))

    def _hook(self, key: str, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def cached_forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            store = self._attn_store.setdefault(key, {})
            layout = self._layout
            if self._attn_reuse and all(p in store for p in layout):
                self.stats.attention_reused += 1
                self.stats.flops_computed -= len(layout) * self._flops[key.split(".")[1]]
                return store[layout[0]] if len(layout) == 1 else torch.cat([store[p] for p in layout])
            out = forward(*args, **kwargs)
            self.stats.attention_computed += 1
            for p, chunk in zip(layout, out.chunk(len(layout))):
                store[p] = chunk
            return out
        return cached_forward


def build_cache(cache: str | CacheConfig | StepCache | dict[str, Any] | None) -> StepCache | None:
    """A preset name, a ``CacheConfig`` (or its dict), or a ready ``StepCache`` -> a ``StepCache``; None -> None
    (the exact loop). A bad name or setting is a ValueError naming it."""
    if cache is None:
        return None
    if isinstance(cache, str):
        return DiffusionCache(cache_preset(cache))
    if isinstance(cache, dict):
        return DiffusionCache(CacheConfig.from_dict(cache))
    if isinstance(cache, CacheConfig):
        return DiffusionCache(cache)
    if isinstance(cache, StepCache):
        return cache
    raise ValueError(f"cache must be a preset name, a CacheConfig or a StepCache, got {type(cache).__name__}")
