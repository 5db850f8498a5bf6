"""DiT training job: ``ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/train_tiny.yaml
--lake /abs/path/to/lake``.

Thin: validate the config and the data (parallel sizes, buckets with rows, latent shapes, text embeddings) before
any step, then ``wanmodel.train.dit.train_dit_ray`` (or ``train_dit`` in this process with ``--local``). Running the
same command again after a crash or kill -9 resumes from the newest complete checkpoint in ``checkpoint_dir``.
A curriculum stage change is a config change: ``--set stage=joint_256_192 --set checkpoint_dir=... --set
init_from=<previous stage's checkpoint_dir>`` (weights only; optimizer, schedule and data position start afresh).
"""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML DiTTrainConfig (see jobs/configs/train_tiny.yaml)")
    parser.add_argument("--lake", help="lake path or URI (overrides the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--local", action="store_true", help="one process, no Ray (same loop, same checkpoints)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from curation.jobconfig import ConfigError
    from curation.ray_runtime import check_lake_location
    from jobs.overrides import parse_set_overrides
    from wanmodel.train.dit import train_dit, train_dit_ray
    from wanmodel.train.dit_config import load_dit_train_config

    overrides = parse_set_overrides(parser, args.set)
    if args.lake:
        overrides["lake"] = args.lake
    if args.local:
        overrides["ray"] = False
    try:
        cfg = load_dit_train_config(args.config, overrides)
        if cfg.ray:
            check_lake_location(cfg.lake, cfg.ray_address)
        result = train_dit_ray(cfg) if cfg.ray else train_dit(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = max(result.losses, default=None)
    print(f"done: steps {result.start_step}..{last}, last loss {result.losses.get(last, float('nan')):.4f}, "
          f"skipped {result.skipped}, checkpoint {result.checkpoint}, exported {result.exported}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
