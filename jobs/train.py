"""DiT training job: ``ray job submit --working-dir . -- python -m jobs.train --config jobs/configs/train_tiny.yaml
--lake /abs/path/to/lake``.

Thin: validate the config and the data (parallel sizes, buckets with rows, latent shapes, text embeddings) before
any step, then ``wanmodel.train.dit.train_dit_ray`` (or ``train_dit`` in this process with ``--local``). Running the
same command again after a crash or kill -9 resumes from the newest complete checkpoint in ``checkpoint_dir``.
A curriculum stage change is a config change: ``--set stage=joint_256_192 --set checkpoint_dir=... --set
init_from=<previous stage's checkpoint_dir>`` (weights only; optimizer, schedule and data position start afresh).
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.train", __doc__, "YAML DiTTrainConfig (see jobs/configs/train_tiny.yaml)",
                        "steps=100")
    parser.add_argument("--local", action="store_true", help="one process, no Ray (same loop, same checkpoints)")
    args = parser.parse_args(argv)
    start_logging()
    from curation.ray_runtime import check_lake_location
    from wanmodel.train.dit import train_dit, train_dit_ray
    from wanmodel.train.dit_config import load_dit_train_config

    def work():
        cfg = load_dit_train_config(args.config, overrides_from(parser, args, ray=False if args.local else None))
        if cfg.ray:
            check_lake_location(cfg.lake, cfg.ray_address)
        return train_dit_ray(cfg) if cfg.ray else train_dit(cfg)

    def report(result) -> None:
        last = max(result.losses, default=None)
        print(f"done: steps {result.start_step}..{last}, last loss {result.losses.get(last, float('nan')):.4f}, "
              f"skipped {result.skipped}, checkpoint {result.checkpoint}, exported {result.exported}")

    return run_job(work, report)


if __name__ == "__main__":
    sys.exit(main())
