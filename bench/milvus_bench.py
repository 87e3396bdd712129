"""Benchmarks 3 and 4: planrun against the pymilvus (+ boto3) scripts users write today, on the
two Milvus 2.3.5 servers and Milvus Lite of scripts/services.sh (see docs/benchmarks.md).

3. Binlog migration of one collection from Milvus A to Milvus B through the seed scenario's
   buckets (backup into bucket-b, restore on B): planrun's plan vs a script doing the same steps
   (flush, copy the segments' binlogs with boto3, bulk-insert them with backup=true, index, load).
4. Rows mode: planrun's `mode = "rows"` backup and restore vs a script that reads with
   `query_iterator` and writes with `insert`, from A to B and from A to Lite.

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


def seed(name, rows, dim, log_every=200_000):
    """A collection on Milvus A with `rows` rows of random `dim`-dimensional vectors, flushed,
    indexed and loaded. Kept between runs (seeding 1M rows takes minutes): reused when it holds
    exactly `rows` rows."""
    import numpy as np

    c = client(A)
    if c.has_collection(name):
        c.load_collection(name)
        if count(c, name) == rows:
            log(f"reusing `{name}` on Milvus A ({rows:,} rows)")
            return
        c.drop_collection(name)
    log(f"seeding `{name}` on Milvus A: {rows:,} rows x {dim} dims")
    c.create_collection(name, schema=schema(c, dim), index_params=index_params(c),
                        consistency_level="Strong", shards_num=1)
    rng = np.random.default_rng(3)
    batch = 20_000
    t0 = time.monotonic()
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        vecs = rng.random((n, dim), dtype=np.float32)
        c.insert(name, [{"pk": start + i, "vec": vecs[i], "cat": (start + i) % 100}
                        for i in range(n)])
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
access_key_id = "minioadmin"
secret_access_key = "minioadmin"

[buckets.bucket_b]
type = "s3"
endpoint = "{s3}"
bucket = "bucket-b"
region = "us-east-1"
access_key_id = "minioadmin"
secret_access_key = "minioadmin"

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


def planrun_migrate(binary, work, tag, coll, target, mode, target_inst, to):
    state = tempfile.mkdtemp(prefix="state-", dir=work)
    plan = os.path.join(work, f"{tag}.toml")
    t_data = 'data = "bucket_b:files"\n' if target_inst is B else ""
    os.makedirs(os.path.join(work, "local"), exist_ok=True)
    with open(plan, "w") as f:
        f.write(PLAN_HEAD.format(name=tag, state=state, a_uri=A["uri"], t_uri=target_inst["uri"],
                                 t_data=t_data, s3=S3, local=os.path.join(work, "local")))
        f.write(PLAN_STEPS.format(coll=coll, to=to, mode=mode, target=target))
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
                        aws_access_key_id="minioadmin", aws_secret_access_key="minioadmin",
                        config=Config(max_pool_connections=32))


def script_binlog(coll, target, prefix, dim):
    """Flush, copy each live segment's insert and delta logs into bucket-b with boto3 (16
    copies at a time), bulk-insert them on B with backup=true, index, load. Returns seconds per
    phase."""
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
            dst = f"{prefix}/{kind}/{cid}/{s.partitionID}/{s.segmentID}/"
            for page in store.get_paginator("list_objects_v2").paginate(Bucket=A["bucket"], Prefix=src):
                jobs += [(o["Key"], dst + o["Key"][len(src):]) for o in page.get("Contents", [])]
            seg_dirs.append(dst)
        dirs.append(seg_dirs)

    def copy(job):
        store.copy_object(Bucket=B["bucket"], Key=job[1],
                          CopySource={"Bucket": A["bucket"], "Key": job[0]})

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(copy, jobs))
    lap("copy")
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
            check_rows(inst, target, args.rows_rows, "script")
            drop(inst, target)
            log(f"rows {label} round {i}: script {wall:.1f} s")
            return {"wall": wall}

        ra, rb = alternate(args.milvus_rounds, run_planrun, run_script)
        tp = statistics.median(r["wall"] for r in ra)
        ts = statistics.median(r["wall"] for r in rb)
        results[label] = {"rows": args.rows_rows, "planrun": ra, "script": rb,
                          "planrun_rows_per_s": args.rows_rows / tp,
                          "script_rows_per_s": args.rows_rows / ts, "ratio": ts / tp}
    return results


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
                     f"query_iterator+insert {r['script_rows_per_s']:,.0f} rows/s",
                     f"{r['ratio']:.2f}x", ">= 3x"))
    return rows
