"""Select's decisions on hand-made joined rows with known answers."""
from __future__ import annotations

from curation.config import SelectConfig
from curation.scorers.motion_rules import MotionTierRules
from curation.stages.decisions import motion_tier, near_thresholds, stage_values
from curation.stages.select import crop_excluding, decide

CFG = SelectConfig(train_stage="s", min_short_side={"s": 144}, min_duration_s=4.0)


def _row(**extra):
    row = {"clip_id": "c", "status": "ok", "error": None, "media_type": "video", "duration_s": 6.0,
           "width": 320, "height": 180}
    row.update(extra)
    return row


def _motion(**stats):
    base = {"camera_motion": 0.0, "subject_motion": 0.0, "moving_fraction": 0.0, "num_movers": 0.0,
            "shakiness": 0.0, "smooth_step": 0.0, "num_pairs": 12}
    return {"motion.status": "ok", **{f"motion.{k}": v for k, v in {**base, **stats}.items()}}


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
    row = _row(**{"watermark.status": "ok", "watermark.watermark_score": 0.8, "watermark.wm_x0": 0,
                  "watermark.wm_y0": 0, "watermark.wm_x1": 60, "watermark.wm_y1": 20})
    reasons, crop = decide(row, ["watermark"], CFG)
    assert crop == (0, 20, 320, 180) and reasons == []


def test_missing_and_failed_stage_rows_are_reasons():
    row = _row(**{"blur.status": "error", "motion.status": None})
    reasons, _ = decide(row, ["blur", "motion"], CFG)
    assert reasons == ["error:blur", "missing:motion"]


def test_every_threshold_gives_its_reason():
    row = _row(**{"exposure.overexposure_score": 0.9, "blur.blur_score": 0.8, **_motion(shakiness=0.02),
                  "dedup.is_duplicate": True, "borders.border_fraction": 0.6})
    reasons, _ = decide(row, [], CFG)
    assert set(reasons) == {"overexposed", "blurry", "motion:shaky", "near_duplicate", "border"}


def test_images_skip_duration():
    assert decide(_row(media_type="image", duration_s=0.0), [], CFG)[0] == []


def test_crop_excluding_keeps_the_larger_side():
    assert crop_excluding((0, 0, 320, 180), (250, 0, 320, 30)) == (0, 30, 320, 180)
    assert crop_excluding((0, 0, 320, 180), (0, 0, 30, 170)) == (30, 0, 320, 180)
    assert crop_excluding((10, 10, 100, 100), (200, 200, 220, 220)) == (10, 10, 100, 100)


def test_motion_tier_is_decided_from_statistics_with_select_thresholds():
    one_mover = _motion(camera_motion=0.002, subject_motion=0.2, moving_fraction=0.05, num_movers=1.4)
    assert motion_tier(stage_values(one_mover, "motion"), CFG) == "medium"  # 1.4 >= medium_min_movers 1.25
    raised = CFG.model_copy(update={"motion_tiers": MotionTierRules(medium_min_movers=1.5)})
    assert motion_tier(stage_values(one_mover, "motion"), raised) == "optimal"
    assert decide(_row(**_motion(shakiness=0.02)), ["motion"], CFG)[0] == ["motion:shaky"]
    assert motion_tier(stage_values(_motion(num_pairs=0), "motion"), CFG) is None  # image / one frame: no tier
    assert motion_tier(None, CFG) is None


def test_watermark_threshold_lives_in_select():
    row = _row(**{"watermark.status": "ok", "watermark.watermark_score": 0.4, "watermark.wm_x0": 0,
                  "watermark.wm_y0": 0, "watermark.wm_x1": 60, "watermark.wm_y1": 20})
    assert decide(row, ["watermark"], CFG)[1] == (0, 0, 320, 180)  # 0.4 < 0.5: no watermark, nothing cropped
    low = CFG.model_copy(update={"watermark_min_score": 0.3, "reject_watermark": True})
    reasons, crop = decide(row, ["watermark"], low)
    assert crop == (0, 20, 320, 180) and reasons == ["watermark"]


def test_near_threshold_names_the_deciding_statistic():
    row = _row(**{"blur.status": "ok", "blur.blur_score": 0.47, **_motion(camera_motion=0.002, subject_motion=0.2,
                                                                          moving_fraction=0.05, num_movers=1.3)})
    near = near_thresholds(row, CFG)
    assert "blur: blur_score 0.47 ~ 0.5" in near and any(n.startswith("motion: num_movers 1.3") for n in near), near
    far = _row(**{"blur.status": "ok", "blur.blur_score": 0.1, **_motion(camera_motion=0.1, shakiness=0.0001)})
    assert near_thresholds(far, CFG) == []
    # a statistic near a threshold of a rule that does not decide the clip is not listed: a fast pan stays a pan
    pan = _row(**_motion(camera_motion=0.2, moving_fraction=0.001, num_movers=1.2))
    assert motion_tier(stage_values(pan, "motion"), CFG) == "camera_driven" and near_thresholds(pan, CFG) == []


def _write_scene(path, kind: str, seed: int, n: int = 60, fps: int = 24) -> None:
    import av

    from curation.synth.scenes import render_scene

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        for img in render_scene(kind, seed, 320, 180, n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        c.mux(s.encode(None))


def test_a_tier_threshold_change_reruns_select_without_recomputing_flow(tmp_path, monkeypatch):
    """The motion table holds statistics only: a new tier threshold changes the tier in ``curated`` while the
    motion stage has nothing to redo (same stage version, same table version, optical flow never called)."""
    from curation.lake import Lake
    from curation.pipeline import run_curation
    from curation.scorers import motion
    from tests.conftest import demo_config

    media = tmp_path / "media"
    media.mkdir()
    _write_scene(media / "one_mover.mp4", "optimal", seed=1)
    lake_dir, local = tmp_path / "lake", {"execution.backend": "local"}
    run_curation(demo_config(lake_dir, media, stages=["ingest", "shots", "motion", "select"], **local), report=False)
    lake = Lake(str(lake_dir))
    assert lake.read("curated").column("motion_tier").to_pylist() == ["optimal"]
    motion_version = lake.version("stages/motion")
    stats = lake.read("stages/motion").to_pylist()
    assert 0.5 <= stats[0]["num_movers"] < 1.25

    def no_flow(*args, **kwargs):
        raise AssertionError("optical flow recomputed")

    monkeypatch.setattr(motion, "pair_flows", no_flow)
    run_curation(demo_config(lake_dir, media, stages=["motion", "select"],
                             **{**local, "select.motion_tiers.medium_min_movers": 0.5, "select.near_margin": 1.0}),
                 report=False)
    assert lake.read("curated").column("motion_tier").to_pylist() == ["medium"]
    assert lake.version("stages/motion") == motion_version
    assert lake.read("stages/motion").to_pylist() == stats
    # num_movers (about 1) is within 100 % of the new threshold 0.5 and decides the tier: the report lists it
    from curation.config import ReportConfig
    from curation.report import write_report

    write_report(lake, ReportConfig(), str(tmp_path / "report"))
    page, text = (tmp_path / "report" / "report.html").read_text(), (tmp_path / "report" / "summary.txt").read_text()
    assert "<h2>Near threshold</h2>" in page and "motion: num_movers" in page, page
    assert "near threshold (1 clips" in text and "one_mover.mp4" in text, text
