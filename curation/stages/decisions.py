"""The decisions ``select`` takes from stored statistics: motion tier, watermark, blur, exposure and border.

Scorers store statistics only (Data-Juicer's compute-stats / process split); every threshold lives in
``SelectConfig``, so changing one re-runs ``select`` alone. Each function takes one stage's values without the
``<stage>.`` prefix (``stage_values`` strips it from a joined row), so ``select`` and the evaluation against the
generator's labels decide identically.

``near_thresholds`` names the statistics that sit within ``select.near_margin`` (relative) of a threshold that
decides the clip: the decisions a re-encode or a small threshold change could flip, listed in the report.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from curation.config import SelectConfig
from curation.lake.schemas import STATUS_OK
from curation.scorers.motion_rules import STAT_KEYS, classify, decisive_near_thresholds

Values = Mapping[str, Any]


def stage_values(row: Mapping[str, Any], stage: str) -> dict[str, Any] | None:
    """``stage``'s columns of a joined ``select`` row, prefix stripped; None unless its status is ``ok``."""
    if row.get(f"{stage}.status") != STATUS_OK:
        return None
    p = f"{stage}."
    return {k[len(p):]: v for k, v in row.items() if k.startswith(p)}


def motion_tier(motion: Values | None, cfg: SelectConfig) -> str | None:
    """The motion tier from the motion statistics; None for an image, a one-frame clip or no motion row."""
    if not motion or not motion.get("num_pairs"):
        return None
    return classify({k: motion.get(k) for k in STAT_KEYS}, cfg.motion_tiers)[0]


def has_watermark(watermark: Values | None, cfg: SelectConfig) -> bool:
    """A watermark (static overlay) is present when its score reaches ``watermark_min_score``."""
    score = (watermark or {}).get("watermark_score")
    return score is not None and float(score) >= cfg.watermark_min_score


def is_blurry(blur: Values | None, cfg: SelectConfig) -> bool:
    v = (blur or {}).get("blur_score")
    return v is not None and float(v) > cfg.max_blur


def is_overexposed(exposure: Values | None, cfg: SelectConfig) -> bool:
    v = (exposure or {}).get("overexposure_score")
    return v is not None and float(v) > cfg.max_overexposure


def has_too_much_border(borders: Values | None, cfg: SelectConfig) -> bool:
    v = (borders or {}).get("border_fraction")
    return v is not None and float(v) > cfg.max_border_fraction


def _near(name: str, value: Any, threshold: float, margin: float) -> list[str]:
    if value is None or threshold <= 0 or abs(float(value) - threshold) > margin * threshold:
        return []
    return [f"{name} {float(value):.4g} ~ {threshold:g}"]


def near_thresholds(row: Mapping[str, Any], cfg: SelectConfig) -> list[str]:
    """``"<stage>: <statistic> <value> ~ <threshold>"`` for each decision of a joined row close to flipping."""
    m = cfg.near_margin
    out = []
    motion = stage_values(row, "motion")
    if motion and motion.get("num_pairs"):
        out += [f"motion: {s}" for s in decisive_near_thresholds(motion, cfg.motion_tiers, m)]
    checks = [("blur", "blur_score", cfg.max_blur), ("exposure", "overexposure_score", cfg.max_overexposure),
              ("borders", "border_fraction", cfg.max_border_fraction),
              ("watermark", "watermark_score", cfg.watermark_min_score)]
    for stage, key, thr in checks:
        values = stage_values(row, stage)
        if values is not None:
            out += [f"{stage}: {s}" for s in _near(key, values.get(key), thr, m)]
    return out
