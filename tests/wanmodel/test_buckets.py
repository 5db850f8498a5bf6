"""Buckets and the curriculum from YAML: the report's stages, equal token counts, assignment, bad configs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from curation.jobconfig import ConfigError
from wanmodel.data.buckets import (
    Curriculum,
    assign_bucket,
    bucket_dims,
    source_frame_indices,
)

REPO = Path(__file__).resolve().parents[2]
CURRICULUM = REPO / "jobs/configs/curriculum.yaml"


@pytest.fixture(scope="module")
def curriculum() -> Curriculum:
    return Curriculum.load(CURRICULUM)


def test_report_stages_present(curriculum: Curriculum) -> None:
    assert curriculum.names[:6] == ["image_256", "joint_256_192", "joint_480", "joint_720", "posttrain_480",
                                    "posttrain_720"]
    img = curriculum.stage("image_256")
    assert img.mix == {"image": 1.0} and not img.buckets_of("video")
    assert img.bucket("i256_1x1").height == 256 and img.bucket("i256_1x1").width == 256
    joint = curriculum.stage("joint_256_192")
    video = joint.buckets_of("video")
    assert {(b.frames, b.fps) for b in video} == {(81, 16.0)}  # 5 s at 16 fps, 1 + 4k frames
    assert (joint.bucket("v192_16x9").height, joint.bucket("v192_16x9").width) == (192, 336)
    assert joint.bucket("i256_1x1").frames == 1
    assert (curriculum.stage("joint_480").bucket("v480_16x9").width, curriculum.stage("joint_480").bucket(
        "v480_16x9").height) == (832, 480)
    assert (curriculum.stage("joint_720").bucket("v720_16x9").width, curriculum.stage("joint_720").bucket(
        "v720_16x9").height) == (1280, 720)
    assert curriculum.stage("posttrain_480").splits == ("posttrain_image", "posttrain_simple", "posttrain_complex")
    for stage in curriculum.stages:
        assert math.isclose(sum(stage.mix.values()), 1.0)


def test_same_token_count_per_stage_and_media_type(curriculum: Curriculum) -> None:
    for stage in curriculum.stages:
        for media in ("image", "video"):
            buckets = stage.buckets_of(media)
            if not buckets:
                continue
            tokens = [b.tokens() for b in buckets]
            assert max(tokens) / min(tokens) < 1.06, (stage.name, media, tokens)
            for b in buckets:
                assert b.height % 16 == 0 and b.width % 16 == 0 and (b.frames - 1) % 4 == 0
                c, f, h, w = b.latent_shape()
                assert (c, f, h % 2, w % 2) == (16, 1 + (b.frames - 1) // 4, 0, 0)


def test_tiny_stage_divides_by_the_patch(curriculum: Curriculum) -> None:
    tiny = curriculum.stage("tiny")
    assert [(b.media_type, b.frames, b.height, b.width) for b in tiny.buckets] == [
        ("image", 1, 32, 32), ("video", 5, 32, 32)]
    assert tiny.bucket("v32_1x1").latent_shape() == (16, 2, 4, 4) and tiny.bucket("v32_1x1").tokens() == 8


def test_bucket_dims_keep_the_area_and_the_ratio() -> None:
    assert bucket_dims(256 * 256, 1, 1) == (256, 256)
    assert bucket_dims(256 * 256, 16, 9) == (192, 336)
    assert bucket_dims(256 * 256, 9, 16) == (336, 192)
    assert bucket_dims(1280 * 720, 16, 9, (1280, 720)) == (720, 1280)
    h, w = bucket_dims(480 * 480, 4, 3)
    assert abs(w / h - 4 / 3) < 0.05 and abs(h * w / 480 ** 2 - 1) < 0.05


def test_assignment_by_aspect_ratio(curriculum: Curriculum) -> None:
    joint = curriculum.stage("joint_256_192")
    assert assign_bucket(joint, "video", 1920, 1080, 200, 30.0).name == "v192_16x9"
    assert assign_bucket(joint, "video", 1080, 1920, 200, 30.0).name == "v192_9x16"
    assert assign_bucket(joint, "video", 640, 480, 200, 30.0).name == "v192_4x3"
    assert assign_bucket(joint, "video", 500, 490, 200, 30.0).name == "v192_1x1"
    assert assign_bucket(joint, "video", 2400, 1000, 200, 30.0).name == "v192_16x9"  # 2.4:1 -> the widest
    assert assign_bucket(joint, "image", 1000, 760, 1, 0.0).name == "i256_4x3"
    assert assign_bucket(curriculum.stage("image_256"), "video", 1920, 1080, 200, 30.0) is None  # no video buckets


def test_too_short_clips_get_no_bucket(curriculum: Curriculum) -> None:
    joint = curriculum.stage("joint_256_192")
    # 81 frames at 16 fps span 5 s: 151 frames at 30 fps (0..150) is exactly enough, 150 is not
    assert assign_bucket(joint, "video", 1920, 1080, 151, 30.0) is not None
    assert assign_bucket(joint, "video", 1920, 1080, 150, 30.0) is None
    assert assign_bucket(joint, "video", 1920, 1080, 81, 16.0) is not None
    assert assign_bucket(joint, "video", 1920, 1080, 80, 16.0) is None


def test_source_frames_sampled_at_the_bucket_fps(curriculum: Curriculum) -> None:
    v = curriculum.stage("tiny").bucket("v32_1x1")  # 5 frames at 8 fps
    assert source_frame_indices(v, 13, 24.0) == [0, 3, 6, 9, 12]
    assert source_frame_indices(v, 21, 24.0) == [4, 7, 10, 13, 16]  # centred in the clip
    assert source_frame_indices(v, 12, 24.0) is None
    assert source_frame_indices(v, 5, 8.0) == [0, 1, 2, 3, 4]
    assert source_frame_indices(curriculum.stage("tiny").bucket("i32_1x1"), 9, 24.0) == [4]


def test_unknown_stage_names_the_known_ones(curriculum: Curriculum) -> None:
    with pytest.raises(ConfigError, match="unknown curriculum stage 'stage9'.*image_256.*tiny"):
        curriculum.stage("stage9")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_bad_yaml_keys_are_named(tmp_path: Path) -> None:
    bad = _write(tmp_path, """
stages:
  - name: s
    mixx: {image: 1.0}
    image: {size: 32, aspect_ratios: ["1:1"], colour: red}
""")
    with pytest.raises(ConfigError) as e:
        Curriculum.load(bad)
    msg = str(e.value)
    assert "unknown key 'stages.0.mixx'" in msg and "unknown key 'stages.0.image.colour'" in msg


@pytest.mark.parametrize("body, needle", [
    (("mix: {image: 0.5, video: 0.2}\n    image: {size: 32, aspect_ratios: ['1:1']}\n"
     "    video: {size: 32, frames: 5, aspect_ratios: ['1:1']}"), "sum to 1"),
    (("mix: {image: 1.0}\n    image: {size: 32, aspect_ratios: ['1:1']}\n"
     "    video: {size: 32, frames: 6, aspect_ratios: ['1:1']}"), r"1 \+ 4k"),
    ("mix: {video: 1.0}\n    image: {size: 32, aspect_ratios: ['1:1']}", "no 'video' buckets"),
    ("mix: {image: 1.0}\n    image: {size: 32, aspect_ratios: ['wide']}", "W:H"),
])
def test_bad_values_are_config_errors(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Curriculum.load(_write(tmp_path, f"stages:\n  - name: s\n    {body}\n"))


def test_a_bucket_name_with_two_shapes_is_refused(tmp_path: Path) -> None:
    text = """
stages:
  - name: a
    mix: {video: 1.0}
    video: {size: 32, frames: 5, aspect_ratios: ["1:1"]}
  - name: b
    mix: {video: 1.0}
    video: {size: 32, frames: 9, aspect_ratios: ["1:1"]}
"""
    with pytest.raises(ConfigError, match="v32_1x1"):
        Curriculum.load(_write(tmp_path, text))
