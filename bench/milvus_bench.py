"""Benchmarks 3, 4 and 7: planrun against the pymilvus (+ boto3) scripts users write today, on the
two Milvus 2.3.5 servers and Milvus Lite of scripts/services.sh (see docs/benchmarks.md).

3. Binlog migration of one collection from Milvus A to Milvus B through the seed scenario's
   buckets (backup into bucket-b, restore on B): planrun's plan vs a script doing the same steps
   (flush, copy the segments' binlogs with boto3, bulk-insert them with backup=true, index, load).
4. Rows mode: planrun's `mode = "rows"` backup and restore vs a script that reads with
   `query_iterator` and writes with `insert`, from A to B and from A to Lite.
7. Many small collections from A to B with the seed's three steps (backup into bucket-a, copy to
   bucket-b, restore on B with a suffix): planrun with default settings vs the benchmark 3 script
   looped over the collections one at a time vs planrun with `pipeline = false`.

Both sides of a comparison run alternately in one invocation; results are checked (row counts)
before they count. Run through bench/run.sh.
"""

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

# The ORM calls (do_bulk_insert, wait_for_index_building_complete) are what users of Milvus 2.3
# write; pymilvus 3 warns about each call.
warnings.filterwarnings("ignore", message=".*ORM-style PyMilvus API.*")

from pymilvus import DataType, MilvusClient, connections, utility  # noqa: E402

# After the import, which sets pymilvus's own level (its iterator warns about 2.3.5 on each run).
logging.getLogger("pymilvus").setLevel(logging.ERROR)

A = {"uri": "http://127.0.0.1:19530", "token": "root:Milvus", "bucket": "bucket-a", "root": "files"}
B = {"uri": "http://127.0.0.1:19540", "token": "", "bucket": "bucket-b", "root": "files"}
LITE = {"uri": "http://127.0.0.1:19560", "token": ""}
S3 = "http://127.0.0.1:9000"
INDEX = {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": 128}}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def client(inst):
    return MilvusClient(uri=inst["uri"], token=inst["token"], timeout=600)


def schema(c, dim):
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("pk", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("cat", DataType.INT32)
    return s


def index_params(c):
    p = c.prepare_index_params()
    p.add_index("vec", index_name="vec_idx", **INDEX)
    return p


def count(c, name):
    return c.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]


def mixed_schema(c, dim):
    """Benchmark 8's second collection: beside the vectors a JSON field, an INT64 array and the
    dynamic field (two keys per row)."""
    s = c.create_schema(auto_id=False, enable_dynamic_field=True)
    s.add_field("pk", DataType.INT64, is_primary=True)
    s.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
    s.add_field("cat", DataType.INT32)
    s.add_field("meta", DataType.JSON)
    s.add_field("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8)
    return s


def plain_row(i, vec):
    return {"pk": i, "vec": vec, "cat": i % 100}


def mixed_row(i, vec):
    return {"pk": i, "vec": vec, "cat": i % 100,
            "meta": {"k": i % 7, "name": f"row-{i}", "odd": bool(i % 2)},
            "tags": list(range(i % 8, i % 8 + i % 5)),
            "score": (i % 1000) / 10, "label": f"l{i % 13}"}


def seed(name, rows, dim, log_every=200_000, mixed=False):
    """A collection on Milvus A with `rows` rows of random `dim`-dimensional vectors, flushed,
    indexed and loaded. Kept between runs (seeding 1M rows takes minutes): reused when it holds
    exactly `rows` rows. `mixed`: the schema of `mixed_schema`."""
    import numpy as np

    c = client(A)
    if c.has_collection(name):
        c.load_collection(name)
        if count(c, name) == rows:
            log(f"reusing `{name}` on Milvus A ({rows:,} rows)")
            return
        c.drop_collection(name)
    log(f"seeding `{name}` on Milvus A: {rows:,} rows x {dim} dims")
    c.create_collection(name, schema=(mixed_schema if mixed else schema)(c, dim),
                        index_params=index_params(c), consistency_level="Strong", shards_num=1)
    rng = np.random.default_rng(3)
    row = mixed_row if mixed else plain_row
    batch = 20_000
    t0 = time.monotonic()
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        vecs = rng.random((n, dim), dtype=np.float32)
        c.insert(name, [row(start + i, vecs[i]) for i in range(n)])
        if (start + n) % log_every == 0:
            log(f"  {start + n:,} rows ({time.monotonic() - t0:.0f} s)")
    c.flush(name)
    connections.connect(alias="seed", uri=A["uri"], token=A["token"])
    utility.wait_for_index_building_complete(name, using="seed")
    settle(c, name)
    c.load_collection(name)
    got = count(c, name)
    if got != rows:
        raise SystemExit(f"seeding `{name}` left {got} rows, expected {rows}")
    log(f"seeded `{name}` in {time.monotonic() - t0:.0f} s")


def segments(c, name):
    return c._get_connection().get_persistent_segment_infos(name)


def settle(c, name, quiet=15, limit=600):
    """Waits until the set of flushed segments stops changing (auto-compaction after seeding),
    so that every round migrates the same segments."""
    last, since, t0 = None, time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < limit:
        now = sorted(s.segmentID for s in segments(c, name))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(2)


# ---------------------------------------------------------------------------------------------
# planrun


PLAN_HEAD = """version = 1
name = "{name}"

[settings]
concurrency = 4
state_dir = "{state}"

[instances.milvus_a]
type = "milvus"
uri = "{a_uri}"
user = "root"
password = "Milvus"
data = "bucket_a:files"

[instances.target]
type = "milvus"
uri = "{t_uri}"
{t_data}
[buckets.bucket_a]
type = "s3"
endpoint = "{s3}"
bucket = "bucket-a"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

[buckets.bucket_b]
type = "s3"
endpoint = "{s3}"
bucket = "bucket-b"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

[buckets.local]
type = "local"
path = "{local}"
"""

PLAN_STEPS = """
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{coll}"]
to = "{to}"
mode = "{mode}"

[steps.restore]
type = "restore"
instance = "target"
from = "{to}"
rename = {{ {coll} = "{target}" }}
"""


class Run:
    """One `planrun apply` with JSON events on stderr, each stamped when it arrived."""

    def __init__(self, binary, plan, log_path):
        self.events = []
        cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", log_path + ".time",
               binary, "apply", "--yes", "--progress", "json", plan]
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        with open(log_path, "w") as out:
            for line in p.stderr:
                out.write(line)
                try:
                    self.events.append((time.monotonic() - t0, json.loads(line)))
                except ValueError:
                    pass
        p.wait()
        self.wall = time.monotonic() - t0
        self.rc = p.returncode
        rss, user, sys_ = open(log_path + ".time").read().split()[-3:]
        self.rss_mib, self.cpu_s = int(rss) / 1024, float(user) + float(sys_)
        self.text = open(log_path).read()

    def phases(self):
        """Seconds per phase: the engine's own `phase` events, plus each step's wall time."""
        out = {}
        started = {}
        for t, e in self.events:
            if e["event"] == "phase":
                out[e["phase"]] = out.get(e["phase"], 0) + e["seconds"]
            elif e["event"] == "step_started":
                started[e["step"]] = t
            elif e["event"] == "step_finished":
                out[f"step {e['step']}"] = t - started[e["step"]]
        return out


def write_plan(work, tag, steps, target_inst=None):
    """Writes `<work>/<tag>.toml`: Milvus A, the target instance (B, with its `data`, unless
    `target_inst` says otherwise), the buckets and `steps` (TOML). Its path and its state dir."""
    target_inst = target_inst or B
    state = tempfile.mkdtemp(prefix="state-", dir=work)
    plan = os.path.join(work, f"{tag}.toml")
    t_data = 'data = "bucket_b:files"\n' if target_inst is B else ""
    os.makedirs(os.path.join(work, "local"), exist_ok=True)
    with open(plan, "w") as f:
        f.write(PLAN_HEAD.format(name=tag, state=state, a_uri=A["uri"], t_uri=target_inst["uri"],
                                 t_data=t_data, s3=S3, local=os.path.join(work, "local")))
        f.write(steps)
    return plan, state


def planrun_migrate(binary, work, tag, coll, target, mode, target_inst, to, method=None):
    steps = PLAN_STEPS.format(coll=coll, to=to, mode=mode, target=target)
    if method:
        steps += f'method = "{method}"\n'
    plan, state = write_plan(work, tag, steps, target_inst)
    r = Run(binary, plan, os.path.join(work, f"{tag}.log"))
    shutil.rmtree(state, ignore_errors=True)
    if r.rc != 0:
        raise SystemExit(f"planrun {tag} failed (exit {r.rc}):\n{r.text[-3000:]}")
    return r


# ---------------------------------------------------------------------------------------------
# The scripts a user writes today


def s3():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=S3, region_name="us-east-1",
                        aws_access_key_id="GK706c616e72756e2d64656d6f", aws_secret_access_key="706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c",
                        config=Config(max_pool_connections=32))


def script_binlog(coll, target, prefix, dim, stage=None):
    """Flush, copy each live segment's insert and delta logs into bucket-b with boto3 (16
    copies at a time), bulk-insert them on B with backup=true, index, load. Returns seconds per
    phase. With `stage` (a prefix in bucket-a), the binlogs are first copied there (the backup)
    and from there to bucket-b, as the seed's backup and copy steps do (benchmark 7)."""
    phases = {}
    t = time.monotonic()

    def lap(name):
        nonlocal t
        now = time.monotonic()
        phases[name] = now - t
        t = now

    a, b = client(A), client(B)
    a.flush(coll)
    lap("flush")
    cid = a.describe_collection(coll)["collection_id"]
    segs = [s for s in segments(a, coll) if s.num_rows > 0]
    store = s3()
    jobs, dirs = [], []
    for s in segs:
        seg_dirs = []
        for kind in ("insert_log", "delta_log"):
            src = f"{A['root']}/{kind}/{cid}/{s.partitionID}/{s.segmentID}/"
            rel = f"{kind}/{cid}/{s.partitionID}/{s.segmentID}/"
            for page in store.get_paginator("list_objects_v2").paginate(Bucket=A["bucket"], Prefix=src):
                jobs += [(o["Key"], rel + o["Key"][len(src):]) for o in page.get("Contents", [])]
            seg_dirs.append(f"{prefix}/{rel}")
        dirs.append(seg_dirs)

    def copier(src_bucket, dst_bucket, dst_prefix, staged):
        def copy(job):
            src_key = f"{stage}/{job[1]}" if staged else job[0]
            store.copy_object(Bucket=dst_bucket, Key=f"{dst_prefix}/{job[1]}",
                              CopySource={"Bucket": src_bucket, "Key": src_key})
        return copy

    with ThreadPoolExecutor(16) as ex:
        if stage is None:
            list(ex.map(copier(A["bucket"], B["bucket"], prefix, False), jobs))
            lap("copy")
        else:
            list(ex.map(copier(A["bucket"], A["bucket"], stage, False), jobs))
            lap("backup copy")
            list(ex.map(copier(A["bucket"], B["bucket"], prefix, True), jobs))
            lap("copy to bucket-b")
    b.create_collection(target, schema=schema(b, dim), consistency_level="Strong", shards_num=1)
    connections.connect(alias="bench-b", uri=B["uri"])
    tasks = [utility.do_bulk_insert(target, files=d, partition_name="_default", using="bench-b",
                                    backup="true") for d in dirs]
    while True:
        states = [utility.get_bulk_insert_state(t, using="bench-b") for t in tasks]
        if any(s.state_name == "Failed" for s in states):
            raise SystemExit(f"bulk insert failed: {[s.failed_reason for s in states]}")
        if all(s.state_name == "Completed" for s in states):
            break
        time.sleep(1)
    lap("import")
    b.create_index(target, index_params(b))
    utility.wait_for_index_building_complete(target, using="bench-b")
    lap("index")
    b.load_collection(target)
    lap("load")
    # pymilvus's wait above returns long before Milvus 2.3.5 has built the index (the load does
    # not wait for it either): wait as planrun does, until every row is indexed.
    wait_indexed(b, target)
    lap("index build after load")
    return phases, len(jobs)


def wait_indexed(c, name):
    while True:
        d = c.describe_index(name, "vec_idx")
        if d.get("state") == "Failed":
            raise SystemExit(f"index of {name} failed: {d}")
        if d.get("state") == "Finished" and d["indexed_rows"] >= d["total_rows"] \
                and not d.get("pending_index_rows"):
            return
        time.sleep(0.5)


def script_rows(src, dst_inst, coll, target, dim, batch):
    """Create the target (indexed and loaded), then query_iterator over the source and insert
    every batch into the target."""
    s, d = client(A), client(dst_inst)
    d.create_collection(target, schema=schema(d, dim), index_params=index_params(d),
                        consistency_level="Strong")
    it = s.query_iterator(coll, batch_size=batch, output_fields=["pk", "vec", "cat"])
    n = 0
    while True:
        rows = it.next()
        if not rows:
            break
        d.insert(target, rows)
        n += len(rows)
    it.close()
    return n


# ---------------------------------------------------------------------------------------------
# Benchmarks


def drop(inst, name):
    c = client(inst)
    if c.has_collection(name):
        c.drop_collection(name)


def delete_prefix(bucket, prefix):
    store = s3()
    keys = []
    for page in store.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        store.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})


def check_rows(inst, name, rows, who):
    c = client(inst)
    c.load_collection(name)
    got = count(c, name)
    if got != rows:
        raise SystemExit(f"{who}: `{name}` holds {got} rows, expected {rows}")


def binlog_benchmark(args, binary, work, alternate):
    coll = f"bench_binlog_{args.binlog_rows}_{args.dim}"
    seed(coll, args.binlog_rows, args.dim)
    tag = os.getpid()

    def run_planrun(i):
        target, prefix = f"{coll}_pr{i}", f"backup/bench-{tag}-pr{i}"
        drop(B, target)
        r = planrun_migrate(binary, work, f"b3-planrun-{i}", coll, target, "binlog", B,
                            f"bucket_b:{prefix}")
        check_rows(B, target, args.binlog_rows, "planrun")
        drop(B, target)
        delete_prefix(B["bucket"], prefix)
        log(f"binlog round {i}: planrun {r.wall:.1f} s ({fmt(r.phases())}), CPU {r.cpu_s:.1f} s")
        return {"wall": r.wall, "phases": r.phases(), "cpu_s": r.cpu_s, "rss_mib": r.rss_mib}

    def run_script(i):
        target, prefix = f"{coll}_py{i}", f"backup/bench-{tag}-py{i}"
        drop(B, target)
        t0 = time.monotonic()
        phases, files = script_binlog(coll, target, prefix, args.dim)
        wall = time.monotonic() - t0
        check_rows(B, target, args.binlog_rows, "script")
        drop(B, target)
        delete_prefix(B["bucket"], prefix)
        log(f"binlog round {i}: script {wall:.1f} s ({fmt(phases)}), {files} files")
        return {"wall": wall, "phases": phases, "files": files}

    ra, rb = alternate(args.milvus_rounds, run_planrun, run_script)
    tp = statistics.median(r["wall"] for r in ra)
    ts = statistics.median(r["wall"] for r in rb)
    return {"rows": args.binlog_rows, "dim": args.dim, "rounds": args.milvus_rounds,
            "planrun": ra, "script": rb, "planrun_median_s": tp, "script_median_s": ts,
            "ratio": tp / ts, "files": rb[0]["files"]}


def rows_benchmark(args, binary, work, alternate):
    coll = f"bench_rows_{args.rows_rows}_{args.dim}"
    seed(coll, args.rows_rows, args.dim)
    results = {}
    for label, inst in (("2.3.5 -> 2.3.5", B), ("2.3.5 -> Lite", LITE)):
        def run_planrun(i, inst=inst):
            target = f"{coll}_pr{i}"
            drop(inst, target)
            r = planrun_migrate(binary, work, f"b4-planrun-{i}", coll, target, "rows", inst,
                                f"local:rows-{i}")
            check_rows(inst, target, args.rows_rows, "planrun")
            drop(inst, target)
            shutil.rmtree(os.path.join(work, "local", f"rows-{i}"), ignore_errors=True)
            log(f"rows {label} round {i}: planrun {r.wall:.1f} s ({fmt(r.phases())}), "
                f"CPU {r.cpu_s:.1f} s, RSS {r.rss_mib:.0f} MiB")
            return {"wall": r.wall, "phases": r.phases(), "cpu_s": r.cpu_s, "rss_mib": r.rss_mib}

        def run_script(i, inst=inst):
            target = f"{coll}_py{i}"
            drop(inst, target)
            t0 = time.monotonic()
            n = script_rows(A, inst, coll, target, args.dim, args.iterator_batch)
            wall = time.monotonic() - t0
            if n != args.rows_rows:
                raise SystemExit(f"script read {n} rows, expected {args.rows_rows}")
            # planrun's restore ends with an exact count(*); the script's time does not include
            # one, so the count is timed apart (on Lite it waits for the inserted rows' index).
            t1 = time.monotonic()
            check_rows(inst, target, args.rows_rows, "script")
            counted = time.monotonic() - t1
            drop(inst, target)
            log(f"rows {label} round {i}: script {wall:.1f} s (+ {counted:.1f} s for a count)")
            return {"wall": wall, "count_s": counted}

        ra, rb = alternate(args.milvus_rounds, run_planrun, run_script)
        tp = statistics.median(r["wall"] for r in ra)
        ts = statistics.median(r["wall"] for r in rb)
        tc = statistics.median(r["wall"] + r["count_s"] for r in rb)
        results[label] = {"rows": args.rows_rows, "planrun": ra, "script": rb,
                          "planrun_rows_per_s": args.rows_rows / tp,
                          "script_rows_per_s": args.rows_rows / ts, "ratio": ts / tp,
                          "ratio_with_count": tc / tp, "batch": args.iterator_batch}
    return results


# ---------------------------------------------------------------------------------------------
# Benchmark 7: many small collections, the seed's three steps


MANY_DIM = 8

MANY_PLAN = """version = 1
name = "{name}"

[settings]
state_dir = "{state}"
{settings}
[instances.milvus_a]
type = "milvus"
uri = "{a_uri}"
user = "root"
password = "Milvus"
data = "bucket_a:files"

[instances.milvus_b]
type = "milvus"
uri = "{b_uri}"
data = "bucket_b:files"

[buckets.bucket_a]
type = "s3"
endpoint = "{s3}"
bucket = "bucket-a"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

[buckets.bucket_b]
type = "s3"
endpoint = "{s3}"
bucket = "bucket-b"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{prefix}_*"]
to = "bucket_a:{backup}"

[steps.copy]
type = "copy"
from = "bucket_a:{backup}"
to = "bucket_b:{backup}"

[steps.restore]
type = "restore"
instance = "milvus_b"
from = "bucket_b:{backup}"
suffix = "{suffix}"
"""


def seed_many(prefix, n, rows, dim, threads=4):
    """`n` collections `<prefix>_<k>` on Milvus A, `rows` rows each, flushed, indexed, loaded
    (Strong consistency, one shard), created `threads` at a time. Waits until compaction stops
    changing their segments and checks every row count."""
    import numpy as np

    names = [f"{prefix}_{k:03d}" for k in range(n)]
    log(f"seeding {n} collections `{prefix}_*` on Milvus A: {rows:,} rows x {dim} dims each")
    t0 = time.monotonic()

    def one(k):
        name, c = names[k], client(A)
        c.create_collection(name, schema=schema(c, dim), index_params=index_params(c),
                            consistency_level="Strong", shards_num=1)
        vecs = np.random.default_rng(7000 + k).random((rows, dim), dtype=np.float32)
        for start in range(0, rows, 20_000):
            c.insert(name, [{"pk": i, "vec": vecs[i], "cat": i % 100}
                            for i in range(start, min(rows, start + 20_000))])
        c.flush(name)
        wait_indexed(c, name)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, range(n)))
    c = client(A)
    settle_many(c, names)
    for name in names:
        c.load_collection(name)
        got = count(c, name)
        if got != rows:
            raise SystemExit(f"seeding `{name}` left {got} rows, expected {rows}")
    log(f"seeded {n} collections in {time.monotonic() - t0:.0f} s")
    return names


def settle_many(c, names, quiet=15, limit=600):
    """`settle` for many collections at once: until none of their segment sets changes."""
    last, since, t0 = None, time.monotonic(), time.monotonic()
    while time.monotonic() - t0 < limit:
        now = [sorted(s.segmentID for s in segments(c, name)) for name in names]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(2)


def many_benchmark(args, binary, work):
    """Benchmark 7: `args.collections` collections of `args.rows` rows from A to B with the
    seed's backup, copy and restore: planrun (default settings: pipelined), a script migrating
    one collection after the other, and planrun with `pipeline = false` (each step waits for the
    whole step before it)."""
    n, rows = args.collections, args.rows
    tag = f"{os.getpid()}_{int(time.time()) % 1_000_000}"
    prefix = f"bench_many_{tag}"
    names = []
    try:
        names = seed_many(prefix, n, rows, MANY_DIM)

        def restored(suffix, who):
            """Checks every restored collection against its source, then drops it."""
            b = client(B)
            extra = [x for x in b.list_collections()
                     if x.startswith(prefix) and x.endswith(suffix) and x[:-len(suffix)] not in names]
            if extra:
                raise SystemExit(f"{who}: restored collections without a source: {extra}")
            total = 0
            for name in names:
                check_rows(B, name + suffix, rows, who)
                total += rows
            return len(names), total

        def cleanup(suffix, backup):
            for name in names:
                drop(B, name + suffix)
            delete_prefix(A["bucket"], backup)
            delete_prefix(B["bucket"], backup)

        def run_planrun(i, label, settings):
            suffix, backup = f"_r{i}{label}", f"backup/bench-many-{tag}-{i}{label}"
            cleanup(suffix, backup)
            state = tempfile.mkdtemp(prefix="state-", dir=work)
            plan = os.path.join(work, f"b7-{label}-{i}.toml")
            with open(plan, "w") as f:
                f.write(MANY_PLAN.format(name=f"b7-{label}-{i}", state=state, settings=settings,
                                         a_uri=A["uri"], b_uri=B["uri"], s3=S3, prefix=prefix,
                                         backup=backup, suffix=suffix))
            r = Run(binary, plan, os.path.join(work, f"b7-{label}-{i}.log"))
            shutil.rmtree(state, ignore_errors=True)
            if r.rc != 0:
                raise SystemExit(f"planrun b7-{label}-{i} failed (exit {r.rc}):\n{r.text[-3000:]}")
            checked = restored(suffix, f"planrun ({label})")
            cleanup(suffix, backup)
            log(f"many round {i}: planrun {label} {r.wall:.1f} s ({fmt(r.phases())}), "
                f"CPU {r.cpu_s:.1f} s, RSS {r.rss_mib:.0f} MiB; {checked[0]} collections, "
                f"{checked[1]:,} rows checked")
            return {"wall": r.wall, "phases": r.phases(), "cpu_s": r.cpu_s, "rss_mib": r.rss_mib,
                    "checked": checked}

        def run_script(i):
            suffix, backup = f"_r{i}py", f"backup/bench-many-{tag}-{i}py"
            cleanup(suffix, backup)
            phases, files = {}, 0
            t0 = time.monotonic()
            for name in names:
                p, f = script_binlog(name, name + suffix, backup, MANY_DIM, stage=backup)
                files += f
                for k, v in p.items():
                    phases[k] = phases.get(k, 0) + v
            wall = time.monotonic() - t0
            checked = restored(suffix, "script")
            cleanup(suffix, backup)
            log(f"many round {i}: script {wall:.1f} s ({fmt(phases)}), {files} files; "
                f"{checked[0]} collections, {checked[1]:,} rows checked")
            return {"wall": wall, "phases": phases, "files": files, "checked": checked}

        sides = {"planrun": lambda i: run_planrun(i, "pr", ""),
                 "script": run_script,
                 "planrun_np": lambda i: run_planrun(i, "np", "pipeline = false\n")}
        out = {k: [] for k in sides}
        order = list(sides)
        for i in range(args.many_rounds):
            for k in order[i % 3:] + order[:i % 3]:
                out[k].append(sides[k](i))
        med = {k: statistics.median(r["wall"] for r in v) for k, v in out.items()}
        return {"collections": n, "rows": rows, "dim": MANY_DIM, "rounds": args.many_rounds,
                **out, "median_s": med, "ratio_script": med["planrun"] / med["script"],
                "ratio_np": med["planrun"] / med["planrun_np"]}
    finally:
        a = client(A)
        for name in names:
            if a.has_collection(name):
                a.drop_collection(name)

# ---------------------------------------------------------------------------------------------
# Benchmark 8: rows mode by import (issue 21)


def read_alone(coll, rows, threads, batch=16384):
    """The source read and nothing written: pymilvus query_iterator over the whole collection
    (every field), one iterator per thread on disjoint primary-key ranges of [0, rows). Returns
    the rows read (every row is a Python dict, as a pymilvus reader gets them)."""
    bounds = [rows * k // threads for k in range(threads + 1)]

    def one(k):
        c = client(A)
        flt = f"pk >= {bounds[k]} and pk < {bounds[k + 1]}" if threads > 1 else ""
        it = c.query_iterator(coll, batch_size=batch, filter=flt, output_fields=["*"])
        n = 0
        while True:
            got = it.next()
            if not got:
                break
            n += len(got)
        it.close()
        return n

    if threads == 1:
        return one(0)
    with ThreadPoolExecutor(threads) as ex:
        return sum(ex.map(one, range(threads)))


def import_benchmark(args, binary, work):
    """Benchmark 8: a collection from Milvus A to Milvus B by planrun's rows mode with import
    (the backup in bucket-b, B's own bucket: nothing staged), the same with method = "insert",
    planrun's binlog mode, the tuned script (query_iterator(batch_size=16384) + insert), and the
    source read alone (query_iterator, 1, 2 and 4 iterators on disjoint key ranges). Every side
    runs once per round, the order rotated round by round. Then the same for a collection with
    JSON, an INT64 array and the dynamic field (rows by import against the read alone)."""
    tag = os.getpid()
    out = {}
    variants = [v for v in args.b8_variants.split(",") if v]
    for variant in variants:
        mixed = variant == "mixed"
        rows = args.b8_mixed_rows if mixed else args.b8_rows
        # The vectors-only collection is benchmark 3's (same name, schema and seed): seeded once.
        coll = f"bench_mixed_{rows}_{args.dim}" if mixed else f"bench_binlog_{rows}_{args.dim}"
        seed(coll, rows, args.dim, mixed=mixed)

        def planrun_side(name, mode, method):
            def run(i):
                target, prefix = f"{coll}_{name}{i}", f"backup/bench8-{tag}-{name}{i}"
                drop(B, target)
                delete_prefix(B["bucket"], prefix)
                r = planrun_migrate(binary, work, f"b8-{variant}-{name}-{i}", coll, target, mode,
                                    B, f"bucket_b:{prefix}", method=method)
                ph = r.phases()
                want = {"import": "import", "insert": "insert"}.get(method)
                if want and want not in ph:
                    raise SystemExit(f"planrun {name}: no `{want}` phase in {sorted(ph)}")
                check_rows(B, target, rows, f"planrun {name}")
                drop(B, target)
                delete_prefix(B["bucket"], prefix)
                log(f"b8 {variant} round {i}: {name} {r.wall:.1f} s ({fmt(ph)}), "
                    f"CPU {r.cpu_s:.1f} s, RSS {r.rss_mib:.0f} MiB")
                return {"wall": r.wall, "phases": ph, "cpu_s": r.cpu_s, "rss_mib": r.rss_mib}
            return run

        def script_side(i):
            target = f"{coll}_py{i}"
            drop(B, target)
            t0 = time.monotonic()
            n = script_rows(A, B, coll, target, args.dim, 16384)
            wall = time.monotonic() - t0
            if n != rows:
                raise SystemExit(f"script read {n} rows, expected {rows}")
            check_rows(B, target, rows, "script")
            drop(B, target)
            log(f"b8 {variant} round {i}: script {wall:.1f} s")
            return {"wall": wall}

        def read_side(threads):
            def run(i):
                t0 = time.monotonic()
                n = read_alone(coll, rows, threads)
                wall = time.monotonic() - t0
                if n != rows:
                    raise SystemExit(f"read alone ({threads} iterators) read {n} rows, expected {rows}")
                log(f"b8 {variant} round {i}: read alone, {threads} iterator(s) {wall:.1f} s")
                return {"wall": wall}
            return run

        sides = {"rows_import": planrun_side("imp", "rows", "import")}
        if not mixed:
            sides["rows_insert"] = planrun_side("ins", "rows", "insert")
            sides["binlog"] = planrun_side("bin", "binlog", None)
            sides["script"] = script_side
        for n in (1, 2, 4):
            sides[f"read{n}"] = read_side(n)
        only = [s for s in args.b8_sides.split(",") if s] if args.b8_sides else list(sides)
        sides = {k: v for k, v in sides.items() if k in only}
        res = {k: [] for k in sides}
        order = list(sides)
        t0 = time.monotonic()
        for i in range(args.milvus_rounds):
            k = i % len(order)
            for name in order[k:] + order[:k]:
                res[name].append(sides[name](i))
        med = {k: statistics.median(r["wall"] for r in v) for k, v in res.items()}
        reads = {k: v for k, v in med.items() if k.startswith("read")}
        r = {"rows": rows, "dim": args.dim, "collection": coll, "rounds": args.milvus_rounds,
             "order": order, "sides": res, "median_s": med, "window_s": time.monotonic() - t0}
        if reads:
            r["best_read"] = min(reads, key=reads.get)
        imp = med.get("rows_import")
        if imp:
            if "script" in med:
                r["script_vs_import"] = med["script"] / imp          # target >= 2.5
            if "binlog" in med:
                r["import_vs_binlog"] = imp / med["binlog"]          # target <= 1.3
            if "rows_insert" in med:
                r["insert_vs_import"] = med["rows_insert"] / imp
            if reads:
                r["import_vs_best_read"] = imp / reads[r["best_read"]]  # target <= 1.15
                if "read1" in reads:
                    r["import_vs_read1"] = imp / reads["read1"]
        out[variant] = r
    return out


def fmt(phases):
    return ", ".join(f"{k} {v:.1f}" for k, v in phases.items())


def report_rows(results):
    rows = []
    if "binlog" in results:
        r = results["binlog"]
        rows.append((f"3 binlog migration, {r['rows']:,} rows x {r['dim']} dims, A -> B",
                     f"{r['planrun_median_s']:.1f} s", f"pymilvus+boto3 script {r['script_median_s']:.1f} s",
                     f"planrun takes {r['ratio']:.2f}x the script's time", "<= 0.8x"))
        for who in ("planrun", "script"):
            med = {}
            for k in r[who][0]["phases"]:
                med[k] = statistics.median(x["phases"].get(k, 0) for x in r[who])
            rows.append((f"3 phases, {who} (median s)", fmt(med), "-", "-", "-"))
        rows.append(("3 planrun's own CPU (user+sys)",
                     f"{statistics.median(x['cpu_s'] for x in r['planrun']):.1f} s", "-", "-", "-"))
    for label, r in results.get("rows", {}).items():
        rows.append((f"4 rows mode {label}, {r['rows']:,} rows",
                     f"{r['planrun_rows_per_s']:,.0f} rows/s",
                     f"query_iterator(batch_size={r['batch']})+insert "
                     f"{r['script_rows_per_s']:,.0f} rows/s",
                     f"{r['ratio']:.2f}x", ">= 2x" if r["batch"] > 1000 else ">= 3x"))
        rows.append((f"4 the same, the script's time with a count(*) as planrun ends", "-", "-",
                     f"{r['ratio_with_count']:.2f}x", "-"))
    if "many" in results:
        r = results["many"]
        m = r["median_s"]
        rows.append((f"7 {r['collections']} collections x {r['rows']:,} rows, A -> B, seed's 3 steps",
                     f"{m['planrun']:.1f} s", f"script, one collection at a time {m['script']:.1f} s",
                     f"planrun takes {r['ratio_script']:.2f}x the script's time", "-"))
        rows.append(("7 the same, planrun with `pipeline = false`", f"{m['planrun_np']:.1f} s", "-",
                     f"planrun takes {r['ratio_np']:.2f}x its time without pipelining", "-"))
        for who in ("planrun", "planrun_np", "script"):
            med = {}
            for k in r[who][0]["phases"]:
                med[k] = statistics.median(x["phases"].get(k, 0) for x in r[who])
            what = {"planrun": "planrun", "planrun_np": "planrun pipeline = false",
                    "script": "script"}[who]
            rows.append((f"7 phases, {what} (median s, summed over collections)", fmt(med),
                         "-", "-", "-"))

        def checked(who):
            c, n = r[who][-1]["checked"]
            return f"{c} / {r['collections']} collections, {n:,} rows"
        rows.append(("7 restored rows checked (count(*) = source)", checked("planrun"),
                     f"script {checked('script')}", f"pipeline = false: {checked('planrun_np')}", "-"))
    if "import" in results:
        for variant, r in results["import"].items():
            m, n = r["median_s"], r["rows"]
            what = {"vectors": f"{n:,} rows x {r['dim']} dims",
                    "mixed": f"{n:,} rows x {r['dim']} dims + JSON, INT64 array, dynamic field"}[variant]
            names = {"rows_import": "planrun rows, import", "rows_insert": "planrun rows, method = insert",
                     "binlog": "planrun binlog", "script": "script, query_iterator(16384) + insert",
                     "read1": "read alone, 1 iterator", "read2": "read alone, 2 iterators",
                     "read4": "read alone, 4 iterators"}
            for side in r["order"]:
                walls = " / ".join(f"{x['wall']:.1f}" for x in r["sides"][side])
                rows.append((f"8 {what}, A -> B: {names[side]}", f"{m[side]:.1f} s ({n / m[side]:,.0f} rows/s)",
                             f"rounds {walls}", "-", "-"))
            for key, label, target in (("script_vs_import", "script time / rows import time", ">= 2.5x"),
                                       ("import_vs_binlog", "rows import time / binlog time", "<= 1.3x"),
                                       ("insert_vs_import", "rows insert time / rows import time", "-"),
                                       ("import_vs_best_read", f"rows import time / best read alone ({r.get('best_read')})", "<= 1.15x"),
                                       ("import_vs_read1", "rows import time / read alone, 1 iterator", "-")):
                if key in r:
                    rows.append((f"8 {variant}: {label}", "-", "-", f"{r[key]:.2f}x", target))
            for side in ("rows_import", "rows_insert", "binlog"):
                if side in r["sides"]:
                    med = {}
                    for k in r["sides"][side][0]["phases"]:
                        med[k] = statistics.median(x["phases"].get(k, 0) for x in r["sides"][side])
                    rows.append((f"8 {variant} phases, {names[side]} (median s)", fmt(med), "-", "-", "-"))
    return rows
