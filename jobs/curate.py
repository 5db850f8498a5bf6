"""Curation job: ``ray job submit --working-dir . -- python -m jobs.curate --config jobs/configs/<name>.yaml``.

Runs any subset of stages (``--stages ingest,shots,...`` overrides the config's list). The config is validated
before Ray starts, so a bad key fails in a second, not after a cluster spins up.
"""
from __future__ import annotations

import argparse
import logging
import sys

from curation.config import ConfigError, load_config
from curation.pipeline import run_curation
from curation.ray_runtime import RayClusterUnreachable, check_lake_location
from jobs.overrides import parse_set_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.curate", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (see jobs/configs/)")
    parser.add_argument("--stages", help="comma-separated subset of stages to run")
    parser.add_argument("--lake", help="override the config's lake URI")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set select.min_duration_s=2 (YAML value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides: dict[str, object] = {}
    if args.stages:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.lake:
        overrides["lake"] = args.lake
    overrides.update(parse_set_overrides(parser, args.set))
    try:
        cfg = load_config(args.config, overrides)
        check_lake_location(cfg.lake, cfg.ray.address)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from curation.models import WeightsNotFoundError

    try:
        summary = run_curation(cfg)
    except (ConfigError, WeightsNotFoundError, RayClusterUnreachable) as e:  # checked before any work
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
