"""Rule-based motion tier (Wan 2.1 report, section 3.1 "Motion quality") from the stored motion statistics.

The motion scorer (``curation.scorers.motion``) stores statistics only; ``select`` applies these rules, with the
thresholds of ``select.motion_tiers`` (``MotionTierRules``), so a changed threshold never recomputes optical flow.

The six tiers, in the order the rules test them (the first rule that fires wins). Units: speeds in frame widths
per second, ``shakiness`` in frame widths, ``num_movers`` = mean number of moving regions per frame pair.

1. ``shaky``: the camera trajectory jitters: ``shakiness >= shaky_min_jitter`` (per-frame positional jitter of
   the camera) and the jitter is not a small by-product of a fast smooth move:
   ``shakiness >= shaky_min_ratio * smooth_step`` (``smooth_step``: the mean camera translation between two
   sampled frames, same unit). Amateur hand-held footage.
2. ``camera_driven``: the camera moves (``camera_motion >= camera_min_speed``) and almost nothing moves on its
   own (``moving_fraction < camera_max_moving_fraction``): pans, zooms, aerial shots.
3. ``low_quality``: crowded, no clear main subject: ``num_movers >= low_quality_min_movers``.
4. ``static``: the camera is still (``camera_motion < camera_min_speed``) and the moving area is tiny
   (``moving_fraction < static_max_moving_fraction``) or what moves moves little
   (``moving_fraction * subject_motion < static_max_activity``; this product is the frame-average subject
   speed): talking heads, interviews, still scenes.
5. ``medium``: noticeable motion of more than one subject, or of one subject partly hidden by an occluder, which
   then splits into two regions: ``num_movers >= medium_min_movers``.
6. ``optimal``: significant, clean motion of one clear subject (everything else).

Defaults were tuned on the synthetic corpus of ``curation.synth`` (320x180 / 128x72 / 640x360, 24-30 fps),
whose kinds are clean; on real footage re-check them against a labelled sample.

``classify`` returns the tier together with a short text naming the scores that decided it, for reports and
debugging. ``decisive_near_thresholds`` lists the comparisons that sat within ``margin`` (relative) of their threshold:
the clips whose tier a re-encode could flip, shown in the report.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TIERS = ("optimal", "medium", "static", "camera_driven", "low_quality", "shaky")
STAT_KEYS = ("camera_motion", "subject_motion", "moving_fraction", "num_movers", "shakiness", "smooth_step")


class MotionTierRules(BaseModel):
    """Thresholds of the motion-tier rules (``select.motion_tiers``). Speeds in widths/s; jitter in widths."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    shaky_min_jitter: float = Field(default=0.004, ge=0, le=1)
    shaky_min_ratio: float = Field(default=0.25, ge=0, le=100)
    camera_min_speed: float = Field(default=0.02, ge=0, le=10)
    camera_max_moving_fraction: float = Field(default=0.02, ge=0, le=1)
    static_max_moving_fraction: float = Field(default=0.01, ge=0, le=1)
    static_max_activity: float = Field(default=0.0015, ge=0, le=10)  # moving_fraction * subject_motion
    low_quality_min_movers: float = Field(default=4.0, ge=1, le=1000)
    medium_min_movers: float = Field(default=1.25, ge=0, le=1000)


def _stats(s: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(s.get(k) or 0.0) for k in STAT_KEYS}


def classify(s: Mapping[str, Any], rules: MotionTierRules) -> tuple[str, str]:
    """Motion tier of one clip and the reason.

    Args:
        s: the clip's statistics (``STAT_KEYS``, as stored in ``stages/motion``; ``smooth_step`` 0 when unknown).
        rules: the thresholds.
    """
    v = _stats(s)
    cam, subj, mf = v["camera_motion"], v["subject_motion"], v["moving_fraction"]
    movers, jitter, smooth = v["num_movers"], v["shakiness"], v["smooth_step"]
    r = rules
    if jitter >= r.shaky_min_jitter and jitter >= r.shaky_min_ratio * smooth:
        return "shaky", f"shakiness {jitter:.4f} >= {r.shaky_min_jitter} and >= {r.shaky_min_ratio}*{smooth:.4f}"
    if cam >= r.camera_min_speed and mf < r.camera_max_moving_fraction:
        return "camera_driven", (f"camera_motion {cam:.3f} >= {r.camera_min_speed}, moving_fraction {mf:.4f} < "
                                 f"{r.camera_max_moving_fraction}")
    if movers >= r.low_quality_min_movers:
        return "low_quality", f"num_movers {movers:g} >= {r.low_quality_min_movers}"
    activity = mf * subj
    if cam < r.camera_min_speed and (mf < r.static_max_moving_fraction or activity < r.static_max_activity):
        return "static", (f"camera_motion {cam:.3f} < {r.camera_min_speed}; moving_fraction {mf:.4f} "
                          f"(< {r.static_max_moving_fraction}?), moving_fraction*subject_motion {activity:.5f} "
                          f"(< {r.static_max_activity}?)")
    if movers >= r.medium_min_movers:
        return "medium", f"num_movers {movers:g} >= {r.medium_min_movers}"
    return "optimal", f"one clear mover: num_movers {movers:g}, subject_motion {subj:.3f}, moving_fraction {mf:.3f}"


def _comparisons(v: dict[str, float], r: MotionTierRules) -> list[tuple[str, float, float]]:
    """``(name, value, threshold)`` of every comparison the rules make."""
    return [
        ("shakiness", v["shakiness"], r.shaky_min_jitter),
        ("camera_motion", v["camera_motion"], r.camera_min_speed),
        ("moving_fraction", v["moving_fraction"], r.camera_max_moving_fraction),
        ("moving_fraction", v["moving_fraction"], r.static_max_moving_fraction),
        ("moving_fraction*subject_motion", v["moving_fraction"] * v["subject_motion"], r.static_max_activity),
        ("num_movers", v["num_movers"], r.low_quality_min_movers),
        ("num_movers", v["num_movers"], r.medium_min_movers),
    ]


def decisive_near_thresholds(s: Mapping[str, Any], rules: MotionTierRules, margin: float) -> list[str]:
    """The comparisons within ``margin`` (relative) of their threshold whose flip would change the tier.

    Each near comparison is tested by nudging its statistic across the threshold; only those that change the
    tier are listed (a statistic near a threshold of a rule that does not decide the clip cannot flip it)."""
    v = _stats(s)
    tier = classify(v, rules)[0]
    out = []
    for name, value, thr in _comparisons(v, rules):
        if thr <= 0 or abs(value - thr) > margin * thr:
            continue
        key = "moving_fraction" if name.startswith("moving_fraction*") else name
        for factor in (1.0 - 1.01 * margin, 1.0 + 1.01 * margin):
            nudged = dict(v)
            nudged[key] = (thr * factor / (v["subject_motion"] or 1.0)) if "*" in name else thr * factor
            if classify(nudged, rules)[0] != tier:
                out.append(f"{name} {value:.4g} ~ {thr:g}")
                break
    return sorted(set(out))
