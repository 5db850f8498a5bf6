"""The visual-text branch: Chinese and English rendered on white (read back by OCR), resumable shards, fonts, and
OCR text of real keyframes attached as the captioner's prior."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from curation.lake import Lake
from curation.models.ocr import RapidOcrBackend
from curation.visual_text import (
    FontNotFoundError,
    RenderSettings,
    attach_ocr_text,
    detect_language,
    find_font,
    format_text_prior,
    gb2312_level1,
    ocr_text_prior,
    render_image_text,
    render_text_image,
)
from tests.curation.model_data import jpeg, plain_frame, text_frame, write_clips

SETTINGS = RenderSettings(width=480, height=200, min_font_px=28, max_font_px=40, max_lines=2)


@pytest.fixture(scope="module")
def ocr() -> RapidOcrBackend:
    return RapidOcrBackend(threads=1)


def _bgr(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_gb2312_level1_is_the_3755_common_hanzi():
    chars = gb2312_level1()
    assert len(chars) == len(set(chars)) == 3755
    assert chars[0] == "啊" and chars[-1] == "座" and all("\u4e00" <= c <= "\u9fff" for c in chars)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_rendered_text_is_read_back_by_ocr(language, ocr):
    """Text rendered black on white is recognised exactly (Chinese) or up to the spaces PP-OCRv4 tends to drop
    between English words; the stored line boxes bound the ink and nothing else is drawn."""
    for index in range(2):
        row = render_text_image(language, seed=3, index=index, settings=SETTINGS)
        image = _bgr(row["image"])
        assert row["text"] == "\n".join(row["lines"]) and detect_language(row["text"]) == language
        ink = image.min(axis=2) < 128
        inside = np.zeros_like(ink)
        for x0, y0, x1, y1 in row["line_boxes"]:
            inside[y0:y1, x0:x1] = True
            assert ink[y0:y1, x0:x1].any()
        assert not (ink & ~inside).any()  # every dark pixel lies in a line box
        assert set(np.unique(image[~inside])) == {255}  # pure white background
        read = ocr(image).texts
        norm = (lambda s: s) if language == "zh" else (lambda s: "".join(s.split()))
        assert sorted(norm(t) for t in read) == sorted(norm(line) for line in row["lines"]), (read, row["lines"])


def test_rendering_is_deterministic_sharded_and_resumable(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    first = render_image_text(lake, "zh", 5, seed=1, settings=SETTINGS, shard_size=2, backend="local")
    assert first.written == {"image_text": 5}
    again = render_image_text(lake, "zh", 8, seed=1, settings=SETTINGS, shard_size=3, backend="local")
    assert again.count_in == 1 and again.written == {"image_text": 3}  # only indices 5-7 were pending
    rows = {r["image_id"]: r for r in lake.read("image_text").to_pylist()}
    assert sorted(rows) == [f"zh-1-{i:09d}" for i in range(8)]
    fresh = render_text_image("zh", 1, 6, SETTINGS)
    assert fresh["image"] == rows["zh-1-000000006"]["image"] and fresh["lines"] == rows["zh-1-000000006"]["lines"]
    with Image.open(io.BytesIO(fresh["image"])) as im:
        assert im.size == (480, 200) and im.format == "PNG"


def test_explicit_lines_and_english(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    render_image_text(lake, "en", 0, seed=2, settings=SETTINGS, texts=[["Hello world"], ["Two", "lines"]],
                      backend="local")
    rows = sorted(lake.read("image_text").to_pylist(), key=lambda r: r["image_id"])
    assert [r["lines"] for r in rows] == [["Hello world"], ["Two", "lines"]]
    assert all(r["language"] == "en" and r["source"] == "rendered" for r in rows)


def test_a_font_without_the_script_is_a_clear_error(tmp_path):
    latin = find_font("en").path
    if find_font("zh").path == latin:  # pragma: no cover - a single font covering both
        pytest.skip("the Latin font here also covers Chinese")
    with pytest.raises(FontNotFoundError, match="no glyphs for 'zh'"):
        find_font("zh", latin)
    with pytest.raises(FontNotFoundError, match="font file not found"):
        find_font("zh", str(tmp_path / "none.ttf"))
    with pytest.raises(ValueError, match="unknown language"):
        find_font("xx")
    with pytest.raises(FontNotFoundError):
        render_image_text(Lake(str(tmp_path / "lake")), "zh", 1, settings=RenderSettings(font_path=latin),
                          backend="local")


def test_ocr_text_of_real_keyframes_becomes_image_text_and_captioner_prior(tmp_path):
    from curation.config import parse_config
    from curation.stages.model_runner import run_model_stage
    from curation.stages.model_stages import build_spec

    lake = Lake(str(tmp_path / "lake"))
    frame, lines, _ = text_frame(77, n_lines=2)
    write_clips(lake, {"txt:000000-000120": [jpeg(plain_frame(1)), jpeg(frame)],
                       "none:000000-000120": [jpeg(plain_frame(2))]})
    with pytest.raises(RuntimeError, match="run stage 'ocr' first"):
        attach_ocr_text(lake)
    run_model_stage(lake, build_spec("ocr", parse_config({"lake": lake.root, "stages": ["ocr"]})), backend="local")
    assert attach_ocr_text(lake) == 1 and attach_ocr_text(lake) == 0  # once per clip
    (row,) = lake.read("image_text").to_pylist()
    assert row["source"] == "ocr" and row["clip_id"] == "txt:000000-000120" and row["language"] == "en"
    assert row["image"] == jpeg(frame)  # the keyframe with the most text, not the first one
    (ocr_row,) = lake.read("stages/ocr", filter="clip_id = 'txt:000000-000120'").to_pylist()
    assert row["lines"] == ocr_row["texts"] and len(row["lines"]) == len(lines) == 2
    prior = ocr_text_prior(lake)
    assert list(prior) == ["txt:000000-000120"] and prior["txt:000000-000120"] == row["lines"]
    assert format_text_prior(row["lines"]).startswith("The image contains the text \"")
    assert format_text_prior([]) == ""
