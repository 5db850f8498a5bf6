"""Wan-Bench dimensions on generated videos with known properties, and end to end on tiny random models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.dimensions import DIMENSIONS, GROUPS, BenchVideo
from bench.dimensions.camera_control import CameraControl, classify_camera
from bench.dimensions.id_consistency import IdConsistency
from bench.dimensions.image_quality import SceneQuality
from bench.dimensions.judged import (
    ActionFollowing,
    PhysicalPlausibility,
    Smoothness,
    Stylization,
)
from bench.dimensions.motion_dims import LargeMotion, PixelStability
from bench.dimensions.objects import MultipleObjects, SingleObject, SpatialPosition
from bench.judge import VLMJudge
from curation.jobconfig import ConfigError
from curation.models import WeightsNotFoundError
from curation.synth.bench_videos import (
    CAMERA_MOVES,
    camera_video,
    draw_shape,
    identity_swap_video,
    noisy_video,
    shape_video,
    static_video,
)
from tests.bench.planted import ScriptedBackend, ShapeColourEncoder


def vid(frames: np.ndarray, prompt: str = "", **meta) -> BenchVideo:
    return BenchVideo(frames, 8.0, prompt, meta, "s")


def test_registry_has_the_fourteen_dimensions_in_three_groups():
    from bench.dimensions import WANBENCH_DIMENSIONS

    assert len(WANBENCH_DIMENSIONS) == 14 and set(WANBENCH_DIMENSIONS) <= set(DIMENSIONS)
    assert {DIMENSIONS[n].group for n in WANBENCH_DIMENSIONS} == set(GROUPS)
    assert all(name == f.name for name, f in DIMENSIONS.items())


def test_unknown_config_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="saturaton"):
        DIMENSIONS["large_motion"]({"saturaton": 1.0})


def test_static_video_no_motion_full_stability_noise_lowers_it():
    static = vid(static_video())
    assert LargeMotion().score(static).score < 0.02
    assert PixelStability().score(static).score > 0.98
    noisy = PixelStability().score(vid(noisy_video(sigma=8.0)))
    assert noisy.score < 0.5 and noisy.evidence["mean_abs_diff"] > 3
    assert LargeMotion().score(vid(camera_video("pan_left", speed=3.0))).score > 0.3


def test_pan_tilt_zoom_classified():
    cases = [(m, seed, speed) for m in CAMERA_MOVES for seed in (0, 1) for speed in (1.0, 2.5)]
    right = sum(classify_camera(vid(camera_video(m, seed=s, speed=v))) == m for m, s, v in cases)
    assert right / len(cases) >= 0.9
    assert classify_camera(vid(static_video())) == "static"
    dim = CameraControl()
    assert dim.score(vid(camera_video("zoom_in"), camera="zoom_in")).score > 0.9
    assert dim.score(vid(camera_video("zoom_in"), camera="pan_left")).score < 0.1
    with pytest.raises(ValueError, match="camera"):
        dim.score(vid(camera_video("zoom_in")))


def test_identity_swap_lowers_id_consistency_colour_histogram_feature():
    """Feature: the deterministic colour histogram (a tiny random DINO carries no identity signal)."""
    dim = IdConsistency({"feature": "colour_histogram"})
    same = dim.score(vid(shape_video("circle", "red"))).score
    swapped = dim.score(vid(identity_swap_video(("circle", "red"), ("square", "blue")))).score
    assert swapped < same - 0.003 and same > 0.99


def test_matching_prompt_scores_higher_on_objects_and_scene_planted_embedding():
    """Embedding: the planted colour/shape embedding of ``tests.bench.planted``."""
    enc = ShapeColourEncoder()
    video = shape_video("circle", "red")
    dis = ["green triangle", "yellow square", "blue circle"]
    single = SingleObject(None, encoder=enc)
    assert single.score(vid(video, objects=["red circle"], distractors=dis)).score == 1.0
    assert single.score(vid(video, objects=["blue square"], distractors=dis)).score == 0.0
    scene = SceneQuality({"prompt_sim_range": [0.0, 1.0]}, encoder=enc)
    good = scene.score(vid(video, "a red circle")).score
    bad = scene.score(vid(video, "a blue square")).score
    assert good > bad + 0.4


def test_multiple_objects_and_spatial_position_planted_embedding():
    enc = ShapeColourEncoder()
    frames = np.full((4, 96, 160, 3), 128, np.uint8)
    for f in frames:
        draw_shape(f, "circle", "red", 40, 48, 36)
        draw_shape(f, "square", "blue", 120, 48, 36)
    objs = ["red circle", "blue square"]
    dis = ["green triangle", "yellow triangle"]
    assert MultipleObjects(None, encoder=enc).score(vid(frames, objects=objs, distractors=dis)).score == 1.0
    assert MultipleObjects(None, encoder=enc).score(vid(frames, objects=["red circle", "green triangle"],
                                                        distractors=["yellow square"])).score == 0.0
    spatial = SpatialPosition(None, encoder=enc)
    assert spatial.score(vid(frames, objects=objs, relation="left of")).score == 1.0
    assert spatial.score(vid(frames, objects=objs, relation="right of")).score == 0.0


def test_judge_dimensions_average_yes_no_answers():
    backend = ScriptedBackend(lambda q: "yes" if "watercolor" in q or "smooth" in q else "No.")
    judge = VLMJudge(backend=backend)
    video = vid(static_video(n_frames=4), style="watercolor", action="a dog jumps")
    assert Stylization(None, judge=judge).score(video).score == 1.0
    assert ActionFollowing(None, judge=judge).score(video).score == 0.0
    smooth = Smoothness(None, judge=judge).score(video)
    assert smooth.score == 0.5 and smooth.evidence["judge"][0]["answer"] == "yes"
    assert PhysicalPlausibility(None, judge=VLMJudge(backend=ScriptedBackend(lambda q: "hmm"))).score(
        video).score == 0.5
    with pytest.raises(ValueError, match="style"):
        Stylization(None, judge=judge).score(vid(static_video(n_frames=4)))


def test_clip_dimensions_end_to_end_on_tiny_models(bench_models):
    clip = {"path": str(bench_models["clip"])}
    video = vid(shape_video("circle", "red"), "a red circle", objects=["red circle", "blue square"],
                relation="left of")
    quality = DIMENSIONS["image_quality"]({"clip": clip, "aesthetic_weights": str(bench_models["aesthetic"]),
                                           "maniqa_weights": str(bench_models["maniqa"]),
                                           "musiq_weights": str(bench_models["musiq"])}).score(video)
    assert 0.0 <= quality.score <= 1.0 and set(quality.evidence["parts"]) == {"maniqa", "aesthetic", "musiq"}
    for name in ("scene_quality", "multiple_objects", "spatial_position"):
        result = DIMENSIONS[name]({"clip": clip}).score(video)
        assert 0.0 <= result.score <= 1.0 and result.evidence
    single = vid(video.frames, "a red circle", objects=["red circle"])
    assert 0.0 <= DIMENSIONS["single_object"]({"clip": clip}).score(single).score <= 1.0


def test_dinov2_id_consistency_end_to_end(bench_models):
    result = DIMENSIONS["id_consistency"]({"dinov2_path": str(bench_models["dinov2"])}).score(
        vid(shape_video("square", "green")))
    assert 0.9 < result.score <= 1.0 and result.evidence["feature"] == "dinov2"


@pytest.mark.parametrize("name, section, missing", [
    ("image_quality", lambda m, t: {"clip": {"path": str(m["clip"])}, "aesthetic_weights": str(t / "nope.pth"),
                                    "maniqa_weights": str(m["maniqa"]), "musiq_weights": str(m["musiq"])}, "nope.pth"),
    ("scene_quality", lambda m, t: {"clip": {"path": str(t / "no_clip")}}, "no_clip"),
    ("id_consistency", lambda m, t: {"dinov2_path": str(t / "no_dino")}, "no_dino"),
    ("smoothness", lambda m, t: {"judge": {"model_dir": str(t / "no_judge")}}, "no_judge"),
    ("human_artifacts", lambda m, t: {"weights": str(t / "no_yolo.pt")}, "no_yolo.pt"),
])
def test_missing_weights_name_the_path(bench_models, tmp_path, name, section, missing):
    with pytest.raises(WeightsNotFoundError, match=missing):
        DIMENSIONS[name](section(bench_models, tmp_path))


def test_judge_dimensions_end_to_end_on_tiny_captioner(tiny_captioner):
    judge = {"model_dir": str(tiny_captioner), "max_frames": 4}
    video = vid(static_video(n_frames=4), style="watercolor", action="a dog jumps", camera="aerial")
    for name in ("physical_plausibility", "smoothness", "stylization", "action_following", "camera_control"):
        section = {"judge": judge}
        result = DIMENSIONS[name](section).score(video)
        assert 0.0 <= result.score <= 1.0
        assert all(a["answer"] is not None for a in result.evidence["judge"])


def test_yolo_import_leaves_omp_num_threads_as_it_was():
    """Importing ultralytics sets OMP_NUM_THREADS=1 when it is unset (every later process then runs torch on one
    thread); ``yolo_class`` imports it and leaves the variable as it found it, unset or the user's value."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ultralytics")
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def omp_after(statement: str, **extra: str) -> str:
        code = f"import os; {statement}; print(os.environ.get('OMP_NUM_THREADS'))"
        return subprocess.run([sys.executable, "-c", code], env={**env, **extra}, cwd=repo, capture_output=True,
                              text=True, check=True).stdout.strip().splitlines()[-1]

    assert omp_after("import ultralytics") == "1"  # what the bare import does
    assert omp_after("from curation.models import yolo_class; yolo_class('test')") == "None"
    assert omp_after("from curation.models import yolo_class; yolo_class('test')", OMP_NUM_THREADS="3") == "3"


def test_human_artifacts_end_to_end_on_random_yolo(tmp_path):
    ultralytics = pytest.importorskip("ultralytics")
    path = tmp_path / "yolo_random.pt"
    ultralytics.YOLO("yolov8n.yaml").save(str(path))
    result = DIMENSIONS["human_artifacts"]({"weights": str(path), "imgsz": 64, "max_frames": 2}).score(
        vid(static_video(n_frames=2)))
    assert 0.0 <= result.score <= 1.0 and result.evidence["num_frames"] == 2


class _Boxes:
    def __init__(self, conf, xyxy):
        import torch

        self.conf, self.xyxy = torch.tensor(conf, dtype=torch.float32), torch.tensor(xyxy, dtype=torch.float32)


class _Result:
    def __init__(self, conf, xyxy, shape=(96, 128)):
        self.boxes, self.orig_shape = _Boxes(conf, xyxy), shape


class _PlantedDetector:
    """Half the frames have one artifact box of confidence 0.8 covering 12.5% of the frame (48 x 32 of 96 x 128)."""

    def predict(self, frames, **kwargs):
        return [_Result([0.8], [[0, 0, 48, 32]]) if i % 2 == 0 else _Result([], [])
                for i in range(len(frames))]


def test_human_artifacts_severity_from_likelihood_area_duration():
    dim = DIMENSIONS["human_artifacts"]({"area_ref": 0.25}, model=_PlantedDetector())
    result = dim.score(vid(static_video(n_frames=4)))
    # duration 0.5, likelihood 0.8, area 0.125 -> severity 0.5 * 0.8 * 0.125 / 0.25 = 0.2
    assert result.evidence["duration"] == 0.5 and result.evidence["box_area"] == pytest.approx(0.125)
    assert result.score == pytest.approx(0.8, abs=1e-6)
