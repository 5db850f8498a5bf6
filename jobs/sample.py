"""Batch sampling job: ``ray job submit --working-dir . -- python -m jobs.sample --config jobs/configs/sample_tiny.yaml``.

Thin: validate the config (before Ray starts), then ``wanmodel.pipelines.batch.run_sampling``, which writes the
lake's ``samples`` table (resumable: a re-run samples only what is missing).
"""
from __future__ import annotations

import argparse
import logging
import sys

from jobs.overrides import parse_set_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.sample", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML SampleJobConfig (see jobs/configs/sample_tiny.yaml)")
    parser.add_argument("--lake", help="override the config's lake URI")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set sampling.num_steps=20 (YAML value)")
    parser.add_argument("--local", action="store_true", help="sample in this process instead of Ray actors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from curation.ray_runtime import RayClusterUnreachable, check_lake_location
    from wanmodel.pipelines.batch import load_sample_config, run_sampling

    overrides: dict[str, object] = {"lake": args.lake} if args.lake else {}
    overrides.update(parse_set_overrides(parser, args.set))
    try:
        cfg = load_sample_config(args.config, overrides)
        check_lake_location(cfg.lake, None)
    except (ValidationError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_sampling(cfg, backend="local" if args.local else "ray")
    except RayClusterUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
