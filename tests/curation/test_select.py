"""Select's decisions on hand-made joined rows with known answers."""
from __future__ import annotations

from curation.config import SelectConfig
from curation.stages.select import crop_excluding, decide

CFG = SelectConfig(train_stage="s", min_short_side={"s": 144}, min_duration_s=4.0)


def _row(**extra):
    row = {"clip_id": "c", "status": "ok", "error": None, "media_type": "video", "duration_s": 6.0,
           "width": 320, "height": 180}
    row.update(extra)
    return row


def test_duration_and_resolution_hold_without_their_stage():
    reasons, _ = decide(_row(duration_s=2.5, width=200, height=112), [], CFG)
    assert reasons == ["too_short", "low_resolution"]
    assert decide(_row(), [], CFG) == ([], (0, 0, 320, 180))


def test_resolution_is_judged_after_the_crop():
    row = _row(**{"borders.status": "ok", "borders.crop_x0": 0, "borders.crop_y0": 22, "borders.crop_x1": 320,
                  "borders.crop_y1": 158, "borders.border_fraction": 0.24})
    reasons, crop = decide(row, ["borders"], CFG)
    assert crop == (0, 22, 320, 158) and reasons == ["low_resolution"]  # 136 px left of 180


def test_watermark_at_the_left_edge_is_cropped_out():
    row = _row(**{"watermark.status": "ok", "watermark.has_watermark": True, "watermark.wm_x0": 0,
                  "watermark.wm_y0": 0, "watermark.wm_x1": 60, "watermark.wm_y1": 20})
    reasons, crop = decide(row, ["watermark"], CFG)
    assert crop == (0, 20, 320, 180) and reasons == []


def test_missing_and_failed_stage_rows_are_reasons():
    row = _row(**{"blur.status": "error", "motion.status": None})
    reasons, _ = decide(row, ["blur", "motion"], CFG)
    assert reasons == ["error:blur", "missing:motion"]


def test_every_threshold_gives_its_reason():
    row = _row(**{"exposure.overexposure_score": 0.9, "blur.blur_score": 0.8, "motion.motion_tier": "shaky",
                  "dedup.is_duplicate": True, "borders.border_fraction": 0.6})
    reasons, _ = decide(row, [], CFG)
    assert set(reasons) == {"overexposed", "blurry", "motion:shaky", "near_duplicate", "border"}


def test_images_skip_duration():
    assert decide(_row(media_type="image", duration_s=0.0), [], CFG)[0] == []


def test_crop_excluding_keeps_the_larger_side():
    assert crop_excluding((0, 0, 320, 180), (250, 0, 320, 30)) == (0, 30, 320, 180)
    assert crop_excluding((0, 0, 320, 180), (0, 0, 30, 170)) == (30, 0, 320, 180)
    assert crop_excluding((10, 10, 100, 100), (200, 200, 220, 220)) == (10, 10, 100, 100)
