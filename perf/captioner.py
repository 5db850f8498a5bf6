"""Captioning throughput: the vLLM backend next to the transformers backend (``generate``), same model, same inputs,
one run.

    python -m perf.captioner [--images 12] [--videos 6] [--max-new-tokens 32] [--hf-batch 8]
                             [--device cpu|cuda] [--config tiny|real] [--out perf/results/captioner.json]

``--config tiny`` is the tiny random captioner (``captioner.tiny``; LLM and projector matrices drawn with std 0.1
so greedy captions are long and varied, as in the parity test); ``--config real`` is a real-size random model
(SigLIP-so400m/14 at 384 px + Qwen2-7B shapes, bf16), for a GPU. Inputs: ``--images`` random images of mixed
aspect ratios (1 to 7 tiles + the global view) and ``--videos`` random videos of 6 to 24 s at 10 fps (18 to 72
sampled frames at 3 fps).

Both backends first caption a warm-up set (the same shapes, other pixels: kernels, allocator, vLLM's compiled
graphs for these batch sizes, and no cache hits in the timed pass), then the measured items in one call:
``HFBackend`` pads ``--hf-batch`` items per ``generate`` call, vLLM schedules them all at once (continuous
batching). Reported per backend: wall seconds, captions/s, visual tokens/s (prompt tokens holding visual
embeddings, the vision work), generated tokens/s, and the engine's load time; plus how many captions are identical
(greedy decoding on the same weights: all of them in float32). vLLM runs where the backend puts it: in-process
when ``vllm`` imports, else the ``.venv-vllm`` worker (its time includes the pipe and the Arrow file). On a CPU,
vLLM's CPU backend keeps one core for itself and computes on the rest; the transformers side gets
``--hf-threads`` torch threads (default: the same count), so both use the same cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_VISION = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
               "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 384, "patch_size": 14}  # so400m/14
REAL_TEXT = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
             "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
             "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "tie_word_embeddings": False}  # Qwen2-7B


def build_model(config: str, out: Path, device: str) -> tuple[Path, Any, Any]:
    """Save the benchmark model to ``out``; returns (folder, in-memory model or None, processor or None)."""
    from captioner.processor import CaptionProcessor, resolve_token_ids
    from captioner.tiny import build_tiny_captioner, build_tiny_tokenizer

    if config == "tiny":
        model, tokenizer = build_tiny_captioner(seed=0)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in (model.language_model, model.multi_modal_projector):
                for p in module.parameters():
                    if p.ndim == 2:
                        p.normal_(0.0, 0.1, generator=gen)
        model.save_pretrained(out, tokenizer=tokenizer)
        return out, None, None
    from captioner.config import SlowFastCaptionerConfig
    from captioner.model import SlowFastCaptioner

    tokenizer = build_tiny_tokenizer()
    cfg = resolve_token_ids(SlowFastCaptionerConfig(vision_config=dict(REAL_VISION), text_config=dict(REAL_TEXT)),
                            tokenizer)
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        model = SlowFastCaptioner(cfg).eval()  # transformers' own init (std 0.02), on the device, in bf16
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(out, tokenizer=tokenizer)
    return out, model, CaptionProcessor(cfg, tokenizer)


def make_inputs(images: int, videos: int, seed: int = 0) -> list[Any]:
    """Random images of mixed aspect ratios and random videos of 6-24 s at 10 fps (the same every run)."""
    from captioner.processor import ImageInput, VideoInput

    rng = np.random.default_rng(seed)
    shapes = [(720, 1280), (1080, 1080), (480, 1920), (1280, 720), (360, 640), (900, 1600)]
    items: list[Any] = [ImageInput(rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8))
                        for i in range(images)]
    for i in range(videos):
        frames = 60 + (i * 60) % 181  # 6 .. 24 s at 10 fps
        base = rng.integers(0, 256, (1, 180, 320, 3), dtype=np.uint8)
        drift = rng.integers(0, 32, (frames, 180, 320, 3), dtype=np.uint8)
        items.append(VideoInput(base + drift, fps=10.0))
    return items


def measure(backend: Any, warmup: list[Any], items: list[Any], max_new_tokens: int) -> dict[str, Any]:
    backend.caption(warmup, max_new_tokens=max_new_tokens)  # other pixels: no cache hits in the timed pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = backend.caption(items, max_new_tokens=max_new_tokens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} captions failed: {failed[0]}")
    visual = sum(r.num_visual_tokens for r in results)
    generated = sum(r.num_generated_tokens for r in results)
    return {"wall_s": wall, "captions": len(results), "captions_per_s": len(results) / wall,
            "visual_tokens": visual, "visual_tokens_per_s": visual / wall, "generated_tokens": generated,
            "generated_tokens_per_s": generated / wall, "texts": [r.text for r in results]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m perf.captioner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hf-batch", type=int, default=8)
    parser.add_argument("--hf-threads", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--config", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--vllm-where", choices=["auto", "inprocess", "worker"], default="auto")
    parser.add_argument("--model-dir", default=None, help="where to save the random model (default: a temp dir)")
    parser.add_argument("--out", default=str(REPO_ROOT / "perf/results/captioner.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    import tempfile

    from captioner.backends.hf import HFBackend
    from captioner.backends.vllm_backend import EngineOptions, VLLMBackend

    cores = os.cpu_count() or 1
    hf_threads = args.hf_threads or max(1, cores - 1)
    torch.set_num_threads(hf_threads)
    workdir = tempfile.TemporaryDirectory(prefix="perf-captioner-")
    model_dir = Path(args.model_dir or Path(workdir.name) / f"{args.config}_captioner")
    t0 = time.perf_counter()
    folder, model, processor = build_model(args.config, model_dir, args.device)
    build_s = time.perf_counter() - t0
    items = make_inputs(args.images, args.videos, seed=0)
    warmup = make_inputs(args.images, args.videos, seed=1)  # same shapes, other pixels
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16

    t0 = time.perf_counter()
    hf = HFBackend(folder, device=args.device, dtype=dtype, batch_size=args.hf_batch, model=model,
                   processor=processor)
    hf_load = time.perf_counter() - t0
    results: dict[str, Any] = {"hf": {**measure(hf, warmup, items, args.max_new_tokens), "load_s": hf_load}}
    del hf, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the vLLM engine takes most of the GPU's memory for its KV cache

    options = EngineOptions(dtype="float32" if args.device == "cpu" else "bfloat16")
    with VLLMBackend(folder, where=args.vllm_where, options=options) as vllm:
        results["vllm"] = {**measure(vllm, warmup, items, args.max_new_tokens), "load_s": vllm.load_s,
                           "where": vllm.where}
    same = sum(a == b for a, b in zip(results["hf"].pop("texts"), results["vllm"].pop("texts")))
    report = {
        "config": args.config, "device": args.device, "images": args.images, "videos": args.videos,
        "max_new_tokens": args.max_new_tokens, "hf_batch": args.hf_batch, "hf_threads": hf_threads,
        "cpu_count": cores, "torch": torch.__version__, "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None, "model_build_s": build_s,
        "identical_captions": same, "results": results,
        "speedup_captions_per_s": results["vllm"]["captions_per_s"] / results["hf"]["captions_per_s"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"captioner throughput ({args.config} model, {args.device}, {args.images} images + {args.videos} videos, "
          f"{args.max_new_tokens} new tokens max)")
    print(f"{'backend':<14}{'load s':>8}{'wall s':>9}{'captions/s':>12}{'visual tok/s':>14}{'gen tok/s':>11}")
    for name, r in results.items():
        label = "transformers" if name == "hf" else f"vllm ({r['where']})"
        print(f"{label:<14}{r['load_s']:>8.1f}{r['wall_s']:>9.2f}{r['captions_per_s']:>12.2f}"
              f"{r['visual_tokens_per_s']:>14.0f}{r['generated_tokens_per_s']:>11.1f}")
    print(f"vLLM / transformers captions/s: {report['speedup_captions_per_s']:.2f}x; "
          f"identical captions: {same}/{len(items)}; written to {out}")
    return report


if __name__ == "__main__":
    main()
