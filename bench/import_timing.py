"""What a tiny bulk import waits for inside Milvus 2.3.5 (issue 21, see docs/benchmarks.md,
"Tiny imports").

Seeds `--collections` collections of `--rows` rows (8 dims) on Milvus A in the shape of
benchmark 7's harder variant: two partitions (`p0`, `p1`, half the rows each; `_default` empty),
half of the collections without an index. Copies every live segment's binlogs into bucket-b
once, then imports them on Milvus B with `do_bulk_insert(backup=true)` in several request shapes,
polling every task's state every `--poll` seconds and recording when each task is first seen
Pending, Started, Persisted and Completed (and the segment IDs it reports). One line of JSON per
task on stdout, a summary per shape on stderr.

Shapes (`--shapes`, comma-separated):
  k4        4 requests in flight (one per segment), target without index (planrun's order:
            import, then index)
  k1        1 in flight, one after the other
  k4-index  4 in flight into targets whose index was created before the imports
  k8        8 in flight
  part      one request per partition (the partition's insert_log directory: every segment
            of the partition in one request), 4 in flight

Run with the services' Python: .venv/bin/python bench/import_timing.py --shapes k4,k1
"""

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

warnings.filterwarnings("ignore", message=".*ORM-style PyMilvus API.*")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymilvus import DataType, connections, utility  # noqa: E402

import milvus_bench as mb  # noqa: E402

logging.getLogger("pymilvus").setLevel(logging.ERROR)
log = mb.log
DIM = 8


def seed(prefix, n, rows, per_partition):
    import numpy as np

    names = [f"{prefix}_{k:02d}" for k in range(n)]

    def one(k):
        name, c = names[k], mb.client(mb.A)
        indexed = k % 2 == 0
        c.create_collection(name, schema=mb.schema(c, DIM), consistency_level="Strong",
                            shards_num=1,
                            **({"index_params": mb.index_params(c)} if indexed else {}))
        if indexed:
            c.release_collection(name)
        for p in ("p0", "p1"):
            c.create_partition(name, p)
        vecs = np.random.default_rng(100 + k).random((rows, DIM), dtype=np.float32)
        # Each partition's rows in `per_partition` flushes: that many segments per partition
        # (unless compaction merges them before the copy).
        step = rows // (2 * per_partition)
        for j in range(per_partition):
            for p, base in (("p0", 0), ("p1", rows // 2)):
                lo = base + j * step
                c.insert(name, [{"pk": i, "vec": vecs[i], "cat": i % 100}
                                for i in range(lo, lo + step)], partition_name=p)
            c.flush(name)

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, range(n)))
    c = mb.client(mb.A)
    mb.settle_many(c, names, quiet=10)
    return names


def copy_segments(names, prefix):
    """Copies each collection's live segments into bucket-b under prefix; returns per collection
    [(partition name, segment id, rows, [insert dir, delta dir])] and the partitions' dirs."""
    a, store = mb.client(mb.A), mb.s3()
    jobs, out = [], {}
    for name in names:
        d = a.describe_collection(name)
        cid = d["collection_id"]
        segs = [s for s in mb.segments(a, name) if s.num_rows > 0]
        rel_segs = []
        for s in segs:
            dirs = []
            for kind in ("insert_log", "delta_log"):
                src = f"{mb.A['root']}/{kind}/{cid}/{s.partitionID}/{s.segmentID}/"
                rel = f"{kind}/{cid}/{s.partitionID}/{s.segmentID}/"
                for page in store.get_paginator("list_objects_v2").paginate(Bucket=mb.A["bucket"], Prefix=src):
                    jobs += [(o["Key"], f"{prefix}/{rel}{o['Key'][len(src):]}")
                             for o in page.get("Contents", [])]
                dirs.append(f"{prefix}/{rel}")
            rel_segs.append({"partition_id": s.partitionID, "segment": s.segmentID,
                             "rows": s.num_rows, "dirs": dirs,
                             "part_dirs": [f"{prefix}/insert_log/{cid}/{s.partitionID}/",
                                           f"{prefix}/delta_log/{cid}/{s.partitionID}/"]})
        out[name] = rel_segs

    def copy(job):
        store.copy_object(Bucket=mb.B["bucket"], Key=job[1],
                          CopySource={"Bucket": mb.A["bucket"], "Key": job[0]})

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(copy, jobs))
    return out


def partition_names(name):
    """partition id -> name on Milvus A (ShowPartitions through the connection's own stub, which
    carries the credentials; pymilvus's own calls return names only)."""
    from pymilvus.grpc_gen import milvus_pb2

    resp = connections._fetch_handler("tiny-a")._stub.ShowPartitions(  # noqa: SLF001
        milvus_pb2.ShowPartitionsRequest(collection_name=name), timeout=30)
    return dict(zip(resp.partitionIDs, resp.partition_names))


STATES = ("Pending", "Started", "Persisted", "Completed")


def run_shape(shape, names, segs, pnames, tag, poll):
    """Creates every target on B and imports into it in `shape`; returns per-task timings."""
    b = mb.client(mb.B)
    in_flight = {"k4": 4, "k1": 1, "k4-index": 4, "k8": 8, "part": 4}[shape]
    targets = {name: f"{name}_{shape.replace('-', '_')}_{tag}" for name in names}
    for name, t in targets.items():
        mb.drop(mb.B, t)
        b.create_collection(t, schema=mb.schema(b, DIM), consistency_level="Strong", shards_num=1)
        for p in ("p0", "p1"):
            b.create_partition(t, p)
        if shape == "k4-index":
            b.create_index(t, mb.index_params(b))
    requests = []
    for name in names:
        if shape == "part":
            seen = set()
            for s in segs[name]:
                if s["partition_id"] in seen:
                    continue
                seen.add(s["partition_id"])
                rows = sum(x["rows"] for x in segs[name] if x["partition_id"] == s["partition_id"])
                n = sum(1 for x in segs[name] if x["partition_id"] == s["partition_id"])
                requests.append((targets[name], pnames[name][s["partition_id"]], s["part_dirs"], rows, n))
        else:
            for s in segs[name]:
                requests.append((targets[name], pnames[name][s["partition_id"]], s["dirs"],
                                 s["rows"], 1))
    lock = threading.Lock()
    results = []
    t0 = time.monotonic()

    def one(req):
        target, part, files, rows, nseg = req
        sent = time.monotonic() - t0
        task = utility.do_bulk_insert(target, files=files, partition_name=part, using="tiny-b",
                                      backup="true")
        accepted = time.monotonic() - t0
        seen = {}
        last = None
        while True:
            st = utility.get_bulk_insert_state(task, using="tiny-b")
            now = time.monotonic() - t0
            name = st.state_name
            if name not in seen:
                seen[name] = now
            if name == "Failed":
                raise SystemExit(f"import {task} failed: {st.failed_reason}")
            if name == "Completed":
                last = st
                break
            time.sleep(poll)
        r = {"shape": shape, "task": task, "target": target, "partition": part,
             "segments_in_request": nseg, "rows": rows, "imported_rows": last.row_count,
             "sent": round(sent, 3), "accepted": round(accepted, 3),
             **{k.lower(): round(seen[k], 3) for k in STATES if k in seen},
             "server_create_ts": last.create_time_str}
        with lock:
            results.append(r)
            print(json.dumps(r), flush=True)
        return r

    with ThreadPoolExecutor(in_flight) as ex:
        list(ex.map(one, requests))
    wall = time.monotonic() - t0
    for t in targets.values():
        mb.drop(mb.B, t)
    return wall, results


def summary(shape, wall, rs):
    def med(a, b):
        xs = [r[b] - r[a] for r in rs if a in r and b in r]
        return f"{statistics.median(xs):.1f}" if xs else "-"

    starts = sorted(r["started"] for r in rs if "started" in r)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    gap = f"{statistics.median(gaps):.1f}" if gaps else "-"
    # Tasks in Started or Persisted at one time (between their start and their completion).
    spans = [(r["started"], r["completed"]) for r in rs if "started" in r]
    overlap = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans) if spans else 0
    log(f"{shape}: {len(rs)} requests in {wall:.1f} s ({wall / len(rs):.2f} s per request); "
        f"median s sent->started {med('sent', 'started')}, "
        f"started->persisted {med('started', 'persisted')}, "
        f"persisted->completed {med('persisted', 'completed')}, "
        f"request->completed {med('sent', 'completed')}; "
        f"median gap between one task's start and the next's {gap}, tasks Started at once: "
        f"at most {overlap}")


def parquet_imports(coll, dim, poll, binary, in_flight=4):
    """A planrun rows backup of `coll` (on A) into bucket-b, then each of its Parquet files
    imported into a fresh target on B (one request per file, as planrun's rows restore sends
    them, `in_flight` at a time), each task's transitions timed as above."""
    import shutil
    import subprocess
    import tempfile

    tag = os.getpid()
    prefix = f"backup/bench-parquet-{tag}"
    work = tempfile.mkdtemp(prefix="parquet-")
    plan, _ = mb.write_plan(work, f"parquet-{tag}",
                            f'\n[steps.backup]\ntype = "backup"\ninstance = "milvus_a"\n'
                            f'collections = ["{coll}"]\nto = "bucket_b:{prefix}"\nmode = "rows"\n')
    t0 = time.monotonic()
    subprocess.run([binary, "apply", "--yes", plan], check=True, stdout=subprocess.DEVNULL)
    log(f"rows backup of {coll} in {time.monotonic() - t0:.1f} s")
    store = mb.s3()
    files = []
    for page in store.get_paginator("list_objects_v2").paginate(Bucket=mb.B["bucket"], Prefix=prefix + "/"):
        files += [(o["Key"], o["Size"]) for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
    b = mb.client(mb.B)
    target = f"{coll}_parquet_{tag}"
    mb.drop(mb.B, target)
    b.create_collection(target, schema=mb.schema(b, dim), consistency_level="Strong", shards_num=1)
    results = []
    t0 = time.monotonic()

    def one(job):
        key, size = job
        sent = time.monotonic() - t0
        task = utility.do_bulk_insert(target, files=[key], using="tiny-b")
        seen = {}
        while True:
            st = utility.get_bulk_insert_state(task, using="tiny-b")
            now = time.monotonic() - t0
            seen.setdefault(st.state_name, now)
            if st.state_name == "Failed":
                raise SystemExit(f"import of {key} failed: {st.failed_reason}")
            if st.state_name == "Completed":
                break
            time.sleep(poll)
        r = {"shape": "parquet", "file": key, "bytes": size, "rows": st.row_count,
             "sent": round(sent, 3), **{k.lower(): round(seen[k], 3) for k in STATES if k in seen}}
        print(json.dumps(r), flush=True)
        results.append(r)

    try:
        with ThreadPoolExecutor(in_flight) as ex:
            list(ex.map(one, files))
        wall = time.monotonic() - t0
        summary(f"parquet ({len(files)} files of {coll})", wall, results)
    finally:
        mb.drop(mb.B, target)
        mb.delete_prefix(mb.B["bucket"], prefix)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--collections", type=int, default=20)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--shapes", default="k4,k1,k4-index,part")
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--segments-per-partition", type=int, default=1,
                    help="flushes per partition while seeding (segments, unless compacted)")
    ap.add_argument("--parquet-from", help="instead: time the imports of a planrun rows backup "
                    "of this collection on A (vectors-only schema), one request per file; needs PLANRUN")
    ap.add_argument("--dim", type=int, default=128, help="with --parquet-from: its vectors' dims")
    args = ap.parse_args()
    if args.parquet_from:
        connections.connect(alias="tiny-b", uri=mb.B["uri"])
        parquet_imports(args.parquet_from, args.dim, args.poll, os.environ["PLANRUN"])
        return
    tag = f"{os.getpid()}"
    prefix = f"bench_tiny_{tag}"
    backup = f"backup/bench-tiny-{tag}"
    connections.connect(alias="tiny-b", uri=mb.B["uri"])
    connections.connect(alias="tiny-a", uri=mb.A["uri"], token=mb.A["token"])
    names = []
    try:
        t0 = time.monotonic()
        names = seed(prefix, args.collections, args.rows, args.segments_per_partition)
        log(f"seeded {len(names)} collections in {time.monotonic() - t0:.0f} s")
        segs = copy_segments(names, backup)
        pnames = {name: partition_names(name) for name in names}
        log("segments per collection: " + ", ".join(str(len(v)) for v in segs.values()))
        for shape in args.shapes.split(","):
            wall, rs = run_shape(shape, names, segs, pnames, tag, args.poll)
            summary(shape, wall, rs)
    finally:
        a = mb.client(mb.A)
        for name in names:
            if a.has_collection(name):
                a.drop_collection(name)
        mb.delete_prefix(mb.B["bucket"], backup)


if __name__ == "__main__":
    main()
