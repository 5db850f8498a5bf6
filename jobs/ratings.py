"""The human rating round of the quality expert (report 3.1 "Scoring").

  wan ratings todo --lake LAKE --out todo.csv             the clips to rate (written by the quality stage), not yet rated
  wan ratings import FILE --lake LAKE [--rater NAME]      ratings (CSV/TSV/Parquet: clip_id, rating 1-5[, rater])

Then run the ``quality`` stage again: it trains the expert head on all the ratings and scores every clip.
"""
from __future__ import annotations

import argparse
import csv
import sys


def _todo(args: argparse.Namespace) -> int:
    from curation.lake import Lake

    lake = Lake(args.lake)
    rated = set(lake.read("ratings", columns=["clip_id"]).column("clip_id").to_pylist())
    rows = [r for r in lake.read("ratings_todo").to_pylist() if r["clip_id"] not in rated]
    cols = ["clip_id", "cluster_id", "uri", "media_type", "start_frame", "end_frame"]
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*cols, "rating"])
        w.writerows([[r[c] for c in cols] + [""] for r in rows])
    print(f"{len(rows)} clips to rate written to {args.out} (fill the rating column with 1-5)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from curation.lake import Lake
    from curation.stages.quality import import_ratings

    try:
        n = import_ratings(Lake(args.lake), args.file, rater=args.rater)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"imported {n} ratings into {args.lake}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wan ratings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("todo", help="export the clips still to rate as CSV")
    p.add_argument("--lake", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_todo)
    p = sub.add_parser("import", help="import a ratings file into the lake's ratings table")
    p.add_argument("file")
    p.add_argument("--lake", required=True)
    p.add_argument("--rater", help="rater name for rows without a rater column")
    p.set_defaults(fn=_import)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
