"""Rule-based motion tier (Wan 2.1 report, section 3.1 "Motion quality") from the motion scores of one clip.

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
debugging; the stage stores the tier only.
"""
from __future__ import annotations

from typing import Any, Mapping

TIERS = ("optimal", "medium", "static", "camera_driven", "low_quality", "shaky")


def classify(s: Mapping[str, float], cfg: Any) -> tuple[str, str]:
    """Motion tier of one clip and the reason.

    Args:
        s: the clip's scores: ``camera_motion``, ``subject_motion``, ``moving_fraction``, ``num_movers``,
            ``shakiness`` (as returned by ``curation.scorers.motion.score``) and ``smooth_step`` (mean
            camera translation per sampled frame pair, fraction of the width; 0 when unknown).
        cfg: a ``MotionConfig`` (any object with its threshold attributes).
    """
    cam = float(s["camera_motion"])
    subj = float(s["subject_motion"])
    mf = float(s["moving_fraction"])
    movers = float(s["num_movers"])
    jitter = float(s["shakiness"])
    smooth = float(s.get("smooth_step", 0.0))

    if jitter >= cfg.shaky_min_jitter and jitter >= cfg.shaky_min_ratio * smooth:
        return "shaky", f"shakiness {jitter:.4f} >= {cfg.shaky_min_jitter} and >= {cfg.shaky_min_ratio}*{smooth:.4f}"
    if cam >= cfg.camera_min_speed and mf < cfg.camera_max_moving_fraction:
        return "camera_driven", (
            f"camera_motion {cam:.3f} >= {cfg.camera_min_speed}, moving_fraction {mf:.4f} < "
            f"{cfg.camera_max_moving_fraction}"
        )
    if movers >= cfg.low_quality_min_movers:
        return "low_quality", f"num_movers {movers:g} >= {cfg.low_quality_min_movers}"
    activity = mf * subj
    if cam < cfg.camera_min_speed and (mf < cfg.static_max_moving_fraction or activity < cfg.static_max_activity):
        return "static", (
            f"camera_motion {cam:.3f} < {cfg.camera_min_speed}; moving_fraction {mf:.4f} "
            f"(< {cfg.static_max_moving_fraction}?), moving_fraction*subject_motion {activity:.5f} "
            f"(< {cfg.static_max_activity}?)"
        )
    if movers >= cfg.medium_min_movers:
        return "medium", f"num_movers {movers:g} >= {cfg.medium_min_movers}"
    return "optimal", f"one clear mover: num_movers {movers:g}, subject_motion {subj:.3f}, moving_fraction {mf:.3f}"
