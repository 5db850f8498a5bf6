"""Caption job: ``ray job submit --working-dir . -- python -m jobs.caption --config jobs/configs/caption_tiny.yaml``.

Thin: validate the config (before Ray starts), run ``captioner.batch.run_caption_job``, print the summary.
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.caption", __doc__,
                        "YAML CaptionJobConfig (see jobs/configs/caption_tiny.yaml)", "backend=hf")
    parser.add_argument("--model", help="override the config's model folder")
    args = parser.parse_args(argv)
    start_logging()
    from captioner.batch import load_caption_config, run_caption_job
    from curation.ray_runtime import check_lake_location

    def work():
        cfg = load_caption_config(args.config, overrides_from(parser, args, model=args.model))
        check_lake_location(cfg.lake, cfg.ray.address)
        return run_caption_job(cfg)

    return run_job(work, lambda summary: print(summary.text()))


if __name__ == "__main__":
    sys.exit(main())
