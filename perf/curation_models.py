"""Images per second of the model-backed curation stages: CLIP image embedding + the LAION aesthetic head, and
PP-OCR (rapidocr) text detection/recognition, on generated 320x180 keyframes.

    python -m perf.curation_models [--device cpu|cuda] [--models tiny,vit-l-14] [--batch-sizes 1,4,16,32]
                                   [--images 64] [--threads 2] [--ocr-images 16]

CLIP runs through ``curation.models.clip.ClipEncoder`` exactly as the ``embed`` stage does (PIL preprocessing,
then one forward per batch), followed by the aesthetic MLP on the embeddings. ``tiny`` is the random tiny open_clip
the tests use; ``vit-l-14`` is open_clip's ViT-L/14 architecture with random weights (the model the released
aesthetic head needs): same shapes and FLOPs as the real weights, so the same speed. ``preprocess_share`` is the
part of the time spent in preprocessing. rapidocr has no batch API (one frame per call), so OCR sweeps what it
does instead: detection only (``coverage``) and detection + direction + recognition (``coverage+text``), on frames
with and without rendered text. Writes ``perf/results/curation_models.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "curation_models.json"


def keyframes(n: int, text: bool = False, seed: int = 0) -> list[np.ndarray]:
    """``n`` generated 320x180 BGR frames; with ``text``, an English caption rendered on each."""
    from curation.synth.scenes import render_still

    frames = []
    for i in range(n):
        img = render_still(seed + i, 320, 180)
        if text:
            cv2.rectangle(img, (20, 130), (300, 165), (255, 255, 255), -1)
            cv2.putText(img, f"SAMPLE TEXT {i:03d}", (28, 157), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
        frames.append(img)
    return frames


def clip_encoder(name: str, device: str, workdir: Path) -> Any:
    """A ``ClipEncoder``: the tiny random test model, or ViT-L/14 with random weights."""
    import open_clip
    import torch

    from curation.models.clip import ClipEncoder, load_clip, save_tiny_clip

    if name == "tiny":
        return load_clip(str(save_tiny_clip(workdir / "tiny_clip")), device=device)
    if name == "vit-l-14":
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-L-14", pretrained=None, device=device).eval()
        cfg = model.visual.preprocess_cfg
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False, mean=cfg["mean"],
                                               std=cfg["std"])
        dim = int(model.text_projection.shape[1])
        return ClipEncoder(model, preprocess, open_clip.get_tokenizer("ViT-L-14"), device, "ViT-L-14:random", dim)
    raise ValueError(f"unknown model {name!r}; use tiny or vit-l-14")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_clip(name: str, device: str, batch_sizes: list[int], n_images: int, workdir: Path) -> list[dict]:
    """Images/s of embedding + aesthetic per batch size (one warm-up batch first, then about ``n_images``)."""
    from PIL import Image

    from curation.models.aesthetic import AestheticMLP, aesthetic_scores

    encoder = clip_encoder(name, device, workdir)
    head = AestheticMLP(encoder.embed_dim).eval()
    images = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in keyframes(max(batch_sizes), seed=100)]
    out = []
    for bs in batch_sizes:
        batch = (images * (bs // len(images) + 1))[:bs]
        encoder.encode_images(batch)  # warm-up: allocator, kernels, thread pools
        n_batches = max(2, -(-n_images // bs))
        t_pre = 0.0
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            tp = time.perf_counter()
            [encoder.preprocess(Image.fromarray(im)) for im in batch]
            t_pre += time.perf_counter() - tp
            emb = encoder.encode_images(batch)
            aesthetic_scores(head, emb)
        _sync(device)
        total = time.perf_counter() - t0 - t_pre  # the timed preprocessing ran twice; count it once
        n = n_batches * bs
        out.append({"task": "clip_embed+aesthetic", "model": name, "device": device, "batch_size": bs,
                    "images": n, "seconds": round(total, 4), "images_per_s": round(n / total, 2),
                    "preprocess_share": round(t_pre / total, 3)})
        print(f"  {name:<9} batch {bs:>3}: {n / total:8.2f} images/s")
    return out


def bench_ocr(n_images: int, threads: int, device: str) -> list[dict]:
    """Frames/s of rapidocr in both modes, on frames with and without text."""
    from curation.models.ocr import RapidOcrBackend

    out = []
    for recognize in (False, True):
        backend = RapidOcrBackend(recognize=recognize, threads=threads, use_gpu=device == "cuda")
        for text in (False, True):
            frames = keyframes(n_images, text=text, seed=200)
            backend(frames[0])  # warm-up
            t0 = time.perf_counter()
            results = [backend(f) for f in frames]
            dt = time.perf_counter() - t0
            mode = "coverage+text" if recognize else "coverage"
            out.append({"task": "ocr", "model": f"rapidocr {mode}", "device": device, "batch_size": 1,
                        "frames_with_text": text, "images": len(frames), "seconds": round(dt, 4),
                        "images_per_s": round(len(frames) / dt, 2),
                        "mean_coverage": round(float(np.mean([r.coverage for r in results])), 4)})
            print(f"  rapidocr {mode:<13} text={text!s:<5}: {len(frames) / dt:8.2f} images/s")
    return out


def table(rows: list[dict]) -> str:
    head = f"{'task':<22} {'model':<24} {'device':<6} {'batch':>5} {'text':>5} {'images/s':>9} {'preproc':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        text = "" if "frames_with_text" not in r else ("yes" if r["frames_with_text"] else "no")
        pre = f"{r['preprocess_share']:.0%}" if "preprocess_share" in r else ""
        lines.append(f"{r['task']:<22} {r['model']:<24} {r['device']:<6} {r['batch_size']:>5} {text:>5} "
                     f"{r['images_per_s']:>9.2f} {pre:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--models", default="tiny,vit-l-14")
    p.add_argument("--batch-sizes", default="1,4,16,32")
    p.add_argument("--images", type=int, default=64, help="images timed per batch size (at least 2 batches)")
    p.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0: all cores)")
    p.add_argument("--ocr-images", type=int, default=16)
    p.add_argument("--skip-ocr", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU")
    load_before = os.getloadavg()[0]  # a shared machine: the numbers are only as good as the load lets them be
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            print(f"CLIP {name} on {args.device}:")
            rows += bench_clip(name, args.device, batch_sizes, args.images, Path(tmp))
    if not args.skip_ocr:
        print(f"OCR on {args.device}:")
        rows += bench_ocr(args.ocr_images, threads, args.device)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    result = {"machine": {"cpu_count": os.cpu_count(), "threads": threads, "platform": platform.platform(),
                          "torch": torch.__version__, "gpu": gpu,
                          "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print()
    print(table(rows))
    print(f"\n1-min load average before/after: {result['machine']['load_avg_1min']} on {os.cpu_count()} cores")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
