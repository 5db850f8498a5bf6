"""Settings of the diffusion caches and their named presets (``cache_presets.json`` beside this module).

Step ranges are fractions of the run's step count, so one preset serves 8 steps or 50: step ``i`` of ``N`` is in a
range ``[start, end)`` when ``start * N <= i < end * N``. A period of 1 (attention, CFG) or a threshold of 0
(MagCache, TeaCache) switches that cache off: the run then gives exactly the exact sampler's result.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ATTENTION_MODULES", "CFG_COMPENSATIONS", "PRESETS_FILE", "AttentionCacheConfig", "CFGCacheConfig",
           "CacheConfig", "MagCacheConfig", "TeaCacheConfig", "cache_preset", "load_presets", "preset_names",
           "step_range"]

PRESETS_FILE = Path(__file__).with_name("cache_presets.json")
ATTENTION_MODULES = ("self_attn", "cross_attn")
CFG_COMPENSATIONS = ("fft", "delta", "plain")


def step_range(start: float, end: float, num_steps: int) -> range:
    """Steps ``i`` with ``start * N <= i < end * N``."""
    return range(math.ceil(start * num_steps - 1e-9), math.ceil(end * num_steps - 1e-9))


def _check_fraction_range(owner: str, start: float, end: float) -> None:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{owner}.{name} must be a fraction of the steps in [0, 1], got {value!r}")
    if start > end:
        raise ValueError(f"{owner}.start ({start}) must not be after end ({end})")


def _check_period(owner: str, period: Any) -> None:
    if not isinstance(period, int) or isinstance(period, bool) or period < 1:
        raise ValueError(f"{owner}.period must be a positive integer (1 = off), got {period!r}")


@dataclass(frozen=True)
class AttentionCacheConfig:
    """Recompute each block's attention output every ``period`` steps inside ``[start, end)``, reuse it in
    between (report section 4.4.2). ``modules``: ``self_attn`` and/or ``cross_attn`` of every block. With MagCache
    on, "every ``period`` steps" counts the steps that call the DiT (the CFG cache's period too). Memory: one
    [B, L, dim] output per block, module and pass (the 1.3B at 480p x 81 frames in bf16: ~100 MB each, ~6 GB
    for the self-attention of 30 blocks and both passes)."""

    period: int = 1
    start: float = 0.0
    end: float = 1.0
    modules: tuple[str, ...] = ("self_attn",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", tuple(self.modules))
        _check_period("attention", self.period)
        _check_fraction_range("attention", self.start, self.end)
        bad = [m for m in self.modules if m not in ATTENTION_MODULES]
        if bad or not self.modules:
            raise ValueError(f"attention.modules must be a non-empty subset of {ATTENTION_MODULES}, "
                             f"got {list(self.modules)}")

    @property
    def active(self) -> bool:
        return self.period > 1 and self.end > self.start


@dataclass(frozen=True)
class CFGCacheConfig:
    """Run the unconditional pass every ``period`` steps inside ``[start, end)`` (late sampling), estimating it in
    between from the cached cond - uncond difference (FasterCache's CFG-Cache).

    ``compensation``: ``fft`` splits the cached difference into low and high spatial frequencies (radius
    ``low_freq`` of the per-frame 2D spectrum, as a fraction of Nyquist) and scales the low part by
    ``1 + alpha`` before step fraction ``switch`` and the high part by ``1 + alpha`` after it; ``delta`` reuses
    the difference as it is (``fft`` with alpha 0, without the transform); ``plain`` reuses the last
    unconditional output itself (no compensation)."""

    period: int = 1
    start: float = 0.5
    end: float = 1.0
    compensation: str = "fft"
    alpha: float = 0.2
    low_freq: float = 0.25
    switch: float = 0.5

    def __post_init__(self) -> None:
        _check_period("cfg", self.period)
        _check_fraction_range("cfg", self.start, self.end)
        if self.compensation not in CFG_COMPENSATIONS:
            raise ValueError(f"cfg.compensation must be one of {CFG_COMPENSATIONS}, got {self.compensation!r}")
        if not isinstance(self.alpha, (int, float)) or not -1.0 < self.alpha < 10.0:
            raise ValueError(f"cfg.alpha must be a number in (-1, 10), got {self.alpha!r}")
        for name in ("low_freq", "switch"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"cfg.{name} must be in [0, 1], got {value!r}")

    @property
    def active(self) -> bool:
        return self.period > 1 and self.end > self.start


@dataclass(frozen=True)
class MagCacheConfig:
    """Skip whole DiT calls while the accumulated error estimate stays under ``threshold`` (MagCache).

    Each step's calibrated magnitude ratio ``||r_i|| / ||r_{i-1}||`` (r = DiT output - input) multiplies into an
    accumulated ratio; ``|1 - accumulated ratio|`` adds to the error; a step is skipped (output = its input + the
    last computed residual) while the error is under ``threshold`` and at most ``max_skips`` steps in a row were
    skipped. The first ``retention`` fraction of steps and the last ``keep_last`` steps always run.
    ``ratios``: the calibration (``calibrate_magcache``), interpolated to the run's step count; None takes the
    presets file's calibration named ``calibration``."""

    threshold: float = 0.0
    max_skips: int = 2
    retention: float = 0.2
    keep_last: int = 1
    ratios: tuple[float, ...] | None = None
    calibration: str = "tiny"

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"magcache.threshold must be >= 0 (0 = off), got {self.threshold!r}")
        if not isinstance(self.max_skips, int) or isinstance(self.max_skips, bool) or self.max_skips < 1:
            raise ValueError(f"magcache.max_skips must be a positive integer, got {self.max_skips!r}")
        if not isinstance(self.retention, (int, float)) or not 0.0 <= self.retention <= 1.0:
            raise ValueError(f"magcache.retention must be in [0, 1], got {self.retention!r}")
        if not isinstance(self.keep_last, int) or isinstance(self.keep_last, bool) or self.keep_last < 0:
            raise ValueError(f"magcache.keep_last must be an integer >= 0, got {self.keep_last!r}")
        if self.ratios is not None:
            ratios = tuple(float(r) for r in self.ratios)
            if len(ratios) < 2 or not all(math.isfinite(r) and r > 0 for r in ratios):
                raise ValueError(f"magcache.ratios must be >= 2 positive finite numbers, got {list(self.ratios)}")
            object.__setattr__(self, "ratios", ratios)

    @property
    def active(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class TeaCacheConfig:
    """Skip whole DiT calls while the accumulated relative L1 change of the first block's timestep-modulated
    input, mapped through the polynomial ``coefficients`` (highest power first; ``calibrate_teacache`` fits them,
    the default is the raw change), stays under ``threshold`` (TeaCache). A skipped step's output is its input +
    the last computed residual, as in MagCache; the first ``retention`` fraction and the last ``keep_last`` steps
    always run. With MagCache on as well, a step is skipped only when both agree. The indicator is computed on
    this process's tokens: not for context-parallel runs (ranks could decide differently)."""

    threshold: float = 0.0
    retention: float = 0.2
    keep_last: int = 1
    coefficients: tuple[float, ...] = (1.0, 0.0)

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"teacache.threshold must be >= 0 (0 = off), got {self.threshold!r}")
        if not isinstance(self.retention, (int, float)) or not 0.0 <= self.retention <= 1.0:
            raise ValueError(f"teacache.retention must be in [0, 1], got {self.retention!r}")
        if not isinstance(self.keep_last, int) or isinstance(self.keep_last, bool) or self.keep_last < 0:
            raise ValueError(f"teacache.keep_last must be an integer >= 0, got {self.keep_last!r}")
        coefficients = tuple(self.coefficients)
        if not coefficients or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in coefficients):
            raise ValueError(f"teacache.coefficients must be finite numbers, got {list(coefficients)}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in coefficients))

    @property
    def active(self) -> bool:
        return self.threshold > 0


_SECTIONS: dict[str, type] = {"attention": AttentionCacheConfig, "cfg": CFGCacheConfig,
                              "magcache": MagCacheConfig, "teacache": TeaCacheConfig}


def _section(kind: type, name: str, data: Any) -> Any:
    if isinstance(data, kind):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"cache section {name!r} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {name} cache setting(s) {unknown}; known: {sorted(known)}")
    return kind(**data)


@dataclass(frozen=True)
class CacheConfig:
    """The caches of one run (each off by default); ``name`` is the preset's, for reports."""

    attention: AttentionCacheConfig = field(default_factory=AttentionCacheConfig)
    cfg: CFGCacheConfig = field(default_factory=CFGCacheConfig)
    magcache: MagCacheConfig = field(default_factory=MagCacheConfig)
    teacache: TeaCacheConfig = field(default_factory=TeaCacheConfig)
    name: str = "custom"

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "custom") -> CacheConfig:
        """``{"attention": {...}, "cfg": {...}, "magcache": {...}, "teacache": {...}}`` (each optional); unknown
        keys are errors."""
        if not isinstance(data, dict):
            raise TypeError(f"a cache config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS) - {"note"})
        if unknown:
            raise ValueError(f"unknown cache section(s) {unknown}; known: {sorted(_SECTIONS)}")
        return cls(name=name, **{key: _section(kind, key, data[key]) for key, kind in _SECTIONS.items()
                                 if key in data})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{key: asdict(getattr(self, key)) for key in _SECTIONS}}

    @property
    def active(self) -> bool:
        return self.attention.active or self.cfg.active or self.magcache.active or self.teacache.active


@lru_cache(maxsize=4)
def _read_presets(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, Any]:
    """The presets file: ``{"chosen_on", "note", "presets": {name: {...}}, "calibrations": {name: {...}}}``."""
    data = _read_presets(str(path))
    for key in ("presets", "calibrations"):
        if not isinstance(data.get(key), dict):
            raise TypeError(f"cache presets file {path} has no {key!r} mapping")
    return data


def preset_names() -> list[str]:
    return sorted(load_presets()["presets"])


def cache_preset(name: str) -> CacheConfig:
    """The named preset (``off``, ``attention``, ``cfg``, ``magcache-fast``, ``magcache-slow``, ``combined``)."""
    presets = load_presets()["presets"]
    if not isinstance(name, str) or name not in presets:
        raise ValueError(f"unknown cache preset {name!r}; choose from {sorted(presets)}")
    return CacheConfig.from_dict(presets[name], name=name)


def calibration_ratios(name: str) -> tuple[float, ...]:
    """MagCache ratios stored in the presets file under ``calibrations[name]``."""
    calibrations = load_presets()["calibrations"]
    if name not in calibrations:
        raise ValueError(f"no MagCache calibration named {name!r} in {PRESETS_FILE.name}; have "
                         f"{sorted(calibrations)} (or pass ratios from calibrate_magcache)")
    return tuple(float(r) for r in calibrations[name]["ratios"])
