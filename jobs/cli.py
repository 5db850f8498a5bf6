"""The ``wan`` command: one subcommand per stage of the system.

  wan synth --out DIR [--preset test|demo] [--seed N]   generate sample media with ground-truth labels
  wan curate --config FILE [--stages a,b] [--set k=v]   run curation stages (same as python -m jobs.curate)
  wan demo [--out DIR]                                  the end-to-end demo on the embedded local Ray + Lance
  wan vae roundtrip IN.mp4 OUT.mp4 [--weights PATH]     Wan-VAE encode + decode, prints PSNR
  wan train-vae --config FILE                            Wan-VAE training on Ray Train (python -m jobs.train_vae)
"""
from __future__ import annotations

import argparse
import logging
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
    from curation.config import load_config
    from curation.pipeline import run_curation
    from curation.synth import generate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = os.path.abspath(args.out)
    media = os.path.join(out, "media")
    if not os.path.exists(os.path.join(out, "labels.parquet")):
        print(f"[demo] generating sample media into {media}")
        generate(out, preset="demo", seed=args.seed)
    cfg = load_config(args.config, {"lake": os.path.join(out, "lake"), "input.paths": [media]})
    print("[demo] curating (ingest, shot split + classical filters, dedup, select) on the local Ray")
    summary = run_curation(cfg)
    print(summary.text())
    if summary.report_dir:
        with open(os.path.join(summary.report_dir, "summary.txt")) as f:
            print(f.read())
        print(f"[demo] report: {os.path.join(summary.report_dir, 'report.html')}")
    import pyarrow.parquet as pq

    from curation.evaluation import evaluate
    from curation.lake import Lake

    ev = evaluate(Lake(cfg.lake), pq.read_table(os.path.join(out, "labels.parquet")),
                  min_duration_s=cfg.select.min_duration_s)
    print("[demo] classical filters against the generator's ground truth:\n" + ev.text())
    return 0


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
                       ("vae", "Wan-VAE tools: vae roundtrip IN OUT")):
        sub.add_parser(name, help=text, add_help=False)
    p = sub.add_parser("demo", help="end-to-end demo on generated media")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "configs", "demo.yaml"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_demo)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "curate":
        from jobs.curate import main as curate_main

        return curate_main(argv[1:])
    if argv and argv[0] == "train-vae":
        from jobs.train_vae import main as train_main

        return train_main(argv[1:])
    if argv[:2] == ["vae", "roundtrip"]:
        from wanmodel.cli_vae import main as vae_main

        vae_main(argv[2:])
        return 0
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
