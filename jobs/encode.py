"""Encode job: ``ray job submit --working-dir . -- python -m jobs.encode --config jobs/configs/encode_tiny.yaml``.

Thin: validate the config (before Ray starts), run ``wanmodel.data.encode.run_encode_job`` for one curriculum stage
(VAE latents into ``latents``, umT5 caption embeddings into ``text_embeddings``), print the summary.
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.encode", __doc__, "YAML EncodeJobConfig (see jobs/configs/encode_tiny.yaml)",
                        "encode.num_gpus=1")
    parser.add_argument("--stage", help="override the config's curriculum stage, e.g. joint_256_192")
    args = parser.parse_args(argv)
    start_logging()
    from curation.ray_runtime import check_lake_location
    from wanmodel.data.encode import load_encode_config, run_encode_job

    def work():
        cfg = load_encode_config(args.config, overrides_from(parser, args, stage=args.stage))
        check_lake_location(cfg.lake, cfg.ray.address)
        return run_encode_job(cfg)

    return run_job(work, lambda summary: print(summary.text()))


if __name__ == "__main__":
    sys.exit(main())
