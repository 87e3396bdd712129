"""The read phase of a rows backup against pymilvus's query_iterator (issue 21 §3), on Milvus A.

Seeds (or reuses) a collection of every kind rows mode reads: 64-dim float vectors, a VARCHAR,
JSON, an INT64 array, a dynamic field, two partitions; then, round by round and alternately:
  - planrun: a plan with one rows `backup` step into bucket-a, per `--readers` value, timed by
    its own `read` phase event;
  - pymilvus: one `query_iterator(batch_size=16384)` over the whole collection, and two over the
    halves of the key range in two threads.
Prints the medians, and while each runs samples the CPU of planrun and of the Milvus processes
(from /proc) to say what bounds the read.

  .venv/bin/python bench/rows_read.py --planrun target/release/planrun --rounds 3 --readers 1,2
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from milvus_bench import A, Run, client, delete_prefix, log, settle, write_plan  # noqa: E402
from pymilvus import DataType  # noqa: E402

PARTS = ["_default", "p1"]


def seed(name, rows, pk="int64", dim=64):
    """The collection, reused when it holds exactly `rows` rows (seeding takes minutes)."""
    c = client(A)
    if c.has_collection(name):
        c.load_collection(name)
        got = c.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
        if got == rows:
            log(f"reusing `{name}` ({rows:,} rows)")
            return
        c.drop_collection(name)
    s = c.create_schema(auto_id=False, enable_dynamic_field=True)
    if pk == "varchar":
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=32)
    else:
        s.add_field("pk", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("title", DataType.VARCHAR, max_length=256)
    s.add_field("meta", DataType.JSON)
    s.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=16)
    idx = c.prepare_index_params()
    idx.add_index("vec", index_type="IVF_FLAT", metric_type="L2", params={"nlist": 128})
    c.create_collection(name, schema=s, index_params=idx, consistency_level="Strong")
    c.create_partition(name, PARTS[1])
    rnd = random.Random(1)
    t0 = time.monotonic()
    batch = 5000
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        data = []
        for i in range(start, start + n):
            data.append({
                # Spread keys so that the key space is not a dense 0..rows range.
                "pk": f"k{i * 7919 % (rows * 13):012d}" if pk == "varchar" else i * 3 + 1,
                "vec": [rnd.random() for _ in range(dim)],
                "title": f"title {i} " + "x" * rnd.randrange(60),
                "meta": {"n": i, "tags": ["a", "b"][: i % 3], "w": rnd.random()},
                "tags": [rnd.randrange(1000) for _ in range(i % 8)],
                "extra": f"dyn-{i}",
            })
        c.insert(name, data, partition_name=PARTS[(start // batch) % 2])
        if (start // batch) % 20 == 0:
            log(f"  {start + n:,} rows ({time.monotonic() - t0:.0f} s)")
    c.flush(name)
    settle(c, name)
    c.load_collection(name)
    log(f"seeded `{name}` in {time.monotonic() - t0:.0f} s")


class Cpu:
    """CPU seconds of planrun (the child) and of the Milvus processes while a run goes on."""

    def __init__(self):
        self.milvus = [p for p in os.listdir("/proc") if p.isdigit() and self._is_milvus(p)]

    @staticmethod
    def _is_milvus(pid):
        try:
            return b"milvus" in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            return False

    @staticmethod
    def ticks(pid):
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        except OSError:
            return 0

    def milvus_ticks(self):
        return sum(self.ticks(p) for p in self.milvus)


def iterate(name, lo=None, hi=None):
    c = client(A)
    expr = " and ".join(x for x in (lo and f"pk >= {lo}", hi and f"pk < {hi}") if x)
    it = c.query_iterator(name, batch_size=16384, filter=expr,
                          output_fields=["pk", "vec", "title", "meta", "tags", "extra"])
    n = 0
    while rows := it.next():
        n += len(rows)
    it.close()
    return n


def pymilvus_run(name, rows, readers):
    cpu = Cpu()
    m0, t0 = cpu.milvus_ticks(), time.monotonic()
    if readers == 1:
        n = iterate(name)
    else:
        # int64 keys are i * 3 + 1: split the key range evenly.
        top = rows * 3 + 1
        cuts = [None] + [top * k // readers for k in range(1, readers)] + [None]
        with ThreadPoolExecutor(readers) as ex:
            n = sum(ex.map(lambda i: iterate(name, cuts[i], cuts[i + 1]), range(readers)))
    wall = time.monotonic() - t0
    if n != rows:
        raise SystemExit(f"pymilvus read {n} rows, expected {rows}")
    return wall, (cpu.milvus_ticks() - m0) / os.sysconf("SC_CLK_TCK")


def planrun_run(binary, work, name, rows, readers, tag):
    plan, state = write_plan(work, tag, f"""
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{name}"]
to = "bucket_a:bench-rows-read/{tag}"
mode = "rows"
""", A)
    if readers:  # 0: the plan says nothing (the default, or a planrun without the setting)
        text = open(plan).read()
        open(plan, "w").write(text.replace("concurrency = 4\n", f"concurrency = 4\nreaders = {readers}\n"))
    cpu = Cpu()
    m0 = cpu.milvus_ticks()
    r = Run(binary, plan, os.path.join(work, f"{tag}.log"))
    shutil.rmtree(state, ignore_errors=True)
    # Only the read is timed: the backup goes, so that the next run (or invocation) can write it.
    delete_prefix(A["bucket"], f"bench-rows-read/{tag}")
    if r.rc != 0:
        raise SystemExit(f"planrun {tag} failed (exit {r.rc}):\n{r.text[-3000:]}")
    got = sum(e.get("rows", 0) for _, e in r.events if e.get("event") == "progress")
    read = r.phases().get("read")
    return read, r.cpu_s, (cpu.milvus_ticks() - m0) / os.sysconf("SC_CLK_TCK"), r.wall, got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--planrun", required=True)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readers", default="1,2", help="planrun settings.readers values to time")
    ap.add_argument("--skip-pymilvus", action="store_true")
    a = ap.parse_args()
    name = f"bench_rows_read_{a.rows}"
    seed(name, a.rows)
    work = tempfile.mkdtemp(prefix="rows-read-")
    results = {}
    readers = [int(x) for x in a.readers.split(",")]
    for i in range(a.rounds):
        for k in readers:
            read, cpu_s, mil_s, wall, _ = planrun_run(a.planrun, work, name, a.rows, k,
                                                      f"r{i}-{k}")
            log(f"round {i}: planrun readers={k}: read {read:.1f} s (wall {wall:.1f} s), "
                f"planrun CPU {cpu_s:.1f} s, Milvus CPU {mil_s:.1f} s")
            results.setdefault(f"planrun readers={k}", []).append(read)
        if not a.skip_pymilvus:
            for k in (1, 2):
                wall, mil_s = pymilvus_run(name, a.rows, k)
                log(f"round {i}: pymilvus {k} iterator(s): {wall:.1f} s, Milvus CPU {mil_s:.1f} s")
                results.setdefault(f"pymilvus {k} iterator(s)", []).append(wall)
    shutil.rmtree(work, ignore_errors=True)
    for k, v in results.items():
        print(f"{k:28} median {statistics.median(v):6.1f} s  ({', '.join(f'{x:.1f}' for x in v)})")


if __name__ == "__main__":
    main()
