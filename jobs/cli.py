"""The ``wan`` command: one subcommand per stage of the system.

  wan synth --out DIR [--preset test|demo] [--seed N]   generate sample media with ground-truth labels
  wan curate --config FILE [--stages a,b] [--set k=v]   run curation stages (same as python -m jobs.curate)
  wan curate train-expert --name N --table T --out F    train an expert head on CLIP embeddings
  wan curate render-text --lake L --language zh|en      render text-on-white images into image_text
  wan curate ocr-text --lake L                          real keyframes with their OCR text into image_text
  wan demo [--out DIR] [--no-toy]                       the end-to-end demo (curation, then the toy world DiT)
  wan vae roundtrip IN.mp4 OUT.mp4 [--weights PATH]     Wan-VAE encode + decode, prints PSNR
  wan train --config FILE                                DiT training on Ray Train (python -m jobs.train)
  wan train-vae --config FILE                            Wan-VAE training on Ray Train (python -m jobs.train_vae)
  wan ratings todo|import ...                           the human rating round of the quality expert
  wan sample --prompt TEXT --out DIR [--random-tiny]     sample videos/images (t2v, t2i, i2v) with a Wan DiT
  wan sample-batch --config FILE                         batch sampling into the lake's samples table (jobs.sample)
  wan caption --config FILE [--set k=v]                 caption curated clips into the captions table (jobs.caption)
  wan encode --config FILE [--stage S] [--set k=v]      latents + text_embeddings training caches (jobs.encode)
  wan bench score|compare|sample ...                    Wan-Bench: score samples, compare runs, sample the suite
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _synth(args: argparse.Namespace) -> int:
    from curation.synth import generate

    t0 = time.perf_counter()
    labels = generate(args.out, preset=args.preset, seed=args.seed)
    print(f"wrote {labels.num_rows} labelled segments to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="generate sample media with labels")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="test", choices=["test", "demo"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_synth)
    for name, text in (("curate", "run curation stages"), ("train-vae", "train the Wan-VAE"),
                       ("train", "train the DiT from the latents cache"),
                       ("ratings", "quality ratings: todo / import"),
                       ("vae", "Wan-VAE tools: vae roundtrip IN OUT"), ("sample", "sample with a Wan DiT"),
                       ("sample-batch", "batch sampling into the samples table"),
                       ("caption", "caption curated clips into the captions table"),
                       ("encode", "VAE latents and umT5 caption embeddings for training (jobs.encode)"),
                       ("bench", "Wan-Bench: score, compare, sample (jobs.bench)")):
        sub.add_parser(name, help=text, add_help=False)
    p = sub.add_parser("demo", help="end-to-end demo on generated media")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "configs", "demo.yaml"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-toy", action="store_true", help="stop after curation (no toy world)")
    p.add_argument("--toy-config", help="toy world YAML (default jobs/configs/toy_world.yaml)")
    p.set_defaults(fn=_demo)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["curate"] and len(argv) > 1:
        from jobs.curate_models import COMMANDS
        from jobs.curate_models import main as models_main

        if argv[1] in COMMANDS:  # train-expert, render-text, ocr-text
            return models_main(argv[1:])
    if argv and argv[0] == "curate":
        from jobs.curate import main as curate_main

        return curate_main(argv[1:])
    if argv and argv[0] == "ratings":
        from jobs.ratings import main as ratings_main

        return ratings_main(argv[1:])
    if argv and argv[0] == "train":
        from jobs.train import main as train_dit_main

        return train_dit_main(argv[1:])
    if argv and argv[0] == "train-vae":
        from jobs.train_vae import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "sample":
        from wanmodel.cli_sample import main as sample_main

        sample_main(argv[1:])
        return 0
    if argv and argv[0] == "caption":
        from jobs.caption import main as caption_main

        return caption_main(argv[1:])
    if argv and argv[0] == "encode":
        from jobs.encode import main as encode_main

        return encode_main(argv[1:])
    if argv and argv[0] == "bench":
        from jobs.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "sample-batch":
        from jobs.sample import main as sample_job_main

        return sample_job_main(argv[1:])
    if argv[:2] == ["vae", "roundtrip"]:
        from wanmodel.cli_vae import main as vae_main

        vae_main(argv[2:])
        return 0
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
