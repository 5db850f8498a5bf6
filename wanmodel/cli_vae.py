"""Wan-VAE round trip: encode a video to latents, decode it back, write an mp4 and print the PSNR.

    python -m wanmodel.cli_vae INPUT.mp4 OUTPUT.mp4 --weights Wan2.1_VAE.pth [--size 480x832] [--max-frames 81]
                               [--dtype float32|bfloat16|float16] [--device cpu|cuda] [--save-latents z.safetensors]
    python -m wanmodel.cli_vae INPUT.mp4 OUTPUT.mp4 --random-weights --preset tiny    # plumbing check only

``--weights`` takes whatever ``load_vae`` reads: a folder written by ``save_vae``, the released ``Wan2.1_VAE.pth``
(or any official/diffusers state-dict file), or a diffusers ``AutoencoderKLWan`` folder. Without it the command
refuses to run unless ``--random-weights`` is given (a random model reconstructs noise; useful for testing only).

The video is trimmed to 1 + 4k frames (the VAE's frame rule) and its sides brought to multiples of 8, both with a
message; frames are scaled to [-1, 1], encoded (posterior mean), decoded (clamped to [-1, 1]) and written as H.264
at the source frame rate. PSNR is over all frames and pixels in [0, 255], the decoded video rounded to uint8.
This module reads and writes video with PyAV, so it lives outside the torch-only model core.
"""
from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
from safetensors.torch import save_file

from .models.vae import VAE_PRESETS, WanVAE
from .models.vae_adapters import load_vae

__all__ = ["main", "psnr", "read_video", "roundtrip", "write_video"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHTS_REQUIRED = ("VAE weights are required: pass --weights PATH (a save_vae folder, the official "
                    "Wan2.1_VAE.pth, or a diffusers AutoencoderKLWan folder), or --random-weights to use a randomly "
                    "initialised model (reconstructs noise; for testing the plumbing only)")


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, Fraction]:
    """All frames (or the first ``max_frames``) of ``path`` as uint8 RGB (T, H, W, 3), and the stream's fps."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(24)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    return np.stack(frames), Fraction(fps)


def write_video(path: str | Path, frames: np.ndarray, fps: Fraction, crf: int = 18) -> None:
    """uint8 RGB frames (T, H, W, 3) -> H.264 mp4 (yuv420p) at ``fps``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of uint8 arrays over every element (inf when identical): the quality guard's."""
    from wanmodel.accel.quality import psnr as quality_psnr

    return quality_psnr(test, reference, data_range=255.0)


def _parse_size(size: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"480x832"`` / ``(480, 832)`` / ``512`` (square) -> (height, width)."""
    if size is None or isinstance(size, tuple):
        return size
    if isinstance(size, int):
        return size, size
    try:
        height, width = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be HEIGHTxWIDTH (e.g. 480x832), got {size!r}") from None
    return height, width


def _prepare(frames: np.ndarray, size: tuple[int, int] | None, factor: int, temporal: int,
             messages: list[str]) -> np.ndarray:
    """Trim to 1 + 4k frames and resize to multiples of ``factor`` (to ``size`` if given), noting each change."""
    count = len(frames)
    kept = 1 + temporal * ((count - 1) // temporal)
    if kept != count:
        messages.append(f"trimmed {count} frames to {kept} (the Wan-VAE needs 1 + {temporal}k frames)")
        frames = frames[:kept]
    height, width = frames.shape[1:3]
    target = size or (height, width)
    snapped = (max(factor, target[0] // factor * factor), max(factor, target[1] // factor * factor))
    if snapped != tuple(target):
        messages.append(f"{target[0]}x{target[1]} is not a multiple of {factor}: using {snapped[0]}x{snapped[1]}")
    if snapped != (height, width):
        messages.append(f"resized {height}x{width} to {snapped[0]}x{snapped[1]}")
        shrinking = snapped[0] * snapped[1] < height * width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        frames = np.stack([cv2.resize(image, (snapped[1], snapped[0]), interpolation=interpolation)
                           for image in frames])
    return frames


def _model(weights: str | Path | None, preset: str, allow_random: bool, dtype: torch.dtype,
           device: str) -> WanVAE:
    if weights is None:
        if not allow_random:
            raise ValueError(WEIGHTS_REQUIRED)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = WanVAE(preset)
        return model.to(device=device, dtype=dtype).eval()
    if not Path(weights).exists():
        raise FileNotFoundError(f"VAE weights not found: {weights}")
    return load_vae(weights, dtype=dtype, device=device)


def roundtrip(input_video: str | Path, output_mp4: str | Path, weights: str | Path | None = None,
              preset: str = "wan2.1", size: str | int | tuple[int, int] | None = None,
              max_frames: int | None = None, dtype: str = "float32", device: str = "cpu", *,
              allow_random: bool = False, save_latents: str | Path | None = None,
              verbose: bool = True) -> dict[str, Any]:
    """Encode ``input_video`` with the Wan-VAE, decode it, write ``output_mp4``; returns PSNR, shapes and times.

    ``weights``: a path ``load_vae`` reads; ``None`` needs ``allow_random=True`` (a random ``preset`` model).
    ``size``: target ``"HxW"`` (snapped down to multiples of 8). ``save_latents``: also write a safetensors file
    with ``latents`` (float32, raw VAE mean), ``fps`` and ``num_frames``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype]
    model = _model(weights, preset, allow_random, torch_dtype, device)
    config = model.config
    messages: list[str] = []
    source, fps = read_video(input_video, max_frames)
    frames = _prepare(source, _parse_size(size), config.spatial_factor, config.temporal_factor, messages)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, T, H, W) uint8
    video = (video.to(torch.float32) / 127.5 - 1.0).to(device=device, dtype=torch_dtype)

    with torch.no_grad():
        start = time.perf_counter()
        latents = model.encode(video).mean
        _sync(device)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = model.decode(latents, clamp=True)
        _sync(device)
        decode_s = time.perf_counter() - start
    reconstruction = ((decoded[0].float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    reconstruction = reconstruction.permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    write_video(output_mp4, reconstruction, fps)

    result: dict[str, Any] = {
        "input": str(input_video), "output": str(output_mp4), "weights": str(weights) if weights else None,
        "random_weights": weights is None, "source_frames": len(source), "num_frames": len(frames),
        "height": frames.shape[1], "width": frames.shape[2], "fps": float(fps),
        "latent_shape": list(latents.shape), "psnr_db": psnr(frames, reconstruction),
        "encode_s": encode_s, "decode_s": decode_s, "dtype": dtype, "device": device, "messages": messages,
    }
    if save_latents is not None:
        Path(save_latents).parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.float().cpu().contiguous(),
                   "fps": torch.tensor([float(fps)], dtype=torch.float64),
                   "num_frames": torch.tensor([len(frames)], dtype=torch.int64)},
                  str(save_latents),
                  metadata={"fps": str(fps), "num_frames": str(len(frames)), "source": str(input_video)})
        result["latents_path"] = str(save_latents)
    if verbose:
        _report(result)
    return result


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _report(result: dict[str, Any]) -> None:
    for message in result["messages"]:
        print(message)
    if result["random_weights"]:
        print("warning: random weights (--random-weights): the reconstruction is not meaningful")
    print(f"{result['num_frames']} frames {result['height']}x{result['width']} @ {result['fps']:.3f} fps -> "
          f"latents {tuple(result['latent_shape'])}")
    print(f"encode {result['encode_s']:.2f} s, decode {result['decode_s']:.2f} s ({result['dtype']}, "
          f"{result['device']})")
    print(f"PSNR {result['psnr_db']:.2f} dB")
    print(f"wrote {result['output']}" + (f" and {result['latents_path']}" if "latents_path" in result else ""))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (``python -m wanmodel.cli_vae`` / ``wan vae roundtrip``)."""
    parser = argparse.ArgumentParser(prog="wan vae roundtrip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="input video (anything PyAV decodes)")
    parser.add_argument("output", help="output mp4 (H.264)")
    parser.add_argument("--weights", help="VAE checkpoint: save_vae folder, Wan2.1_VAE.pth, or diffusers folder")
    parser.add_argument("--random-weights", action="store_true",
                        help="no checkpoint: a randomly initialised --preset model (testing only)")
    parser.add_argument("--preset", default="wan2.1", choices=sorted(VAE_PRESETS),
                        help="model shape with --random-weights (a checkpoint carries its own)")
    parser.add_argument("--size", help="resize to HEIGHTxWIDTH (snapped down to multiples of 8)")
    parser.add_argument("--max-frames", type=int, help="read at most this many frames (then trimmed to 1 + 4k)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save-latents", metavar="PATH", help="also write latents + fps + frame count (safetensors)")
    args = parser.parse_args(argv)
    if args.weights and args.random_weights:
        parser.error("--weights and --random-weights are exclusive")
    try:
        return roundtrip(args.input, args.output, args.weights, preset=args.preset, size=args.size,
                         max_frames=args.max_frames, dtype=args.dtype, device=args.device,
                         allow_random=args.random_weights, save_latents=args.save_latents)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
