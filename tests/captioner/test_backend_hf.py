"""The transformers backend: captions for good items, recorded errors for bad ones, text generation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from captioner.backends import CaptionResult, get_backend, instructions_for
from captioner.processor import ImageInput, VideoInput
from captioner.synthetic import make_clip
from captioner.templates import TEMPLATES


def test_caption_good_and_bad_items(tiny_captioner_dir: Path) -> None:
    backend = get_backend("hf", str(tiny_captioner_dir), batch_size=2)
    video = VideoInput(make_clip(1).frames, fps=3.0)
    image = ImageInput(make_clip(2, "image").frames[0])
    items = [video, ImageInput(b"\xff\xd8 broken jpeg"), image, VideoInput(np.zeros((0, 8, 8, 3), np.uint8), fps=3)]
    results = backend.caption(items, max_new_tokens=6)
    assert [r.ok for r in results] == [True, False, True, False]
    assert "could not decode" in results[1].error and "no frames" in results[3].error
    assert results[0].num_visual_tokens == 2 * 144 + 3 and results[2].num_visual_tokens == 2 * 144
    assert all(isinstance(r.text, str) and 0 < r.num_generated_tokens <= 6 for r in (results[0], results[2]))
    # the same items one at a time give the same greedy captions (padding does not leak into the result)
    alone = [backend.caption([item], max_new_tokens=6)[0].text for item in (video, image)]
    assert alone == [results[0].text, results[2].text]
    empty = backend.caption([video], instruction="  ")
    assert empty == [CaptionResult(None, error="instruction is empty")]
    assert len(backend.generate_text(["Is the sky blue?", "Say hi."], max_new_tokens=4)) == 2


def test_instruction_defaults_and_registry(tiny_captioner_dir: Path) -> None:
    items = [ImageInput(np.zeros((8, 8, 3), np.uint8)), VideoInput(np.zeros((2, 8, 8, 3), np.uint8), fps=3)]
    assert instructions_for(items, None) == [TEMPLATES["image"], TEMPLATES["video"]]
    assert instructions_for(items, "x") == ["x", "x"]
    with pytest.raises(ValueError, match="instructions"):
        instructions_for(items, ["only one"])
    with pytest.raises(ValueError, match="unknown captioner backend"):
        get_backend("onnx", str(tiny_captioner_dir))
    with pytest.raises(FileNotFoundError, match="config.json"):
        get_backend("hf", str(tiny_captioner_dir / "missing"))
