"""Wan-VAE training job: ``ray job submit --working-dir . -- python -m jobs.train_vae --config jobs/configs/vae_tiny.yaml``.

Thin: validate the config (before Ray starts), then ``wanmodel.train.train_vae_ray`` (or ``train_vae`` in this
process with ``--local``). Running the same command again after a crash or kill -9 resumes exactly from the newest
complete checkpoint in ``checkpoint_dir``.
"""
from __future__ import annotations

import sys

from jobs.entry import job_parser, overrides_from, run_job, start_logging


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("python -m jobs.train_vae", __doc__, "YAML VAETrainConfig (see jobs/configs/vae_tiny.yaml)",
                        "steps=200", lake=False)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--local", action="store_true", help="one process, no Ray (same loop, same checkpoints)")
    args = parser.parse_args(argv)
    start_logging()
    from curation.ray_runtime import check_lake_location
    from wanmodel.train import load_train_config, train_vae, train_vae_ray

    def load():
        cfg = load_train_config(args.config, overrides_from(parser, args))
        if not args.local:
            check_lake_location(cfg.lake, None)
        return cfg

    def train(cfg) -> int:
        if args.local:
            local = train_vae(cfg)
            last = local.history[-1] if local.history else {}
            print(f"done: steps {local.start_step}..{last.get('step')}, metrics {last}, "
                  f"checkpoint {local.checkpoint}")
            return 0
        result = train_vae_ray(cfg, num_workers=args.num_workers, use_gpu=args.gpu)
        if result.error is not None:
            print(f"error: {result.error}", file=sys.stderr)
            return 1
        print(f"done: metrics {result.metrics}, checkpoint {result.checkpoint}")
        return 0

    return run_job(load, train)


if __name__ == "__main__":
    sys.exit(main())
