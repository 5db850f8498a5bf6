"""Choosing cache settings: MagCache / TeaCache calibration and a search over candidate caches on a validation
prompt set (``tune_presets`` is the procedure behind ``cache_presets.json``; ``python -m wanmodel.accel.cache_tune``
re-runs it on the tiny model).

All drive a pipeline (anything with ``generate(prompts, *, seed, cache, keep_decoded, **settings)`` returning a
``GenerationResult``, e.g. ``WanT2VPipeline``). Quality is measured against the exact sampler on the same prompts
and seeds: PSNR of the decoded videos (range [-1, 1], so peak-to-peak 2) and the latents' MSE; speed as the
DiT passes the cache computed (``CacheStats.speedup``) and the estimated block FLOPs (``flops_speedup``, which
also credits the attention cache).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wanmodel.accel.cache import DiffusionCache
from wanmodel.accel.cache_config import CacheConfig
from wanmodel.accel.cache_skip import modulated_input, relative_l1
from wanmodel.accel.quality import psnr

__all__ = ["CacheTrial", "calibrate_magcache", "calibrate_teacache", "evaluate_caches", "psnr", "tune_cache"]


def calibrate_magcache(pipeline: Any, prompts: Sequence[str], *, seed: int | Sequence[int] = 0,
                       **settings: Any) -> list[float]:
    """MagCache's per-step magnitude ratios from one exact run: ratio[i] = mean over samples of
    ``||r_i|| / ||r_{i-1}||`` for the conditional residual r = DiT output - input (ratio[0] = 1)."""
    recorder = DiffusionCache(CacheConfig(name="off"), record_residuals=True)
    pipeline.generate(list(prompts), seed=seed, cache=recorder, **settings)
    norms = [norm for _, norm in recorder.residual_norms]
    if len(norms) < 2:
        raise ValueError("MagCache calibration needs at least 2 sampling steps")
    return [1.0] + [float((now / before.clamp_min(1e-12)).mean()) for before, now in itertools.pairwise(norms)]


class _TeaCacheRecorder(DiffusionCache):
    """An exact run that records, per step, the relative L1 change of TeaCache's indicator and of the conditional
    DiT output."""

    def __init__(self) -> None:
        super().__init__(CacheConfig(name="off"))
        self.changes: list[tuple[float, float]] = []
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self._indicator: torch.Tensor | None = None

    def velocity(self, index: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        self._indicator = modulated_input(self.runner, t, latents)
        return super().velocity(index, t, latents)

    def _after_compute(self, index: int, latents: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        super()._after_compute(index, latents, out)
        now = (self._indicator, out["cond"])
        if self._previous is not None:
            self.changes.append((relative_l1(now[0], self._previous[0]), relative_l1(now[1], self._previous[1])))
        self._previous = now


def calibrate_teacache(pipeline: Any, prompts: Sequence[str], *, degree: int = 2, seed: int | Sequence[int] = 0,
                       **settings: Any) -> tuple[float, ...]:
    """TeaCache's rescaling polynomial (highest power first) from one exact run: a least-squares fit of the
    output's relative L1 change between steps against the indicator's."""
    recorder = _TeaCacheRecorder()
    pipeline.generate(list(prompts), seed=seed, cache=recorder, **settings)
    if len(recorder.changes) < degree + 1:
        raise ValueError(f"a degree-{degree} TeaCache fit needs at least {degree + 2} sampling steps")
    x, y = (torch.tensor(values, dtype=torch.float64) for values in zip(*recorder.changes))
    design = torch.stack([x**power for power in range(degree, -1, -1)], dim=1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    return tuple(float(c) for c in solution)


@dataclass
class CacheTrial:
    """One candidate's measurement against the exact sampler."""

    config: CacheConfig
    psnr: float  # decoded videos, dB (inf = identical)
    latent_mse: float
    speedup: float  # exact passes / computed passes
    flops_speedup: float  # estimated block FLOPs, exact / this run (counts attention reuse)
    computed_passes: int
    exact_passes: int
    dit_calls: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.config.name, "psnr": self.psnr, "latent_mse": self.latent_mse,
                "speedup": self.speedup, "flops_speedup": self.flops_speedup,
                "computed_passes": self.computed_passes,
                "exact_passes": self.exact_passes, "dit_calls": self.dit_calls, "config": self.config.to_dict()}


def evaluate_caches(pipeline: Any, prompts: Sequence[str], candidates: Sequence[CacheConfig], *,
                    seed: int | Sequence[int] = 0, **settings: Any) -> list[CacheTrial]:
    """Run the exact sampler once and each candidate once on ``prompts``; one ``CacheTrial`` per candidate."""
    prompts = list(prompts)
    exact = pipeline.generate(prompts, seed=seed, keep_decoded=True, **settings)
    trials = []
    for config in candidates:
        cache = DiffusionCache(config)
        result = pipeline.generate(prompts, seed=seed, keep_decoded=True, cache=cache, **settings)
        stats = cache.stats
        trials.append(CacheTrial(config=config, psnr=psnr(result.decoded, exact.decoded),
                                 latent_mse=float(((exact.latents - result.latents) ** 2).mean()),
                                 speedup=stats.speedup, flops_speedup=stats.flops_speedup,
                                 computed_passes=stats.computed_passes,
                                 exact_passes=stats.exact_passes, dit_calls=stats.dit_calls))
    return trials


def tune_cache(pipeline: Any, prompts: Sequence[str], candidates: Sequence[CacheConfig], *,
               psnr_floor: float = 30.0, seed: int | Sequence[int] = 0, **settings: Any
               ) -> tuple[CacheTrial | None, list[CacheTrial]]:
    """The fastest candidate (estimated block FLOPs, which counts attention reuse as well as skipped passes)
    whose PSNR against the exact sampler is at least ``psnr_floor`` (ties: higher PSNR), or None when none is;
    and every trial (for the record)."""
    if not candidates:
        raise ValueError("tune_cache needs at least one candidate")
    trials = evaluate_caches(pipeline, prompts, candidates, seed=seed, **settings)
    passing = [trial for trial in trials if trial.psnr >= psnr_floor]
    best = max(passing, key=lambda trial: (trial.flops_speedup, trial.psnr), default=None)
    return best, trials


# Candidate grids of ``tune_presets`` (step ranges are fractions of the run's steps).
_ATTENTION_GRID = [{"period": p, "start": s, "end": 0.9, "modules": m} for p in (2, 3, 4) for s in (0.1, 0.2, 0.3)
                   for m in (["self_attn"], ["self_attn", "cross_attn"])]
_CFG_GRID = [{"period": p, "start": s, "end": 1.0, "compensation": c, "alpha": a} for p in (2, 3)
             for s in (0.3, 0.5, 0.7) for c, a in (("delta", 0.0), ("fft", 0.1), ("fft", 0.2), ("fft", -0.1))]
_MAGCACHE_GRID = [{"threshold": t, "max_skips": k, "retention": r, "keep_last": 1}
                  for t in (0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3) for k in (2, 3, 4) for r in (0.1, 0.2)]
_TEACACHE_GRID = [{"threshold": t, "retention": r, "keep_last": 1} for t in (0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0)
                  for r in (0.1, 0.2)]
# preset -> PSNR floor in dB against the exact sampler
PRESET_FLOORS = {"attention": 30.0, "cfg": 30.0, "magcache-slow": 30.0, "magcache-fast": 24.0, "teacache": 30.0,
                 "combined": 24.0}


def tune_presets(pipeline: Any, prompts: Sequence[str], *, calibration: str, seed: int | Sequence[int] = 0,
                 floors: dict[str, float] | None = None, **settings: Any) -> dict[str, Any]:
    """Choose every preset on ``prompts`` (the procedure behind ``cache_presets.json``): calibrate MagCache and
    TeaCache, then for each preset keep the fastest candidate of its grid within its PSNR floor
    (``PRESET_FLOORS``); ``combined`` searches the products of the chosen attention and cfg presets with each
    MagCache candidate. Returns the presets file's content (``presets``, ``calibrations``, the trials' figures)."""
    floors = {**PRESET_FLOORS, **(floors or {})}
    ratios = calibrate_magcache(pipeline, prompts, seed=seed, **settings)
    coefficients = [round(c, 5) for c in calibrate_teacache(pipeline, prompts, seed=seed, **settings)]
    mag_grid = [{**m, "calibration": calibration} for m in _MAGCACHE_GRID]
    chosen: dict[str, dict[str, Any]] = {"off": {}}
    figures: dict[str, Any] = {}

    def pick(name: str, grid: list[dict[str, Any]]) -> None:
        candidates = [CacheConfig.from_dict(_with_ratios(item, ratios), name=name) for item in grid]
        best, trials = tune_cache(pipeline, prompts, candidates, psnr_floor=floors[name], seed=seed, **settings)
        if best is None:
            best = max(trials, key=lambda trial: trial.psnr)
        chosen[name] = grid[candidates.index(best.config)]
        figures[name] = {"psnr": round(best.psnr, 2), "speedup": round(best.speedup, 3),
                         "flops_speedup": round(best.flops_speedup, 3),
                         "floor": floors[name], "candidates": len(grid)}

    pick("attention", [{"attention": a} for a in _ATTENTION_GRID])
    pick("cfg", [{"cfg": c} for c in _CFG_GRID])
    pick("magcache-slow", [{"magcache": m} for m in mag_grid])
    pick("magcache-fast", [{"magcache": m} for m in mag_grid])
    pick("teacache", [{"teacache": {**t, "coefficients": coefficients}} for t in _TEACACHE_GRID])
    pick("combined", [{**chosen["attention"], **chosen["cfg"], "magcache": m} for m in mag_grid])
    return {"presets": chosen, "calibrations": {calibration: {"num_steps": len(ratios),
                                                              "ratios": [round(r, 5) for r in ratios]}},
            "figures": figures}


def _with_ratios(item: dict[str, Any], ratios: list[float]) -> dict[str, Any]:
    """A candidate with the fresh calibration in place of the presets file's (the file is written afterwards)."""
    if "magcache" not in item:
        return item
    magcache = {k: v for k, v in item["magcache"].items() if k != "calibration"}
    return {**item, "magcache": {**magcache, "ratios": ratios}}


# The validation set and settings ``cache_presets.json`` was tuned on (``python -m wanmodel.accel.cache_tune``).
TINY_PROMPTS = ["a corgi surfing a wave at sunset", "a red fox walking through fresh snow in a quiet forest",
                "close-up of rain drops on a window, city lights in the background"]
TINY_SETTINGS = {"height": 32, "width": 48, "num_frames": 9, "num_steps": 20, "guidance_scale": 5.0, "shift": 5.0}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Re-tune the stored presets on the tiny random model (seed 0) and write them to ``--out`` (default: print)."""
    import argparse
    import json

    from wanmodel.accel.cache_config import PRESETS_FILE
    from wanmodel.pipelines.t2v import WanT2VPipeline
    from wanmodel.pipelines.tiny import build_tiny_models

    parser = argparse.ArgumentParser(prog="python -m wanmodel.accel.cache_tune", description=main.__doc__)
    parser.add_argument("--tiny-dir", default="out/tiny_models")
    parser.add_argument("--out", help="presets file to write (e.g. wanmodel/accel/cache_presets.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    paths = build_tiny_models(args.tiny_dir, "t2v")
    pipeline = WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder)
    tuned = tune_presets(pipeline, TINY_PROMPTS, calibration="tiny", seed=[0, 1, 2], **TINY_SETTINGS)
    current = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))
    data = {"chosen_on": current["chosen_on"], "note": current["note"], **tuned}
    text = json.dumps(data, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return data


if __name__ == "__main__":
    main()
