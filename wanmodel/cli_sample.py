"""Sample videos or images with a Wan DiT: ``wan sample`` (or ``python -m wanmodel.cli_sample``).

    wan sample --prompt "a corgi surfing a wave" --out out/samples \\
        --dit ckpt/Wan2.1-T2V-1.3B --vae ckpt/Wan2.1_VAE.pth --text-encoder ckpt/umt5 --device cuda --dtype bfloat16
    wan sample --task t2i --prompt "a red fox in snow" --size 512x512 --out out/images ...
    wan sample --task i2v --image first.png [--last-image last.png] --prompt "..." --image-encoder clip.pth ...
    wan sample --task i2v --video-prefix start.mp4 --prompt "..." ...        # video continuation
    wan sample --random-tiny --prompt "a cat" --out out/tiny                  # tiny random weights: plumbing only
    wan sample --cache magcache-fast ...                                      # diffusion cache preset (see below)
    wan sample --fp8 fp8 --attention sage --offload blocks ...                # FP8, 8-bit attention, low memory

Weights load from local paths only (``--dit``: our, official or diffusers folder; ``--vae``: any ``load_vae``
input; ``--text-encoder``: a UMT5EncoderModel folder or the official .pth with ``--tokenizer``). ``--random-tiny``
builds tiny random models instead (``--tiny-dir``); their samples are noise. Unset sampling options take the
released defaults of the task (T2V: 480x832, 81 frames, 50 UniPC steps, guidance 5, shift 5; I2V: 40 steps,
shift 3), except that ``--random-tiny`` defaults to 64x64, 9 frames, 8 steps. Each sample is written as
``<out>/<index>-seed<seed>.mp4`` (``.png`` for t2i) and listed with its prompt and settings in ``<out>/samples.json``.
``--cache PRESET`` samples with a diffusion cache (``wanmodel.accel.cache``: ``off``, ``attention``, ``cfg``,
``magcache-fast``, ``magcache-slow``, ``teacache``, ``combined``); what it computed (DiT calls, passes, speed-ups)
goes into ``samples.json`` under ``cache``. ``--fp8``, ``--attention`` and ``--offload`` are applied by
``wanmodel.accel.options`` (recorded under ``speed``); multi-GPU sampling is ``python -m
wanmodel.parallel.sample_launch`` under torchrun (the same arguments plus the parallel sizes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "sample"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_DEFAULTS = {"height": 64, "width": 64, "num_frames": 9, "num_steps": 8}
WEIGHTS_REQUIRED = ("model weights are required: pass --dit, --vae and --text-encoder (local paths; --image-encoder "
                    "too for i2v), or --random-tiny for tiny random models (their samples are noise)")


def _parse_size(size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    try:
        height, width = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH (e.g. 480x832), got {size!r}") from None
    return height, width


def _read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    out = list(prompts)
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise ValueError("no prompts: pass --prompt TEXT (repeatable) or --prompts-file FILE")
    return out


def _read_image(path: str):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _pipeline(args: argparse.Namespace, speed: Any):
    from wanmodel.pipelines.i2v import WanI2VPipeline
    from wanmodel.pipelines.t2v import WanT2VPipeline
    from wanmodel.text.rewrite import RewriteSettings, build_rewriter

    task = "i2v" if args.task == "i2v" else "t2v"
    if args.random_tiny:
        from wanmodel.pipelines.tiny import build_tiny_models

        tiny = build_tiny_models(args.tiny_dir, task, seed=args.tiny_seed)
        dit, vae, text, clip, tokenizer = tiny.dit, tiny.vae, tiny.text_encoder, tiny.clip, None
    else:
        if not (args.dit and args.vae and args.text_encoder) or (task == "i2v" and not args.image_encoder):
            raise ValueError(WEIGHTS_REQUIRED)
        dit, vae, text, clip, tokenizer = args.dit, args.vae, args.text_encoder, args.image_encoder, args.tokenizer
    rewriter = None
    if args.rewrite_model:
        rewriter = build_rewriter(RewriteSettings(backend=args.rewrite_backend, model_path=args.rewrite_model,
                                                  language=args.rewrite_language, device=args.device))
    # an offload mode loads every model on the CPU and moves what each stage needs (wanmodel.accel.options)
    load_device = "cpu" if speed.loads_on_cpu else args.device
    text_device = "cpu" if speed.offload == "blocks" else (args.text_device or load_device)
    common: dict[str, Any] = {"tokenizer": tokenizer, "device": load_device, "dtype": DTYPES[args.dtype],
                              "text_device": text_device, "rewriter": rewriter}
    if task == "i2v":
        pipeline = WanI2VPipeline.from_pretrained(dit, vae, text, image_encoder=clip, **common)
    else:
        pipeline = WanT2VPipeline.from_pretrained(dit, vae, text, **common)
    pipeline.device = torch.device(args.device)
    return pipeline


def sample(args: argparse.Namespace, prepare: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the sampling an argparse namespace describes; returns the summary written to samples.json.

    ``prepare(pipeline)``, when given, runs on the built pipeline before sampling (the multi-rank launcher,
    ``wanmodel.parallel.sample_launch``, places the DiT in its mesh there)."""
    prompts = _read_prompts(args.prompt, args.prompts_file)
    step_cache = None
    if args.cache:  # a bad preset name fails before any model loads
        from wanmodel.accel.cache import build_cache

        step_cache = build_cache(args.cache)
    height, width = _parse_size(args.size)
    settings = {"height": height, "width": width, "num_frames": args.frames, "num_steps": args.steps,
                "guidance_scale": args.guidance, "shift": args.shift, "solver": args.solver,
                "spacing": args.spacing, "fps": args.fps}
    if args.task == "t2i":
        if settings["num_frames"] not in (None, 1):
            raise ValueError("--task t2i makes single frames; drop --frames")
        settings["num_frames"] = 1
    if args.random_tiny:
        settings = {**settings, **{k: v for k, v in TINY_DEFAULTS.items() if settings[k] is None}}
    seeds: Any = args.seed[0] if len(args.seed) == 1 else args.seed
    from wanmodel.accel.options import SpeedOptions, apply_speed_options

    speed = SpeedOptions(fp8=args.fp8, attention=args.attention, offload=args.offload)  # checked before loading
    pipeline = _pipeline(args, speed)
    speed_done = apply_speed_options(pipeline, speed)
    if prepare is not None:
        prepare(pipeline)
    kwargs: dict[str, Any] = {"seed": seeds, "negative_prompt": args.negative_prompt, **settings}
    if args.task == "i2v":
        from wanmodel.pipelines.i2v import FrameCondition

        if args.video_prefix:
            from wanmodel.cli_vae import read_video

            frames, _ = read_video(args.video_prefix, max_frames=args.prefix_frames)
            kwargs["images"] = [FrameCondition.continuation(frames)] * len(prompts)
        elif args.image:
            if len(args.image) not in (1, len(prompts)):
                raise ValueError(f"got {len(args.image)} --image for {len(prompts)} prompts (give 1 or one each)")
            images = [_read_image(p) for p in args.image] * (len(prompts) if len(args.image) == 1 else 1)
            kwargs["images"] = images
            if args.last_image:
                lasts = [_read_image(p) for p in args.last_image]
                kwargs["last_images"] = lasts * (len(prompts) if len(lasts) == 1 else 1)
        else:
            raise ValueError("--task i2v needs --image PATH (first frame) or --video-prefix VIDEO")
        if args.max_area:
            kwargs["max_area"] = args.max_area
    if step_cache is not None:
        kwargs["cache"] = step_cache
    start = time.perf_counter()
    result = pipeline.generate(prompts, progress=_progress if args.verbose else None, **kwargs)
    wall = time.perf_counter() - start
    from wanmodel.pipelines.common import write_image, write_mp4

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (prompt, used, seed, video) in enumerate(zip(result.prompts, result.used_prompts, result.seeds,
                                                           result.videos)):
        if args.task == "t2i":
            path = write_image(out / f"{index:03d}-seed{seed}.png", video[0])
        else:
            path = write_mp4(out / f"{index:03d}-seed{seed}.mp4", video, result.settings.fps)
        entries.append({"path": str(path), "prompt": prompt, "used_prompt": used, "seed": seed,
                        "frames": int(video.shape[0]), "height": int(video.shape[1]), "width": int(video.shape[2])})
        print(f"wrote {path}  (seed {seed}) {prompt[:60]!r}")
    summary = {"task": args.task, "settings": result.settings.to_dict(), "random_tiny": bool(args.random_tiny),
               "wall_s": wall, "speed": speed_done, "samples": entries}
    if step_cache is not None:
        summary["cache"] = {"preset": args.cache, **step_cache.stats.to_dict()}
        print(f"cache {args.cache}: {step_cache.stats.computed_passes}/{step_cache.stats.exact_passes} DiT passes "
              f"({step_cache.stats.speedup:.2f}x fewer), {step_cache.stats.dit_calls} DiT calls")
    (out / "samples.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if args.random_tiny:
        print("warning: --random-tiny: random weights, the samples are noise (plumbing check only)")
    print(f"{len(entries)} sample(s) in {wall:.1f} s; settings {result.settings.to_dict()}")
    return summary


def _progress(step: int, total: int) -> None:
    print(f"  step {step}/{total}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wan sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="t2v", choices=["t2v", "t2i", "i2v"])
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", help="text file, one prompt per line ('#' comments)")
    parser.add_argument("--out", required=True, help="output folder")
    weights = parser.add_argument_group("weights (local paths)")
    weights.add_argument("--dit")
    weights.add_argument("--vae")
    weights.add_argument("--text-encoder")
    weights.add_argument("--tokenizer", help="umT5 tokenizer folder (default: the text encoder folder)")
    weights.add_argument("--image-encoder", help="i2v: CLIP checkpoint (open_clip or official .pth)")
    weights.add_argument("--random-tiny", action="store_true", help="tiny random models (samples are noise)")
    weights.add_argument("--tiny-dir", default="out/tiny_models", help="where --random-tiny builds its models")
    weights.add_argument("--tiny-seed", type=int, default=0)
    cond = parser.add_argument_group("i2v conditions")
    cond.add_argument("--image", action="append", help="first-frame image (one, or one per prompt)")
    cond.add_argument("--last-image", action="append", help="last-frame image (first-last-frame to video)")
    cond.add_argument("--video-prefix", help="video whose frames start the output (continuation)")
    cond.add_argument("--prefix-frames", type=int, default=5, help="frames of --video-prefix to keep (1 + 4k)")
    cond.add_argument("--max-area", type=int, help="size from the first image's aspect ratio at this many pixels")
    opts = parser.add_argument_group("sampling (default: the task's released settings)")
    opts.add_argument("--size", help="HEIGHTxWIDTH, multiples of 16")
    opts.add_argument("--frames", type=int, help="1 + 4k")
    opts.add_argument("--steps", type=int)
    opts.add_argument("--guidance", type=float)
    opts.add_argument("--shift", type=float)
    opts.add_argument("--solver", choices=["unipc", "euler"])
    opts.add_argument("--spacing", choices=["official", "diffusers"])
    opts.add_argument("--fps", type=int)
    opts.add_argument("--seed", type=int, nargs="+", default=[0], help="one seed for all prompts, or one each")
    opts.add_argument("--negative-prompt", help="default: the released (Chinese) negative prompt; '' for none")
    opts.add_argument("--cache", metavar="PRESET", help="diffusion cache preset: off, attention, cfg, "
                      "magcache-fast, magcache-slow, teacache, combined")
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="cpu")
    run.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    run.add_argument("--text-device", help="where umT5 runs (default --device; 'cpu' saves GPU memory)")
    run.add_argument("--fp8", default="off", choices=["off", "fp8", "fp8-sim"],
                     help="FP8 GEMMs in the DiT's blocks (Hopper/Ada; the plain linear elsewhere)")
    run.add_argument("--attention", choices=["auto", "sdpa", "flash", "sage"],
                     help="attention kernel (sage: 8-bit QK^T, needs the sageattention package)")
    run.add_argument("--offload", default="none", choices=["none", "model", "blocks"],
                     help="model: each model on the device only for its stage; blocks: the DiT's blocks stream "
                          "through the device with prefetch, umT5 on the CPU (the 1.3B at 480p in < 8 GB)")
    run.add_argument("--verbose", action="store_true", help="print each denoising step")
    rewrite = parser.add_argument_group("prompt rewriting (off unless --rewrite-model)")
    rewrite.add_argument("--rewrite-model", help="local instruction-tuned LLM folder")
    rewrite.add_argument("--rewrite-backend", default="transformers", choices=["transformers", "vllm"])
    rewrite.add_argument("--rewrite-language", default="en", choices=["en", "zh"])
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point (``python -m wanmodel.cli_sample`` / ``wan sample``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.random_tiny and (args.dit or args.vae or args.text_encoder):
        parser.error("--random-tiny and --dit/--vae/--text-encoder are exclusive")
    try:
        return sample(args)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
