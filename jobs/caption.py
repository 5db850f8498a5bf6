"""Caption job: ``ray job submit --working-dir . -- python -m jobs.caption --config jobs/configs/caption_tiny.yaml``.

Thin: validate the config (before Ray starts), run ``captioner.batch.run_caption_job``, print the summary.
"""
from __future__ import annotations

import argparse
import logging
import sys

from jobs.overrides import parse_set_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.caption", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML CaptionJobConfig (see jobs/configs/caption_tiny.yaml)")
    parser.add_argument("--lake", help="override the config's lake URI")
    parser.add_argument("--model", help="override the config's model folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set backend=hf (YAML value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from captioner.batch import load_caption_config, run_caption_job
    from curation.config import ConfigError
    from curation.ray_runtime import RayClusterUnreachable, check_lake_location

    overrides: dict[str, object] = {}
    overrides.update(parse_set_overrides(parser, args.set))
    if args.lake:
        overrides["lake"] = args.lake
    if args.model:
        overrides["model"] = args.model
    try:
        cfg = load_caption_config(args.config, overrides)
        check_lake_location(cfg.lake, cfg.ray.address)
        summary = run_caption_job(cfg)
    except (ConfigError, FileNotFoundError, RayClusterUnreachable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
