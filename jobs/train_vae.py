"""Wan-VAE training job: ``ray job submit --working-dir . -- python -m jobs.train_vae --config jobs/configs/vae_tiny.yaml``.

Thin: validate the config (before Ray starts), then ``wanmodel.train.train_vae_ray`` (or ``train_vae`` in this
process with ``--local``). Running the same command again after a crash or kill -9 resumes exactly from the newest
complete checkpoint in ``checkpoint_dir``.
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_vae", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML VAETrainConfig (see jobs/configs/vae_tiny.yaml)")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--local", action="store_true", help="one process, no Ray (same loop, same checkpoints)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from curation.ray_runtime import check_lake_location
    from jobs.overrides import parse_set_overrides
    from wanmodel.train import load_train_config, train_vae, train_vae_ray

    overrides = parse_set_overrides(parser, args.set)
    try:
        cfg = load_train_config(args.config, overrides)
        if not args.local:
            check_lake_location(cfg.lake, None)
    except (ValidationError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.local:
        local = train_vae(cfg)
        last = local.history[-1] if local.history else {}
        print(f"done: steps {local.start_step}..{last.get('step')}, metrics {last}, checkpoint {local.checkpoint}")
        return 0
    result = train_vae_ray(cfg, num_workers=args.num_workers, use_gpu=args.gpu)
    if result.error is not None:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    print(f"done: metrics {result.metrics}, checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
