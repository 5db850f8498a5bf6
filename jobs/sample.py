"""Batch sampling job: ``ray job submit --working-dir . -- python -m jobs.sample --config jobs/configs/sample_tiny.yaml``.

Thin: validate the config (before Ray starts), then ``wanmodel.pipelines.batch.run_sampling``, which writes the
lake's ``samples`` table (resumable: a re-run samples only what is missing).
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.sample", __doc__, "YAML SampleJobConfig (see jobs/configs/sample_tiny.yaml)",
                        "sampling.num_steps=20")
    parser.add_argument("--local", action="store_true", help="sample in this process instead of Ray actors")
    args = parser.parse_args(argv)
    start_logging()
    from curation.ray_runtime import check_lake_location
    from wanmodel.pipelines.batch import load_sample_config, run_sampling

    def work():
        cfg = load_sample_config(args.config, overrides_from(parser, args))
        check_lake_location(cfg.lake, None)
        return run_sampling(cfg, backend="local" if args.local else "ray")

    return run_job(work, lambda summary: print(summary.text()))


if __name__ == "__main__":
    sys.exit(main())
