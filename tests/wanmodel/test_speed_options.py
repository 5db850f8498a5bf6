"""``wanmodel.accel.options``: FP8, the attention switch and the offload modes applied to a built pipeline, and
``wan sample``'s ``--fp8 / --attention / --offload``. On this CPU machine the FP8 path is the plain linear and the
offload modes move between the CPU and itself, so every mode must give the resident pipeline's latents exactly;
each model's stage must still run inside its own offload context, in the order the pipeline uses them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.cli import main as wan
from wanmodel.accel.options import SpeedOptions, apply_speed_options
from wanmodel.pipelines import WanI2VPipeline, WanT2VPipeline
from wanmodel.pipelines.tiny import build_tiny_models

SMALL = {"height": 32, "width": 48, "num_frames": 5, "num_steps": 2, "guidance_scale": 5.0}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


def _t2v(tiny_dir: Path) -> WanT2VPipeline:
    paths = build_tiny_models(tiny_dir, "t2v")
    return WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder)


def _i2v(tiny_dir: Path) -> WanI2VPipeline:
    paths = build_tiny_models(tiny_dir, "i2v")
    return WanI2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder, image_encoder=paths.clip)


def _stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which model each offload context was opened for (by its class), in order."""
    from wanmodel.accel import offload

    seen: list[str] = []
    real = offload.on_device

    def recording(model, device):
        seen.append(type(model).__name__)
        return real(model, device)

    monkeypatch.setattr(offload, "on_device", recording)
    return seen


@pytest.mark.parametrize("options", [SpeedOptions(offload="model"), SpeedOptions(offload="blocks"),
                                     SpeedOptions(fp8="fp8"), SpeedOptions(attention="sdpa"),
                                     SpeedOptions(fp8="fp8", offload="blocks", attention="sdpa")],
                         ids=["model-offload", "block-offload", "fp8-fallback", "sdpa", "combined"])
def test_modes_give_the_resident_pipelines_latents(tiny_dir: Path, options: SpeedOptions,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    exact = _t2v(tiny_dir).generate(["a cat"], seed=3, **SMALL).latents
    pipeline = _t2v(tiny_dir)
    stages = _stages(monkeypatch)
    done = apply_speed_options(pipeline, options)
    fast = pipeline.generate(["a cat"], seed=3, **SMALL).latents
    torch.testing.assert_close(fast, exact, atol=0, rtol=0)
    if options.offload == "model":
        assert stages == ["UMT5TextEncoder", "WanDiT", "WanVAE"]
    if options.offload == "blocks":
        assert stages == [] and pipeline.block_offload.events  # the blocks streamed through their hooks
    if options.fp8 != "off":
        assert done["fp8_layers"] == 20  # every linear of the tiny DiT's 2 blocks (test_fp8 counts them by name)


def test_fp8_simulation_changes_the_sample_a_little(tiny_dir: Path) -> None:
    exact = _t2v(tiny_dir).generate(["a cat"], seed=3, **SMALL).latents
    pipeline = _t2v(tiny_dir)
    apply_speed_options(pipeline, SpeedOptions(fp8="fp8-sim"))
    fast = pipeline.generate(["a cat"], seed=3, **SMALL).latents
    relative = float((fast - exact).norm() / exact.norm())
    assert 0 < relative < 0.05  # e4m3 weights and activations: measured ~0.01


def test_i2v_model_offload_runs_each_stage_on_its_own(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    exact = _i2v(tiny_dir).generate(["waves"], [image], seed=1, **SMALL).latents
    pipeline = _i2v(tiny_dir)
    stages = _stages(monkeypatch)
    apply_speed_options(pipeline, SpeedOptions(offload="model"))
    torch.testing.assert_close(pipeline.generate(["waves"], [image], seed=1, **SMALL).latents, exact, atol=0,
                               rtol=0)
    assert stages == ["WanVAE", "ClipImageEncoder", "UMT5TextEncoder", "WanDiT", "WanVAE"]


@pytest.mark.parametrize("change,message", [({"fp8": "int4"}, "fp8 must be one of"),
                                            ({"offload": "disk"}, "offload must be one of"),
                                            ({"attention": "xformers"}, "attention must be one of")])
def test_bad_options_are_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpeedOptions(**change)


def test_wan_sample_speed_flags(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["sample", "--random-tiny", "--tiny-dir", str(tiny_dir), "--prompt", "a cat", "--size", "32x48",
              "--frames", "5", "--steps", "2"]
    assert wan([*common, "--out", str(tmp_path / "fast"), "--fp8", "fp8", "--offload", "blocks"]) == 0
    summary = json.loads((tmp_path / "fast" / "samples.json").read_text())
    assert summary["speed"] == {"fp8": "fp8", "attention": None, "offload": "blocks", "fp8_layers": 20}
    if "sage" not in __import__("wanmodel.models.attention", fromlist=["x"]).available_backends():
        with pytest.raises(SystemExit):
            wan([*common, "--out", str(tmp_path / "sage"), "--attention", "sage"])
        assert "sageattention" in capsys.readouterr().err
