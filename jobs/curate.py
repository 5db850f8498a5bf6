"""Curation job: ``ray job submit --working-dir . -- python -m jobs.curate --config jobs/configs/<name>.yaml``.

Runs any subset of stages (``--stages ingest,shots,...`` overrides the config's list). The config is validated
before Ray starts, so a bad key fails in a second, not after a cluster spins up.
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.curate", __doc__, "YAML config (see jobs/configs/)",
                        "select.min_duration_s=2")
    parser.add_argument("--stages", help="comma-separated subset of stages to run")
    args = parser.parse_args(argv)
    start_logging()
    from curation.config import load_config
    from curation.pipeline import run_curation
    from curation.ray_runtime import check_lake_location

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None

    def work():
        cfg = load_config(args.config, overrides_from(parser, args, stages=stages))
        check_lake_location(cfg.lake, cfg.ray.address)
        return run_curation(cfg)  # weights, inputs and the cluster are checked before any work

    return run_job(work, lambda summary: print(summary.text()))


if __name__ == "__main__":
    sys.exit(main())
