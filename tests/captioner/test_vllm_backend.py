"""The vLLM backend against the transformers reference on the same tiny random captioner.

The engine runs where the main stack reaches it on a workstation: the ``.venv-vllm`` worker process (``make
test`` builds that environment). These tests skip only when no vLLM environment exists *and* ``WAN_SKIP_VLLM=1``
says so; without the variable a missing environment is a failure.

The tiny model's LLM and projector weights are re-drawn with a larger spread (std 0.1) so that greedy captions
are long, varied and depend on the pixels: equal captions then mean equal computation, not two copies of one
degenerate token.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.vllm_env import SKIP_ENV_VAR, skip_allowed, vllm_env_available

MAX_NEW = 24


def require_vllm() -> None:
    if vllm_env_available():
        return
    if skip_allowed():
        pytest.skip(f"no vLLM environment and {SKIP_ENV_VAR}=1")
    pytest.fail(f"no vLLM environment: run `make vllm-env` (or set {SKIP_ENV_VAR}=1 to skip these tests)")


def save_varied_tiny_captioner(out: Path, seed: int = 0, **overrides) -> Path:
    """The tiny captioner with its LLM and projector matrices drawn from N(0, 0.1) (see module docs)."""
    from captioner.tiny import build_tiny_captioner

    model, tokenizer = build_tiny_captioner(seed, **overrides)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (model.language_model, model.multi_modal_projector):
            for p in module.parameters():
                if p.ndim == 2:
                    p.normal_(0.0, 0.1, generator=gen)
    return model.save_pretrained(out, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def varied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_varied_tiny_captioner(tmp_path_factory.mktemp("varied_captioner") / "model")


@pytest.fixture(scope="module")
def vllm_backend(varied_dir: Path):
    require_vllm()
    from captioner.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(varied_dir, where="worker")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf_backend(varied_dir: Path):
    from captioner.backends.hf import HFBackend

    return HFBackend(varied_dir, batch_size=4)


def media_set():
    """Images of several aspect ratios and sizes, videos of several lengths and timings."""
    from captioner.processor import ImageInput, VideoInput

    rng = np.random.default_rng(7)

    def img(h: int, w: int) -> np.ndarray:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    return [
        ImageInput(img(60, 90)),  # 3:2 -> a grid of several tiles + the global view
        ImageInput(img(100, 40)),  # portrait
        ImageInput(img(48, 48)),  # one tile
        ImageInput(img(6, 300)),  # 50:1, padded to 7:1 -> 1 x 7 tiles
        ImageInput(img(20, 30)[..., ::-1].copy(), channels="bgr"),
        VideoInput(img(40, 50)[None].repeat(30, 0) + rng.integers(0, 40, (30, 40, 50, 3), dtype=np.uint8),
                   fps=10.0),  # 3 s at 10 fps -> 9 frames at 3 fps
        VideoInput(rng.integers(0, 256, (7, 32, 64, 3), dtype=np.uint8), fps=3.0),  # every frame kept
        VideoInput(rng.integers(0, 256, (12, 36, 36, 3), dtype=np.uint8),
                   timestamps=[0.0, 0.1, 0.15, 0.5, 0.9, 1.0, 1.2, 1.7, 2.2, 2.3, 2.9, 3.4]),  # uneven times
        VideoInput(rng.integers(0, 256, (1, 24, 40, 3), dtype=np.uint8), fps=25.0),  # a single frame
    ]


def reference_ids(hf_backend, items, instruction: str, max_new: int) -> list[list[int]]:
    processor = hf_backend.processor
    samples = [processor(item, instruction) for item in items]
    return [hf_backend.model.generate(processor.collate([s]), max_new_tokens=max_new)[0] for s in samples]


def test_vllm_greedy_captions_equal_transformers(vllm_backend, hf_backend):
    items = media_set()
    instruction = "Describe this in detail."
    got = vllm_backend.caption(items, instruction, max_new_tokens=MAX_NEW)
    want = hf_backend.caption(items, instruction, max_new_tokens=MAX_NEW)
    assert all(r.ok for r in got), [r.error for r in got]
    for g, w in zip(got, want):
        assert (g.text, g.num_visual_tokens, g.num_generated_tokens) == (w.text, w.num_visual_tokens,
                                                                          w.num_generated_tokens)
    # Token-exact, not only text-equal (decoding drops special tokens).
    assert vllm_backend.caption_ids(items, instruction, MAX_NEW) == reference_ids(hf_backend, items, instruction,
                                                                                  MAX_NEW)
    # The comparison can fail: the captions depend on the media (not one degenerate reply for every input).
    assert len({r.text for r in got}) >= len(items) - 1
    # Visual token accounting went through vLLM's processor: 1x7 tiles + global for the 50:1 image,
    # 3 slow + 6 fast frames for the 9-frame video, one slow frame for the single-frame video.
    assert got[3].num_visual_tokens == 8 * 144
    assert got[5].num_visual_tokens == 3 * 144 + 6
    assert got[8].num_visual_tokens == 144


def test_vllm_equals_transformers_when_pooling_shrinks_a_16x16_patch_grid(tmp_path, hf_backend):
    """A ViT on 64x64 views with 4x4 patches gives 16x16 patch grids, so the adaptive 12x12 pooling really
    averages (overlapping windows) inside vLLM's model, not a 12x12 identity as with the default tiny ViT."""
    require_vllm()
    from captioner.backends.hf import HFBackend
    from captioner.backends.vllm_backend import VLLMBackend
    from captioner.model import vision_features

    pooled_dir = save_varied_tiny_captioner(tmp_path / "pooled", vision={"image_size": 64})
    reference = HFBackend(pooled_dir, batch_size=4)
    vision = reference.model.config.vision_config
    assert (vision.image_size // vision.patch_size, reference.model.config.pool_grid) == (16, 12)
    model = reference.model
    with torch.no_grad():
        patches = vision_features(model.vision_tower, torch.zeros(1, 3, 64, 64), model.config.vision_feature_layer)
    assert patches.shape[1] == 256  # 16 x 16 patches per view, pooled to 144 tokens
    items = [media_set()[i] for i in (0, 3, 5, 7)]  # tiles, 1x7 padded tiles, 9-frame video, uneven times
    with VLLMBackend(pooled_dir, where="worker") as backend:
        got = backend.caption(items, "Describe.", MAX_NEW)
        ids = backend.caption_ids(items, "Describe.", MAX_NEW)
    want = reference.caption(items, "Describe.", MAX_NEW)
    assert all(r.ok for r in got), [r.error for r in got]
    assert [(r.text, r.num_visual_tokens) for r in got] == [(r.text, r.num_visual_tokens) for r in want]
    assert ids == reference_ids(reference, items, "Describe.", MAX_NEW)
    assert got[1].num_visual_tokens == 8 * 144 and got[2].num_visual_tokens == 3 * 144 + 6
    # the pooled model is a different computation from the default tiny one: its captions differ
    assert [r.text for r in got] != [r.text for r in hf_backend.caption(items, "Describe.", MAX_NEW)]


def test_default_templates_and_per_item_instructions(vllm_backend, hf_backend):
    items = media_set()[:2] + media_set()[5:6]
    instructions = ["Name the colours.", "Count the objects.", "What moves?"]
    assert [r.text for r in vllm_backend.caption(items, instructions, MAX_NEW)] == \
        [r.text for r in hf_backend.caption(items, instructions, MAX_NEW)]
    assert [r.text for r in vllm_backend.caption(items, None, MAX_NEW)] == \
        [r.text for r in hf_backend.caption(items, None, MAX_NEW)]


def test_bad_inputs_are_recorded_and_the_batch_goes_on(vllm_backend, hf_backend):
    from captioner.processor import ImageInput, VideoInput

    good = media_set()
    items = [good[0], ImageInput(b"not an image"), VideoInput(np.zeros((3, 8, 8, 3), np.uint8)),  # no fps
             good[1], ImageInput(np.zeros((0, 5, 3), np.uint8)), good[5]]
    instructions = ["Describe.", "Describe.", "Describe.", "   ", "Describe.", "Describe."]
    got = vllm_backend.caption(items, instructions, MAX_NEW)
    want = hf_backend.caption(items, instructions, MAX_NEW)
    assert [r.ok for r in got] == [True, False, False, False, False, True]
    assert "could not decode image" in got[1].error
    assert "fps or timestamps" in got[2].error
    assert "instruction is empty" in got[3].error
    assert "empty side" in got[4].error
    assert [r.error for r in got] == [r.error for r in want]
    assert [r.text for r in got] == [r.text for r in want]


def test_engine_isolates_an_item_its_processor_rejects(vllm_backend):
    """An item that reaches vLLM but that our processor inside it refuses (a two-channel array) fails
    alone; the batch is retried item by item and the good item's caption is unchanged."""
    from captioner.backends.vllm_backend import (
        GenerationParams,
        PreparedRequest,
        prepare_request,
    )

    processor = vllm_backend.processor
    good = prepare_request(processor, media_set()[0], "Describe.")
    bad = PreparedRequest(processor.prompt_ids("Describe.", ["image"]), "image", np.zeros((16, 16, 2), np.uint8))
    params = GenerationParams(MAX_NEW)
    alone = vllm_backend.engine.generate([good], params)[0]
    outs = vllm_backend.engine.generate([good, bad, good], params)
    assert outs[0].error is None and outs[0].token_ids == alone.token_ids
    assert outs[2].token_ids == alone.token_ids
    assert outs[1].error is not None and "(H, W, 3)" in outs[1].error


def test_generate_text_equals_transformers(vllm_backend, hf_backend):
    prompts = ["Is the ball red? Answer yes or no.", "Say something about the sky."]
    assert vllm_backend.generate_text(prompts, 12) == hf_backend.generate_text(prompts, 12)


@pytest.mark.slow
def test_plugin_entry_point_reaches_vllm_worker_processes(varied_dir, hf_backend):
    """vLLM's default multi-process engine (engine core and model worker in processes of their own) loads our
    architecture only through the ``vllm.general_plugins`` entry point."""
    require_vllm()
    from captioner.backends.vllm_backend import EngineOptions, VLLMBackend

    items = [media_set()[0], media_set()[5]]
    with VLLMBackend(varied_dir, where="worker", options=EngineOptions(inline=False)) as backend:
        got = backend.caption(items, "Describe.", MAX_NEW)
    assert [r.text for r in got] == [r.text for r in hf_backend.caption(items, "Describe.", MAX_NEW)]
    import re

    # Each process vLLM started registered the architecture itself (the front end, the engine core, the worker).
    pids = set(re.findall(r"registered SlowFastCaptioner in process (\d+)", backend.engine.log_tail(100_000)))
    assert len(pids) >= 2, pids


def test_request_files_round_trip(tmp_path):
    from captioner.backends.vllm_backend import (
        PreparedRequest,
        read_requests,
        write_requests,
    )

    rng = np.random.default_rng(0)
    requests = [PreparedRequest([1, 2, 3], "image", rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
                PreparedRequest([4], "video", rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)),
                PreparedRequest([5, 6])]
    write_requests(tmp_path / "batch.arrow", requests)
    back = read_requests(tmp_path / "batch.arrow")
    assert [(r.prompt_ids, r.media_type) for r in back] == [(r.prompt_ids, r.media_type) for r in requests]
    assert np.array_equal(back[0].pixels, requests[0].pixels) and np.array_equal(back[1].pixels, requests[1].pixels)
    assert back[2].pixels is None


def test_missing_serving_environment_is_a_clear_error(monkeypatch, tmp_path):
    from captioner.vllm_env import PYTHON_ENV_VAR, vllm_python

    monkeypatch.setenv(PYTHON_ENV_VAR, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(FileNotFoundError, match="nowhere/python"):
        vllm_python()


def test_worker_that_cannot_start_reports_why(tmp_path, varied_dir):
    """A model folder the worker cannot load: the client raises with the worker's reason, no hang."""
    require_vllm()
    import shutil

    from captioner.backends.vllm_backend import BridgeClient, WorkerError

    broken = tmp_path / "broken"
    shutil.copytree(varied_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WorkerError, match="did not start"):
        BridgeClient(broken, startup_timeout_s=300)
