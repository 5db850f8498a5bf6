"""Encode job: ``ray job submit --working-dir . -- python -m jobs.encode --config jobs/configs/encode_tiny.yaml``.

Thin: validate the config (before Ray starts), run ``wanmodel.data.encode.run_encode_job`` for one curriculum stage
(VAE latents into ``latents``, umT5 caption embeddings into ``text_embeddings``), print the summary.
"""
from __future__ import annotations

import argparse
import logging
import sys

from jobs.overrides import parse_set_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.encode", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML EncodeJobConfig (see jobs/configs/encode_tiny.yaml)")
    parser.add_argument("--lake", help="override the config's lake URI")
    parser.add_argument("--stage", help="override the config's curriculum stage, e.g. joint_256_192")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set encode.num_gpus=1 (YAML value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from curation.jobconfig import ConfigError
    from curation.ray_runtime import RayClusterUnreachable, check_lake_location
    from curation.stages.registry import MissingInputError
    from wanmodel.data.encode import load_encode_config, run_encode_job

    overrides: dict[str, object] = dict(parse_set_overrides(parser, args.set))
    if args.lake:
        overrides["lake"] = args.lake
    if args.stage:
        overrides["stage"] = args.stage
    try:
        cfg = load_encode_config(args.config, overrides)
        check_lake_location(cfg.lake, cfg.ray.address)
        summary = run_encode_job(cfg)
    except (ConfigError, FileNotFoundError, MissingInputError, RayClusterUnreachable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
