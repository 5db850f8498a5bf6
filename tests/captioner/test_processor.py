"""Processor: token accounting (tiling, 3 fps sampling, 129-frame cap, slow-fast), placeholder layout, bad inputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from captioner.processor import (
    IGNORE_INDEX,
    CaptionInputError,
    ImageInput,
    VideoInput,
    decode_image,
    expand_placeholders,
    image_token_count,
    sample_frame_indices,
    sample_frame_times,
    select_tile_grid,
    slow_frame_mask,
    video_placeholder_length,
    video_token_count,
)
from captioner.templates import PROMPT_VERSION, TEMPLATES, instruction_for


def _count(ids: list[int], token: int) -> int:
    return sum(1 for t in ids if t == token)


@pytest.mark.parametrize(("width", "height", "grid"), [
    (448, 448, (1, 1)),  # square, not big enough for 2x2 (needs > half of 896x896 pixels)
    (1792, 1792, (2, 2)),  # square and large: the tie goes to the larger grid
    (1000, 500, (1, 2)), (500, 1000, (2, 1)), (1600, 900, (1, 2)), (1200, 400, (1, 3)),
    (4000, 1000, (1, 4)), (7000, 1000, (1, 7)), (1000, 7000, (7, 1)), (1500, 1000, (2, 3)),
    (20000, 1000, (1, 7)),  # wider than any grid: the widest one
])
def test_tile_grid_follows_aspect_ratio(width: int, height: int, grid: tuple[int, int]) -> None:
    assert select_tile_grid(width, height, tile_size=448, max_tiles=7) == grid
    assert image_token_count(grid) == (grid[0] * grid[1] + 1) * 144


@pytest.mark.parametrize(("width", "height"), [(48, 48), (160, 90), (90, 160), (300, 60), (200, 200), (50, 340)])
def test_image_tokens_match_formula(tiny_parts, width: int, height: int) -> None:
    _, _, processor = tiny_parts
    cfg = processor.config
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    sample = processor(ImageInput(image), "Describe.")
    (layout,) = sample.layouts
    rows, cols = select_tile_grid(width, height, cfg.tile_size, cfg.max_tiles)
    assert (layout.rows, layout.cols) == (rows, cols) and rows * cols <= 7
    assert _count(sample.input_ids, cfg.image_token_id) == rows * cols * 144 + 144 == sample.num_visual_tokens
    assert sample.pixel_values.shape == (rows * cols + 1, 3, cfg.tile_size, cfg.tile_size)
    assert _count(sample.input_ids, cfg.vision_start_token_id) == _count(sample.input_ids, cfg.vision_end_token_id) == 1


def test_tiles_are_the_image_cut_row_major_then_global_view(tiny_parts) -> None:
    _, _, processor = tiny_parts
    tile = processor.config.tile_size
    colours = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)  # left half red, right half green
    image = cv2.resize(colours, (2 * tile, tile), interpolation=cv2.INTER_NEAREST)
    sample = processor(ImageInput(image), "Describe.")
    assert (sample.layouts[0].rows, sample.layouts[0].cols) == (1, 2)
    px = sample.pixel_values  # normalised with mean = std = 0.5: red = (1, -1, -1)
    assert px[0, 0].min() > 0.99 and px[0, 1].max() < -0.99  # tile 0 is red
    assert px[1, 1].min() > 0.99 and px[1, 0].max() < -0.99  # tile 1 is green
    assert px[2, 0, :, : tile // 2 - 1].min() > 0.99 and px[2, 1, :, tile // 2 + 1:].min() > 0.99  # global view


def test_bgr_and_encoded_inputs_give_rgb_pixels(tiny_parts) -> None:
    _, _, processor = tiny_parts
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[..., 0] = 200  # red
    from_rgb = processor(ImageInput(rgb), "Describe.").pixel_values
    from_bgr = processor(ImageInput(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr"), "Describe.").pixel_values
    png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()
    from_png = processor(ImageInput(png), "Describe.").pixel_values
    assert (from_rgb == from_bgr).all() and (from_rgb == from_png).all()
    assert from_rgb[:, 0].mean() > 0.5 and from_rgb[:, 2].mean() < -0.9


@pytest.mark.parametrize(("num_frames", "fps", "expected"), [
    (300, 30.0, list(range(0, 300, 10))),  # 10 s at 30 fps: every 10th frame, 30 frames
    (100, 25.0, [int(k * 25 / 3) for k in range(12)]),  # 4 s at 25 fps: 12 frames at k/3 s
    (8, 2.0, list(range(8))),  # slower than 3 fps: every frame
    (1, 30.0, [0]),
])
def test_frames_sampled_at_3_fps(num_frames: int, fps: float, expected: list[int]) -> None:
    indices = sample_frame_indices(num_frames, fps)
    assert indices == expected
    times = np.array(indices) / fps
    if fps > 3 and len(indices) > 1:
        assert np.allclose(np.diff(times), 1 / 3, atol=1 / fps)


def test_frame_cap_129_spreads_over_the_clip() -> None:
    indices = sample_frame_indices(1800, 30.0)  # 60 s: 180 frames at 3 fps, capped
    assert len(indices) == 129
    assert indices[0] == 0 and indices[-1] == 1790  # the last 3 fps sample (59.67 s)
    assert all(b > a for a, b in zip(indices, indices[1:], strict=False))
    gaps = np.diff(indices)
    assert gaps.min() >= 10 and gaps.max() <= 20  # uniform thinning of the 10-frame grid
    assert len(sample_frame_indices(129 * 10, 30.0)) == 129 and len(sample_frame_indices(128 * 10, 30.0)) == 128


def test_keyframe_timestamps_are_sampled_by_time() -> None:
    # frames shown at irregular times: the one on screen at each 1/3 s grid point, once
    times = [0.0, 0.1, 0.3, 0.5, 0.7, 1.4]
    # grid 0, 1/3, 2/3, 1, 4/3 s shows frames 0 (0.0), 2 (0.3), 3 (0.5), 4 (0.7), 4 again; 1.4 s is past the grid
    assert sample_frame_times(times) == [0, 2, 3, 4]
    assert sample_frame_times([5.0, 5.2, 5.4]) == [0, 1]  # relative to the first: 1/3 s shows 5.2


@pytest.mark.parametrize(("seconds", "fps"), [(1.0, 30.0), (2.0, 24.0), (5.0, 30.0), (10.0, 3.0), (60.0, 30.0)])
def test_video_tokens_match_slow_fast_formula(tiny_parts, seconds: float, fps: float) -> None:
    _, _, processor = tiny_parts
    cfg = processor.config
    total = int(seconds * fps)
    frames = np.zeros((total, 16, 24, 3), np.uint8)
    sample = processor(VideoInput(frames, fps=fps), "Describe.")
    (layout,) = sample.layouts
    n = len(layout.frame_indices)
    assert n == min(129, int(np.ceil(total * 3 / fps - 1e-9)))  # grid times k/3 s before the end
    slow = sum(slow_frame_mask(n, 4))
    assert slow == (n + 3) // 4
    pads = _count(sample.input_ids, cfg.video_token_id)
    assert pads == slow * 144 + (n - slow) == video_token_count(n) == sample.num_visual_tokens
    assert _count(sample.input_ids, cfg.frame_token_id) == n
    assert pads + n == video_placeholder_length(n)
    assert sample.pixel_values.shape[0] == n


def test_video_placeholder_run_layout(tiny_parts) -> None:
    _, _, processor = tiny_parts
    cfg = processor.config
    sample = processor(VideoInput(np.zeros((5, 16, 16, 3), np.uint8), fps=3.0), "Describe.")
    F, V = cfg.frame_token_id, cfg.video_token_id
    expected = [F, *[V] * 144, F, V, F, V, F, V, F, *[V] * 144]  # frames 0 and 4 slow, 1-3 fast
    start = sample.input_ids.index(cfg.vision_start_token_id) + 1
    end = sample.input_ids.index(cfg.vision_end_token_id)
    assert sample.input_ids[start:end] == expected
    # the collapsed prompt expands to the processor's ids (what a vLLM prompt replacement must reproduce)
    collapsed = processor.prompt_ids("Describe.", ["video"])
    assert _count(collapsed, V) == 1
    assert expand_placeholders(collapsed, sample.layouts, cfg) == sample.input_ids


def test_labels_cover_only_the_caption(tiny_parts) -> None:
    _, tokenizer, processor = tiny_parts
    cfg = processor.config
    video = VideoInput(np.zeros((4, 16, 16, 3), np.uint8), fps=3.0)
    sample = processor(video, "Describe.", target="Two red circles move left.")
    caption_ids = tokenizer("Two red circles move left.", add_special_tokens=False)["input_ids"]
    labelled = [label for label in sample.labels if label != IGNORE_INDEX]
    assert labelled == [*caption_ids, cfg.im_end_token_id]
    assert sample.input_ids[-len(labelled):] == labelled
    left = processor.collate([sample, processor(video, "Describe this video please.")], padding_side="left")
    right = processor.collate([sample, processor(video, "Describe.")], padding_side="right")
    assert left.labels is None and left.attention_mask[:, -1].all()
    assert right.attention_mask[:, 0].all() and right.labels is None
    train = processor.collate([sample, sample], padding_side="right")
    assert (train.labels != IGNORE_INDEX).sum() == 2 * len(labelled)
    assert train.pixel_values.shape[0] == 2 * 4


def test_extreme_aspect_ratio_padded_or_rejected(tiny_parts) -> None:
    from captioner.processor import CaptionProcessor

    _, tokenizer, processor = tiny_parts
    tall = np.full((4000, 1, 3), 255, np.uint8)  # 1 x 4000
    sample = processor(ImageInput(tall), "Describe.")
    (layout,) = sample.layouts
    assert layout.padded and (layout.rows, layout.cols) == (7, 1)  # padded to 7:1, the tallest grid
    assert sample.num_visual_tokens == 8 * 144
    strict_cfg = processor.config.__class__.from_dict({**processor.config.to_dict(), "aspect_policy": "reject"})
    strict = CaptionProcessor(strict_cfg, tokenizer)
    with pytest.raises(CaptionInputError, match="aspect ratio"):
        strict(ImageInput(tall), "Describe.")
    assert strict(ImageInput(np.zeros((100, 600, 3), np.uint8)), "Describe.").layouts[0].cols == 6


@pytest.mark.parametrize(("media", "instruction", "message"), [
    (ImageInput(np.zeros((8, 8, 3), np.uint8)), "", "instruction is empty"),
    (ImageInput(np.zeros((8, 8, 3), np.uint8)), "   \n", "instruction is empty"),
    (ImageInput(np.zeros((8, 8, 3), np.uint8)), "look <|image_pad|> here", "reserved token"),
    (ImageInput(b"not a jpeg"), "Describe.", "could not decode"),
    (ImageInput(b""), "Describe.", "could not decode"),
    (ImageInput("/nonexistent/image.jpg"), "Describe.", "not found"),
    (ImageInput(np.zeros((0, 8, 3), np.uint8)), "Describe.", "empty side"),
    (ImageInput(np.zeros((8, 8), np.float32) + 2), "Describe.", None),  # grey float image: accepted
    (ImageInput(np.zeros((8, 8, 5), np.uint8)), "Describe.", "must be"),
    (ImageInput(np.full((8, 8, 3), 300, np.int32)), "Describe.", r"int32 image values must lie in 0\.\.255"),
    (ImageInput(np.full((8, 8, 3), -1, np.int16)), "Describe.", "must lie in 0..255"),
    (VideoInput(np.zeros((0, 8, 8, 3), np.uint8), fps=30), "Describe.", "no frames"),
    (VideoInput(np.zeros((4, 8, 8, 3), np.uint8), fps=0), "Describe.", "fps must be positive"),
    (VideoInput(np.zeros((4, 8, 8, 3), np.uint8)), "Describe.", "fps or timestamps"),
    (VideoInput(np.zeros((4, 8, 8), np.uint8), fps=3), "Describe.", "must be"),
    (VideoInput([b"x", b"y"], timestamps=[0.0]), "Describe.", "timestamps"),
    (VideoInput([b"x", b"y"], timestamps=[1.0, 0.0]), "Describe.", "non-decreasing"),
    (VideoInput([b"broken"], fps=3), "Describe.", "could not decode"),
])
def test_bad_inputs_are_clear_errors(tiny_parts, media, instruction: str, message: str | None) -> None:
    _, _, processor = tiny_parts
    if message is None:
        assert processor(media, instruction).num_visual_tokens == 288
        return
    with pytest.raises(CaptionInputError, match=message):
        processor(media, instruction)


def test_templates_and_prompt_version() -> None:
    assert instruction_for("image") == TEMPLATES["image"] and instruction_for("video") == TEMPLATES["video"]
    ocr = instruction_for("image", ["OPEN 24H", "OPEN 24H", " ", 'say "hi"'])
    assert '"OPEN 24H"' in ocr and ocr.count("OPEN 24H") == 1 and "\"say 'hi'\"" in ocr
    long = instruction_for("video", ["x" * 1000] * 50)
    assert len(long) < len(TEMPLATES["ocr_prior"]) + 450
    with pytest.raises(ValueError, match="media_type"):
        instruction_for("audio")
    import hashlib

    digest = hashlib.sha1("\n".join(f"{k}={v}" for k, v in sorted(TEMPLATES.items())).encode()).hexdigest()[:8]
    assert PROMPT_VERSION.endswith(digest)


def test_integer_frames_are_scaled_not_clipped() -> None:
    wide = np.array([[[0, 257, 65535], [32768, 1000, 65534]]], np.uint16)  # 16-bit: scaled by 255/65535
    assert decode_image(wide).tolist() == [[[0, 1, 255], [128, 4, 255]]]
    assert decode_image(np.array([[[0, 7, 255]]], np.int64)).tolist() == [[[0, 7, 255]]]  # in range: kept
    frames = (np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) * 600).astype(np.uint16)
    expected = np.round(frames.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert all(np.array_equal(decode_image(f), e) for f, e in zip(frames, expected, strict=True))
