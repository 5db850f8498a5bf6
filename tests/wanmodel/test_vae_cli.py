"""Wan-VAE round-trip CLI (wanmodel/cli_vae.py) and the measurement functions of perf/vae.py."""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
from safetensors import safe_open

from wanmodel.cli_vae import main, read_video, roundtrip, write_video


def moving_texture(frames: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth texture sliding right by 2 pixels a frame (uint8 RGB)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    video = []
    for index in range(frames):
        shifted = cols - 2 * index
        red = 127 + 100 * np.sin(shifted / 5.0) * np.cos(rows / 7.0)
        green = 127 + 100 * np.cos((shifted + rows) / 9.0)
        blue = 127 + 60 * np.sin(rows / 4.0)
        video.append(np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8))
    return np.stack(video)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, moving_texture(9), Fraction(8))
    return path


def probe(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return len(frames), frames[0].shape[:2], float(stream.average_rate)


def test_roundtrip_writes_mp4_and_finite_psnr(clip, tmp_path, capsys):
    out = tmp_path / "out" / "recon.mp4"
    result = main([str(clip), str(out), "--random-weights", "--preset", "tiny"])
    assert probe(out) == (9, (64, 64), 8.0)
    assert result["num_frames"] == 9 and result["latent_shape"] == [1, 16, 3, 8, 8]
    assert math.isfinite(result["psnr_db"]) and result["psnr_db"] > 0
    assert result["messages"] == []
    printed = capsys.readouterr().out
    assert f"PSNR {result['psnr_db']:.2f} dB" in printed and "random weights" in printed


def test_six_frames_are_trimmed_to_five(tmp_path, capsys):
    source = tmp_path / "six.mp4"
    write_video(source, moving_texture(6), Fraction(8))
    result = roundtrip(source, tmp_path / "five.mp4", preset="tiny", allow_random=True)
    assert result["source_frames"] == 6 and result["num_frames"] == 5
    assert probe(tmp_path / "five.mp4")[0] == 5
    assert "trimmed 6 frames to 5" in capsys.readouterr().out


def test_resize_snaps_to_multiples_of_eight(clip, tmp_path):
    result = roundtrip(clip, tmp_path / "small.mp4", preset="tiny", allow_random=True, size="36x50", verbose=False)
    assert (result["height"], result["width"]) == (32, 48)
    assert any("multiple of 8" in message for message in result["messages"])
    assert probe(tmp_path / "small.mp4")[:2] == (9, (32, 48))


def test_missing_weights_path_is_named(clip, tmp_path):
    missing = tmp_path / "nowhere" / "Wan2.1_VAE.pth"
    with pytest.raises(FileNotFoundError, match="nowhere/Wan2.1_VAE.pth"):
        roundtrip(clip, tmp_path / "out.mp4", weights=missing)


def test_no_weights_without_flag_is_a_clear_error(clip, tmp_path, capsys):
    with pytest.raises(ValueError, match="weights are required.*--random-weights"):
        roundtrip(clip, tmp_path / "out.mp4", preset="tiny")
    with pytest.raises(SystemExit) as exit_info:
        main([str(clip), str(tmp_path / "out.mp4"), "--preset", "tiny"])
    assert exit_info.value.code == 2
    assert "--random-weights" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_save_latents_and_weights_folder(clip, tmp_path):
    from wanmodel.models.vae import WanVAE
    from wanmodel.models.vae_adapters import save_vae

    save_vae(WanVAE("tiny"), tmp_path / "vae")
    latents_path = tmp_path / "z.safetensors"
    result = main([str(clip), str(tmp_path / "out.mp4"), "--weights", str(tmp_path / "vae"),
                   "--save-latents", str(latents_path)])
    assert result["random_weights"] is False
    with safe_open(str(latents_path), framework="pt") as stored:
        assert list(stored.get_tensor("latents").shape) == [1, 16, 3, 8, 8]
        assert stored.get_tensor("fps").item() == 8.0
        assert stored.get_tensor("num_frames").item() == 9
        assert stored.metadata()["num_frames"] == "9"


def test_read_video_max_frames(clip):
    frames, fps = read_video(clip, max_frames=4)
    assert frames.shape == (4, 64, 64, 3) and fps == 8


# ------------------------------------------------------------------------------------------- perf/vae.py
def test_perf_vae_measurements_smoke():
    pytest.importorskip("diffusers")
    from perf import vae as bench

    ours, ref = bench.build_models("tiny")
    video = bench.make_video(5, 32)
    agree = bench.agreement(ours, ref, video)
    assert agree["latent_std"] > 0.1  # non-trivial outputs
    assert agree["mean_max_abs_diff"] < 1e-4 and agree["decoded_max_abs_diff"] < 1e-4

    times = bench.time_ops({"ours": lambda: bench.operation("ours", "encode", ours)(video),
                            "diffusers": lambda: bench.operation("diffusers", "encode", ref)(video)}, repeat=2)
    assert all(len(runs) == 2 and all(t > 0 for t in runs) for runs in times.values())

    for impl in ("ours", "diffusers"):
        peaks = bench.peak_memory_in_process(impl, "decode", "tiny", 5, 32)
        assert peaks["tensor_mb"] > 0 and math.isfinite(peaks["rss_mb"])


def test_perf_vae_main_ours_only(tmp_path, capsys):
    from perf import vae as bench

    result = bench.main(["--preset", "tiny", "--short", "5", "--long", "9", "--size", "16", "--repeat", "1",
                         "--no-reference", "--no-memory", "--out", str(tmp_path / "vae.json")])
    assert result["reference"] is False and (tmp_path / "vae.json").is_file()
    assert "ours only" in capsys.readouterr().out
