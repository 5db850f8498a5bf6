"""OCR text coverage and recognition on generated frames whose text areas and strings are known."""
from __future__ import annotations

import numpy as np
import pytest

from curation.models.ocr import (
    PaddleOcrBackend,
    RapidOcrBackend,
    make_ocr_backend,
    parse_paddle_result,
    polygon_coverage,
)
from tests.curation.model_data import plain_frame, text_frame


@pytest.fixture(scope="module")
def ocr() -> RapidOcrBackend:
    return RapidOcrBackend(threads=1)


def _no_space(s: str) -> str:
    return "".join(s.split())


def test_coverage_within_20_percent_and_text_recognised_on_generated_frames(ocr):
    """Ten keyframe-size (384x216) scenes with 1-2 subtitle lines: the OCR coverage is within 20 % (relative)
    of the true text area on at least 90 % of frames, and every rendered line is read back. PP-OCRv4's
    recogniser often drops the spaces between English words, so lines are compared without whitespace."""
    within, lines_total, lines_read = 0, 0, 0
    for seed in range(10):
        frame, lines, truth = text_frame(100 + seed)
        result = ocr(frame)
        within += abs(result.coverage / truth - 1) <= 0.2
        read = {_no_space(t) for t in result.texts}
        lines_total += len(lines)
        lines_read += sum(_no_space(line) in read for line in lines)
    assert within >= 9, f"coverage within 20 % on {within}/10 frames"
    assert lines_read == lines_total, f"{lines_read}/{lines_total} rendered lines recognised"


def test_frames_without_text_have_no_coverage(ocr):
    """Generated scenes are full of rectangles and rings (which PP-OCR reads as 口 and O): single-glyph reads
    are dropped, so text-free frames score zero (at most one small spurious box)."""
    coverages = [ocr(plain_frame(seed)).coverage for seed in range(6)]
    assert sum(c == 0.0 for c in coverages) >= 5 and max(coverages) < 0.03, coverages


def test_detection_only_mode_gives_coverage_without_texts(ocr):
    frame, _, truth = text_frame(7, n_lines=2)
    det = RapidOcrBackend(recognize=False, threads=1)(frame)
    assert det.texts == [] and abs(det.coverage / truth - 1) <= 0.25


def test_polygon_union_counts_overlaps_once():
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)  # 10x10 (fillPoly includes the far edge: 11x11)
    b = a + 5
    single = polygon_coverage([a], 100, 100)
    both = polygon_coverage([a, b], 100, 100)
    assert single == pytest.approx(121 / 10_000)
    assert both == pytest.approx((121 * 2 - 36) / 10_000)  # 6x6 overlap counted once
    assert polygon_coverage([], 100, 100) == 0.0


def test_paddle_results_of_both_api_generations_parse():
    box = [[1, 2], [30, 2], [30, 12], [1, 12]]
    v3 = [{"rec_polys": [np.array(box)], "rec_texts": ["hello"], "rec_scores": [0.9]}]
    v2 = [[[box, ("hello", 0.9)]]]
    for raw, is_v3 in ((v3, True), (v2, False)):
        polys, texts, scores = parse_paddle_result(raw, is_v3)
        assert texts == ["hello"] and scores == [0.9] and polys[0].shape == (4, 2)
    assert parse_paddle_result([None], False) == ([], [], [])


def test_paddleocr_backend_without_the_package_is_a_clear_error():
    pytest.importorskip("rapidocr_onnxruntime")
    try:
        import paddleocr  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="paddleocr and paddlepaddle"):
            PaddleOcrBackend("/nope/det", "/nope/rec")
    else:  # pragma: no cover - where paddleocr is installed, the model folders must exist
        from curation.models import WeightsNotFoundError

        with pytest.raises(WeightsNotFoundError, match="/nope/det"):
            PaddleOcrBackend("/nope/det", "/nope/rec")
    with pytest.raises(ValueError, match="unknown OCR backend"):
        make_ocr_backend("tesseract")


def test_missing_rapidocr_model_file_names_the_path(tmp_path):
    from curation.models import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "det.onnx")):
        RapidOcrBackend(det_model=str(tmp_path / "det.onnx"))
