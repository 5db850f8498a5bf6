"""Model-side curation commands: ``wan curate train-expert``, ``wan curate render-text``, ``wan curate ocr-text``.

  wan curate train-expert --name synthetic --table labels.lance --out heads/synthetic.safetensors \\
      [--config jobs/configs/x.yaml | --lake LAKE] [--clip OPEN_CLIP_DIR] [--kind binary|regression]
  wan curate render-text --lake LAKE --language zh|en --count N [--seed S] [--font PATH] [--text-file F]
  wan curate ocr-text --lake LAKE [--min-coverage 0.0]

``train-expert`` reads a labelled Lance table (``clip_id`` or ``image`` bytes, plus ``label``) and writes a head
that the ``experts`` stage applies (name it under ``experts.heads`` in the config).
"""
from __future__ import annotations

import argparse
import logging
import sys


def _train_expert(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wan curate train-expert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="expert name, e.g. synthetic or overexposure")
    p.add_argument("--table", required=True, help="labelled Lance table: clip_id or image, and a label column")
    p.add_argument("--out", required=True, help="head weights path (.safetensors; the .json goes beside it)")
    p.add_argument("--kind", default="binary", choices=["binary", "regression"])
    p.add_argument("--label-column", default="label")
    p.add_argument("--config", help="curation config: its lake and embed.clip are used")
    p.add_argument("--lake", help="lake whose stages/embed holds the embeddings (clip_id tables)")
    p.add_argument("--clip", help="open_clip model folder (image tables), default: the config's embed.clip")
    p.add_argument("--hidden", type=int, default=64, help="hidden width; 0 for a logistic/linear head")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from curation.config import ConfigError, load_config
    from curation.lake import Lake
    from curation.models import WeightsNotFoundError
    from curation.stages.train_expert import train_expert

    lake_root, clip = args.lake, None
    try:
        cfg = load_config(args.config) if args.config else None
        if cfg is not None and lake_root is None:
            lake_root = cfg.lake
        clip_cfg = cfg.embed.clip if cfg is not None else None
        if args.clip or clip_cfg is not None:
            from curation.models.clip import load_clip

            clip = (load_clip(path=args.clip) if args.clip else
                    load_clip(clip_cfg.path, clip_cfg.architecture, clip_cfg.weights))
        head = train_expert(args.name, args.table, args.out, args.kind, args.label_column,
                            Lake(lake_root) if lake_root else None, clip, hidden=args.hidden, epochs=args.epochs,
                            seed=args.seed)
    except (ConfigError, WeightsNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(head.metrics.items()))
    print(f"expert {args.name}: {head.info.get('rows')} rows ({head.info.get('source')}), {metrics}; saved {args.out}")
    return 0


def _render_text(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wan curate render-text")
    p.add_argument("--lake", required=True)
    p.add_argument("--language", required=True, choices=["zh", "en"])
    p.add_argument("--count", type=int, default=100, help="images (ignored with --text-file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--font", help="font file covering the language (default: found automatically)")
    p.add_argument("--text-file", help="UTF-8 file, one image per line; '|' separates lines inside an image")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    args = p.parse_args(argv)
    from curation.lake import Lake
    from curation.visual_text import FontNotFoundError, RenderSettings, render_image_text

    texts = None
    if args.text_file:
        with open(args.text_file, encoding="utf-8") as f:
            texts = [[s for s in line.rstrip("\n").split("|") if s] for line in f if line.strip()]
    if args.backend == "ray":
        from curation.ray_runtime import ensure_ray

        ensure_ray()
    try:
        res = render_image_text(Lake(args.lake), args.language, args.count, args.seed,
                                RenderSettings(args.width, args.height, font_path=args.font), texts,
                                backend=args.backend)
    except FontNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"image_text: {res.written.get('image_text', 0)} {args.language} images written in {res.wall_s:.1f}s")
    return 0


def _ocr_text(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wan curate ocr-text")
    p.add_argument("--lake", required=True)
    p.add_argument("--min-coverage", type=float, default=0.0)
    args = p.parse_args(argv)
    from curation.lake import Lake
    from curation.visual_text import attach_ocr_text

    n = attach_ocr_text(Lake(args.lake), args.min_coverage)
    print(f"image_text: {n} real images with OCR text written")
    return 0


COMMANDS = {"train-expert": _train_expert, "render-text": _render_text, "ocr-text": _ocr_text}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
