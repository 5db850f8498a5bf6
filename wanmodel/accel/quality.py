"""The quality guard of the fast sampling modes: how far a mode's samples are from the exact sampler's.

Every fast mode (step caches, FP8, offload, their combination) is judged against OUR exact plain sampler on the same
prompts, seeds and settings (issue 14, "Quality guard"):

- ``latent_mse(fast, exact)``: mean square difference of the final normalised latents [B, 16, T, h, w];
- ``psnr(fast, exact)``: PSNR in dB of decoded frames, ``10 log10(range^2 / MSE)`` pooled over every pixel of every
  video (float video in [-1, 1]: range 2; uint8 frames: range 255); identical inputs give ``inf``;
- ``compare_to_exact(pipeline, prompts, seeds, ...)``: samples the exact and the fast run and returns both figures
  per sample and pooled (``QualityReport``);
- ``bench_dimension_deltas(exact, fast, prompts)``: the Wan-Bench dimensions that run offline on the CPU without
  model weights (``OFFLINE_DIMENSIONS``: optical-flow ones on OpenCV's DIS flow) scored on both sample sets, and the
  per-dimension difference fast - exact; when ``bench`` (or its OpenCV / curation imports) cannot be imported, every
  dimension is recorded as skipped with the reason (the GPU box has torch only).

Torch and numpy only at import; ``bench`` is imported inside ``bench_dimension_deltas``. Figures are float64 sums.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["OFFLINE_DIMENSIONS", "QualityReport", "bench_dimension_deltas", "compare_results", "compare_to_exact",
           "latent_mse", "psnr"]

OFFLINE_DIMENSIONS: tuple[str, ...] = ("large_motion", "pixel_stability")
"""Wan-Bench dimensions that need no model weights (DIS optical flow on the CPU): the ones the guard can score
anywhere ``bench`` imports. The others load CLIP / YOLO / MUSIQ weights or call a judge model."""

Array = torch.Tensor | np.ndarray


def _as_float64(value: Array) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
    return tensor.detach().to(device="cpu", dtype=torch.float64)


def _check_shapes(a: Array, b: Array, what: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def latent_mse(fast: Array, exact: Array) -> float:
    """Mean square difference of two latent tensors of one shape (0.0 when equal)."""
    _check_shapes(fast, exact, "latent_mse")
    return float((_as_float64(fast) - _as_float64(exact)).square().mean())


def _data_range(value: Array, data_range: float | None) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        return float(data_range)
    return 255.0 if value.dtype in (np.uint8, torch.uint8) else 2.0


def psnr(fast: Array, exact: Array, *, data_range: float | None = None) -> float:
    """PSNR (dB) of ``fast`` against ``exact``, pooled over every element; ``inf`` when they are equal.

    ``data_range``: the span of valid values; default 255 for uint8 frames, else 2 (float video in [-1, 1], what
    ``GenerationResult.decoded`` holds).
    """
    _check_shapes(fast, exact, "psnr")
    span = _data_range(exact, data_range)
    mse = float((_as_float64(fast) - _as_float64(exact)).square().mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(span * span / mse)


@dataclass
class QualityReport:
    """Deviation of a fast sampler from the exact one: pooled over the prompt set and per sample."""

    latent_mse: float
    psnr_db: float  # decoded frames, pooled
    per_sample: list[dict[str, float]] = field(default_factory=list)  # {"latent_mse", "psnr_db"} per video
    bench: dict[str, dict[str, Any]] | None = None  # bench_dimension_deltas' result, when asked for

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``inf`` stays a float: ``json.dumps`` writes Infinity)."""
        return asdict(self)


def _video(result: Any) -> torch.Tensor | np.ndarray:
    """The float decoded video [B, 3, F, H, W] of a GenerationResult when kept, else its uint8 frames stacked."""
    decoded = getattr(result, "decoded", None)
    return decoded if decoded is not None else np.stack(result.videos)


def compare_results(fast: Any, exact: Any) -> QualityReport:
    """QualityReport of two ``GenerationResult``s (same prompts, seeds and settings): latents and decoded frames
    (the float video when both kept it, ``keep_decoded=True``; else the uint8 frames)."""
    if fast.latents.shape[0] != exact.latents.shape[0]:
        raise ValueError(f"the results hold {fast.latents.shape[0]} and {exact.latents.shape[0]} samples")
    fast_video, exact_video = _video(fast), _video(exact)
    if type(fast_video) is not type(exact_video):  # one kept the float video, the other not: compare uint8
        fast_video, exact_video = np.stack(fast.videos), np.stack(exact.videos)
    per_sample = [{"latent_mse": latent_mse(fast.latents[i], exact.latents[i]),
                   "psnr_db": psnr(fast_video[i], exact_video[i])} for i in range(exact.latents.shape[0])]
    return QualityReport(latent_mse=latent_mse(fast.latents, exact.latents), psnr_db=psnr(fast_video, exact_video),
                         per_sample=per_sample)


def compare_to_exact(pipeline: Any, prompts: Sequence[str], seeds: Sequence[int], *,
                     fast_kwargs: dict[str, Any] | None = None, fast_pipeline: Any | None = None,
                     exact: Any | None = None, bench: bool = False, **settings: Any) -> QualityReport:
    """Sample ``prompts`` with ``seeds`` exactly (``pipeline.generate(..., **settings)``, or reuse ``exact``, an
    earlier result of that call) and fast (``fast_pipeline or pipeline`` with ``fast_kwargs`` added, e.g.
    ``{"cache": "fast"}``), and report the deviation; ``bench=True`` adds ``bench_dimension_deltas``."""
    prompts, seeds = list(prompts), list(seeds)
    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt, got {len(seeds)} seeds for {len(prompts)} prompts")
    if exact is None:
        exact = pipeline.generate(prompts, seed=seeds, keep_decoded=True, **settings)
    fast = (fast_pipeline or pipeline).generate(prompts, seed=seeds, keep_decoded=True, **settings,
                                                **(fast_kwargs or {}))
    report = compare_results(fast, exact)
    if bench:
        fps = float(getattr(exact.settings, "fps", 16))
        report.bench = bench_dimension_deltas(exact.videos, fast.videos, prompts, fps=fps)
    return report


def bench_dimension_deltas(exact: Sequence[np.ndarray], fast: Sequence[np.ndarray], prompts: Sequence[str], *,
                           fps: float = 16.0, dimensions: Sequence[str] = OFFLINE_DIMENSIONS
                           ) -> dict[str, dict[str, Any]]:
    """Per dimension: mean score of the exact and the fast videos (uint8 [F, H, W, 3] each) and ``delta`` = fast -
    exact; or ``{"skipped": reason}`` when bench cannot be imported, the dimension cannot be built, or a video cannot
    be scored (a one-frame image for a flow dimension, for example)."""
    try:
        from bench.dimensions import DIMENSIONS, BenchVideo
    except Exception as error:  # noqa: BLE001 - ImportError, or a broken optional dependency (cv2, curation)
        return {name: {"skipped": f"bench not importable: {type(error).__name__}: {error}"} for name in dimensions}
    out: dict[str, dict[str, Any]] = {}
    for name in dimensions:
        if name not in DIMENSIONS:
            out[name] = {"skipped": f"no Wan-Bench dimension {name!r}"}
            continue
        try:
            scorer = DIMENSIONS[name](None)
            scores = {label: [scorer.score(BenchVideo(np.asarray(video), fps, prompt)).score
                              for video, prompt in zip(videos, prompts)]
                      for label, videos in (("exact", exact), ("fast", fast))}
        except Exception as error:  # noqa: BLE001 - a dimension that cannot score these videos is recorded, not fatal
            out[name] = {"skipped": f"{type(error).__name__}: {error}"}
            continue
        mean_exact, mean_fast = float(np.mean(scores["exact"])), float(np.mean(scores["fast"]))
        out[name] = {"exact": mean_exact, "fast": mean_fast, "delta": mean_fast - mean_exact}
    return out
