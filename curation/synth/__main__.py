"""CLI: ``python -m curation.synth --out DIR --preset test|demo --seed 0 [--bad-inputs]``."""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from curation.synth.bad_inputs import write_bad_inputs
from curation.synth.generate import PRESETS, generate


def main(argv: list[str] | None = None) -> int:
    """Generate a synthetic corpus into ``--out`` and print a short summary."""
    ap = argparse.ArgumentParser(prog="python -m curation.synth", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="output folder (media/ and labels.parquet)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-videos", type=int, default=None, help="override the number of original videos")
    ap.add_argument("--bad-inputs", action="store_true", help="also write broken files into OUT/bad/")
    args = ap.parse_args(argv)
    overrides = {} if args.n_videos is None else {"n_videos": args.n_videos}
    t0 = time.perf_counter()
    table = generate(args.out, preset=args.preset, seed=args.seed, **overrides)
    rows = table.to_pylist()
    files = {r["file"] for r in rows}
    kinds = Counter(r["motion_kind"] for r in rows if r["media_type"] == "video" and r["duplicate_of"] is None)
    print(f"wrote {len(files)} files, {len(rows)} label rows to {args.out} in {time.perf_counter() - t0:.1f} s")
    print("segments per motion kind (originals):", dict(sorted(kinds.items())))
    if args.bad_inputs:
        bad = write_bad_inputs(args.out / "bad")
        print(f"wrote {len(bad)} bad inputs to {args.out / 'bad'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
