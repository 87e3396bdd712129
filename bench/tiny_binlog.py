"""Many small collections in binlog mode, A -> B, with two planrun builds side by side (issue 21,
docs/benchmarks.md, "Tiny imports"): the build before and after a change to how a binlog
restore groups its import requests, run alternately, each round timed whole (`planrun apply`
of a binlog backup into bucket-b and its restore on Milvus B) and every collection's rows
counted on B afterwards.

The collections are `import_timing.py`'s shape: `--collections` of `--rows` rows (8 dims), two
partitions each flushed `--segments-per-partition` times, half of them without an index.

Run with the services' Python:
  .venv/bin/python bench/tiny_binlog.py OLD_PLANRUN NEW_PLANRUN [--rounds 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message=".*ORM-style PyMilvus API.*")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import import_timing as it  # noqa: E402
import milvus_bench as mb  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builds", nargs="+", help="planrun binaries, run in turn each round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--collections", type=int, default=20)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--segments-per-partition", type=int, default=3)
    args = ap.parse_args()
    prefix = f"tinyb_{args.rows}"
    names = [f"{prefix}_{k:02d}" for k in range(args.collections)]
    a, b = mb.client(mb.A), mb.client(mb.B)
    if not all(a.has_collection(n) for n in names):
        for n in names:
            mb.drop(mb.A, n)
        it.seed(prefix, args.collections, args.rows, args.segments_per_partition)
    work = tempfile.mkdtemp(prefix="planrun-tiny-")
    try:
        for rnd in range(args.rounds):
            # Alternate which build goes first, so that order does not decide the result.
            builds = args.builds if rnd % 2 == 0 else list(reversed(args.builds))
            for binary in builds:
                tag = f"tiny-{os.getpid()}-{rnd}-{os.path.basename(binary)}"
                for n in names:
                    mb.drop(mb.B, n)
                plan, _ = mb.write_plan(work, tag, f"""
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{prefix}_*"]
to = "bucket_b:backup/{tag}"
mode = "binlog"

[steps.restore]
type = "restore"
instance = "target"
from = "bucket_b:backup/{tag}"
""")
                t0 = time.monotonic()
                p = subprocess.run([binary, "apply", "--yes", plan], capture_output=True, text=True)
                wall = time.monotonic() - t0
                if p.returncode != 0:
                    raise SystemExit(f"{binary} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
                counts = [int(b.get_collection_stats(n)["row_count"]) for n in names]
                print(json.dumps({"round": rnd, "build": binary, "wall_s": round(wall, 1),
                                  "rows": sum(counts),
                                  "exact": all(c == args.rows for c in counts)}), flush=True)
                mb.delete_prefix(mb.B["bucket"], f"backup/{tag}")
        for n in names:
            mb.drop(mb.B, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
