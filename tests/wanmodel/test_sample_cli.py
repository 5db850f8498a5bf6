"""``wan sample``: end to end with tiny random weights; the files hold what the pipeline generated."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from jobs.cli import main as wan
from wanmodel.cli_vae import read_video
from wanmodel.pipelines import WanI2VPipeline, WanT2VPipeline
from wanmodel.pipelines.tiny import build_tiny_models

TINY = ["--size", "32x48", "--frames", "5", "--steps", "2"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("tiny_models")


def test_wan_sample_t2v_writes_what_the_pipeline_generates(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t2v"
    assert wan(["sample", "--random-tiny", "--tiny-dir", str(tiny_dir), "--prompt", "a cat", "--prompt", "a dog",
                "--out", str(out), "--seed", "3", "4", *TINY]) == 0
    summary = json.loads((out / "samples.json").read_text())
    assert [s["seed"] for s in summary["samples"]] == [3, 4] and summary["random_tiny"] is True
    assert summary["settings"]["num_steps"] == 2 and summary["settings"]["solver"] == "unipc"
    paths = build_tiny_models(tiny_dir, "t2v")
    expected = WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder).generate(
        ["a cat", "a dog"], seed=[3, 4], height=32, width=48, num_frames=5, num_steps=2).videos
    decoded = [read_video(entry["path"]) for entry in summary["samples"]]
    assert all(frames.shape == (5, 32, 48, 3) and float(fps) == 16.0 for frames, fps in decoded)
    # H.264 4:2:0 keeps luma at full resolution: compare luma, against the other sample as a control
    same = [_luma_error(frames, video) for (frames, _), video in zip(decoded, expected)]
    swapped = [_luma_error(frames, video) for (frames, _), video in zip(decoded, expected[::-1])]
    assert max(same) < 6 and 5 * max(same) < min(swapped)  # measured: 3.4-3.6 vs 35


def _luma_error(a: np.ndarray, b: np.ndarray) -> float:
    weights = np.array([0.299, 0.587, 0.114])
    return float(np.abs(a.astype(float) @ weights - b.astype(float) @ weights).mean())


def test_wan_sample_t2i_png_is_exact(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t2i"
    wan(["sample", "--task", "t2i", "--random-tiny", "--tiny-dir", str(tiny_dir), "--prompt", "a red fox",
         "--out", str(out), "--size", "32x32", "--steps", "2", "--seed", "9"])
    image = cv2.cvtColor(cv2.imread(str(out / "000-seed9.png")), cv2.COLOR_BGR2RGB)
    paths = build_tiny_models(tiny_dir, "t2v")
    expected = WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder).generate_images(
        ["a red fox"], seed=9, height=32, width=32, num_steps=2)[0]
    assert np.array_equal(image, expected)


def test_wan_sample_i2v_first_frame_and_continuation(tiny_dir: Path, tmp_path: Path) -> None:
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "first.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    wan(["sample", "--task", "i2v", "--random-tiny", "--tiny-dir", str(tiny_dir), "--prompt", "waves",
         "--image", str(tmp_path / "first.png"), "--out", str(tmp_path / "i2v"), *TINY])
    frames, _ = read_video(tmp_path / "i2v" / "000-seed0.mp4")
    assert frames.shape == (5, 32, 48, 3)
    wan(["sample", "--task", "i2v", "--random-tiny", "--tiny-dir", str(tiny_dir), "--prompt", "waves",
         "--video-prefix", str(tmp_path / "i2v" / "000-seed0.mp4"), "--prefix-frames", "1",
         "--out", str(tmp_path / "cont"), *TINY])
    assert read_video(tmp_path / "cont" / "000-seed0.mp4")[0].shape == (5, 32, 48, 3)
    paths = build_tiny_models(tiny_dir, "i2v")
    assert isinstance(WanI2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder,
                                                     image_encoder=paths.clip), WanI2VPipeline)


@pytest.mark.parametrize("args,message", [
    (["--prompt", "a cat"], "--random-tiny"),
    (["--random-tiny", "--prompt", "a cat", "--frames", "6"], "1 \\+ 4k"),
    (["--random-tiny", "--prompt", "a cat", "--size", "40x48"], "multiple of 16"),
    (["--random-tiny", "--prompt", "a cat", "--size", "big"], "HEIGHTxWIDTH"),
    (["--random-tiny"], "no prompts"),
    (["--random-tiny", "--prompt", "   "], "prompt 0 is empty"),
    (["--random-tiny", "--prompt", "a cat", "--guidance", "0.5"], "guidance_scale"),
    (["--random-tiny", "--task", "i2v", "--prompt", "a cat"], "--image"),
    (["--random-tiny", "--task", "i2v", "--prompt", "a cat", "--image", "/nonexistent.png"], "cannot read image"),
    (["--dit", "/nonexistent/dit", "--vae", "/x", "--text-encoder", "/y", "--prompt", "a"], "/nonexistent/dit"),
])
def test_wan_sample_bad_inputs(tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                               message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        wan(["sample", "--tiny-dir", str(tiny_dir), "--out", str(tmp_path / "bad"), *TINY[2:4], *args])
    assert exit_info.value.code == 2
    assert message.replace("\\", "") in capsys.readouterr().err
