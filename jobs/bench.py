"""Wan-Bench: ``python -m jobs.bench --config jobs/configs/bench_tiny.yaml`` (``ray job submit`` or ``wan bench``).

  score --config FILE [--set k=v] [--local] [--report DIR]   score samples (or an mp4 folder) into bench_scores
  compare --lake LAKE RUN [RUN ...] [--out DIR]              runs side by side; HTML report + VBench-style JSON
  sample --suite FILE --lake LAKE --out JOB.yaml [...]       the prompt suite as a sampling job (then --run it)

Without a subcommand the arguments are those of ``score``. Scoring is resumable: a re-run scores only the
(sample, dimension) pairs missing from ``bench_scores``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.entry import (
    job_parser,
    overrides_from,
    parse_set_overrides,
    run_job,
    start_logging,
)

COMMANDS = ("score", "compare", "sample")


def score_main(argv: list[str]) -> int:
    parser = job_parser("wan bench score", "score a run into bench_scores",
                        "YAML BenchJobConfig (see jobs/configs/bench_tiny.yaml)", "run=nightly")
    parser.add_argument("--local", action="store_true", help="score in this process instead of Ray actor pools")
    parser.add_argument("--report", metavar="DIR", help="also write the run's HTML report and JSON export here")
    args = parser.parse_args(argv)
    start_logging()
    from bench.job import check_dimensions, load_bench_config, run_bench
    from curation.ray_runtime import check_lake_location

    cfg = None

    def work():
        nonlocal cfg
        cfg = load_bench_config(args.config, overrides_from(parser, args,
                                                            execution="local" if args.local else None))
        check_lake_location(cfg.lake, cfg.ray.address)
        check_dimensions(cfg)
        return run_bench(cfg)

    def report(result) -> None:
        print(f"bench {cfg.run}: {result['samples']} samples, {result['pending_samples']} scored this run, "
              f"{result['written']} scores written {result['status']} in {result['wall_s']:.1f} s")
        for message in result["errors"]:
            print(f"  error: {message}")
        print(result["summary"].text())
        if args.report:
            _write_report(cfg.lake, [cfg.run], args.report, cfg.weights_file)

    return run_job(work, report)


def _write_report(lake: str, runs: list[str], out: str, weights_file: str | None) -> None:
    from bench.report import write_report

    paths = write_report(lake, runs, out, weights_file=weights_file)
    print(f"report: {paths['html']}\nVBench-style JSON: {paths['json']}")


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wan bench compare", description="put bench runs side by side")
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--lake", required=True)
    parser.add_argument("--out", help="write the HTML report and the JSON export into this folder")
    parser.add_argument("--weights", help="fitted weights JSON ({dimension: weight}); default: the runs' own")
    args = parser.parse_args(argv)
    from bench.report import comparison_text
    from curation.lake.tables import Lake

    try:
        print(comparison_text(Lake(args.lake), args.runs, args.weights))
        if args.out:
            _write_report(args.lake, args.runs, args.out, args.weights)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wan bench sample", description="the prompt suite as a sampling job")
    parser.add_argument("--suite", required=True, help="prompt suite JSONL (bench/prompts/*.jsonl)")
    parser.add_argument("--lake", required=True, help="the lake whose samples table receives the videos")
    parser.add_argument("--out", required=True, help="where to write the sample job's YAML")
    parser.add_argument("--random-tiny", action="store_true", help="tiny random Wan models (demos and tests)")
    parser.add_argument("--dit"), parser.add_argument("--vae"), parser.add_argument("--text-encoder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a sample job value, e.g. --set sampling.num_steps=20 --set seeds=[0,1]")
    parser.add_argument("--run", action="store_true", help="run the sample job now (python -m jobs.sample)")
    parser.add_argument("--local", action="store_true", help="with --run: sample in this process, not Ray actors")
    args = parser.parse_args(argv)
    from bench.sampling import sample_job_config

    try:
        data = sample_job_config(args.suite, args.lake, random_tiny=args.random_tiny, dit=args.dit, vae=args.vae,
                                 text_encoder=args.text_encoder, overrides=parse_set_overrides(parser, args.set))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import yaml

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(yaml.safe_dump(data, sort_keys=False))
    print(f"wrote the sample job {args.out} ({json.dumps(data['models'])}); run: python -m jobs.sample --config "
          f"{args.out}")
    if args.run:
        from jobs.sample import main as sample_job

        return sample_job(["--config", args.out, *(["--local"] if args.local else [])])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    command, rest = (argv[0], argv[1:]) if argv[:1] and argv[0] in COMMANDS else ("score", argv)
    return {"score": score_main, "compare": compare_main, "sample": sample_main}[command](rest)


if __name__ == "__main__":
    sys.exit(main())
