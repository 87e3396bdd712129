"""planrun benchmarks against the tools users would otherwise pick (issue 6); see docs/benchmarks.md.

Run through bench/run.sh, which builds planrun in release mode and provides rclone and the S3 server.
Every comparison alternates planrun and its peer round by round and reports medians and ratios;
absolute times on a shared machine are noisy, ratios from the same run are what to compare.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

KIB, MIB, GIB = 1024, 1024**2, 1024**3
ACCESS, SECRET = "minioadmin", "minioadmin"
MAIN_S3 = "http://127.0.0.1:9000"
# Per process: a smoke test may run while a full benchmark is going on the same server.
SRC_BUCKET = f"planrun-bench-{os.getpid()}-src"
DST_BUCKET = f"planrun-bench-{os.getpid()}-dst"
DATA = "data"
BIG = "big"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def s3_client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        config=Config(max_pool_connections=32, retries={"max_attempts": 5}),
    )


def human(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# Data


def binlog_mix(count, max_size, seed=6):
    """Object sizes shaped like Milvus binlogs: mostly small field and stats logs, a tail of
    large vector logs. Deterministic, so every run moves the same bytes."""
    rng = random.Random(seed)
    sizes = []
    for _ in range(count):
        r = rng.random()
        if r < 0.60:
            lo, hi = 4 * KIB, 64 * KIB
        elif r < 0.85:
            lo, hi = 64 * KIB, 1 * MIB
        else:
            lo, hi = 1 * MIB, 8 * MIB
        sizes.append(min(rng.randint(lo, hi), max_size))
    # The extremes of the range are always present.
    sizes[0], sizes[-1] = 4 * KIB, max_size
    return sizes


def binlog_keys(sizes):
    keys = []
    for i, _ in enumerate(sizes):
        seg, field = divmod(i, 20)
        kind = "stats_log" if field == 19 else "insert_log"
        keys.append(f"{kind}/4506/4507/{4600 + seg}/{100 + field}/{470000 + i}")
    return keys


def ensure_bucket(s3, bucket):
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def upload(s3, bucket, prefix, keys, sizes):
    """Single-part PUTs, so every ETag is the content's MD5 (as Milvus's own binlogs are)."""
    pool = os.urandom(9 * MIB)

    def put(i):
        size = sizes[i]
        off = (i * 7919) % (len(pool) - size + 1)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{keys[i]}", Body=pool[off : off + size])

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, range(len(keys))))


def listing(s3, bucket, prefix):
    """(objects, bytes) under prefix/."""
    n = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            n += 1
            total += o["Size"]
    return n, total


def delete_prefix(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


def delete_bucket(s3, bucket):
    try:
        delete_prefix_all(s3, bucket)
        s3.delete_bucket(Bucket=bucket)
    except Exception as e:  # cleanup must not hide the results
        log(f"could not delete bucket {bucket}: {e}")


def delete_prefix_all(s3, bucket):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


# ---------------------------------------------------------------------------------------------
# Running the tools


class Measured:
    def __init__(self, wall, rss_kib, rc, out):
        self.wall, self.rss_kib, self.rc, self.out = wall, rss_kib, rc, out


def measure(cmd, env=None, kill_after=None, log_path=None):
    """Runs cmd; returns wall time, the peak RSS of the process (KiB, from GNU time) and its exit code.
    With kill_after, SIGKILLs it after that many seconds (the resume benchmark)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    rss_file = None
    if kill_after is None:
        # GNU time forks from a small process: a child forked from this Python would carry
        # Python's own RSS as its high-water mark through exec, and wait4 would report that.
        rss_file = tempfile.NamedTemporaryFile(prefix="rss-", delete=False).name
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if kill_after is not None:
        deadline = t0 + kill_after
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    p.wait()
    wall = time.monotonic() - t0
    if log_path:
        out.close()
    text = open(log_path).read() if log_path else ""
    rss = 0
    if rss_file:
        lines = open(rss_file).read().split()
        os.unlink(rss_file)
        rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Measured(wall, rss, p.returncode, text)


def plan_text(name, src_endpoint, src_bucket, src_path, dst_endpoint, dst_bucket, dst_path,
              concurrency, state_dir):
    def bucket(id_, endpoint, b):
        return f"""
[buckets.{id_}]
type = "s3"
endpoint = "{endpoint}"
bucket = "{b}"
region = "us-east-1"
access_key_id = "{ACCESS}"
secret_access_key = "{SECRET}"
"""

    return f"""version = 1
name = "{name}"

[settings]
concurrency = {concurrency}
state_dir = "{state_dir}"
{bucket("src", src_endpoint, src_bucket)}{bucket("dst", dst_endpoint, dst_bucket)}
[steps.copy]
type = "copy"
from = "src:{src_path}"
to = "dst:{dst_path}"
"""


class Planrun:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work

    def copy(self, name, src, dst, concurrency, kill_after=None, state=None, keep=False):
        """src/dst: (endpoint, bucket, path). A fresh state dir per call unless `state` is given."""
        state = state or tempfile.mkdtemp(prefix="state-", dir=self.work)
        plan = os.path.join(self.work, f"{name}.toml")
        with open(plan, "w") as f:
            f.write(plan_text(name, *src, *dst, concurrency, state))
        m = measure(
            [self.binary, "apply", "--yes", "--progress", "plain", plan],
            kill_after=kill_after,
            log_path=os.path.join(self.work, f"{name}.log"),
        )
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
        m.state = state
        m.plan = plan
        return m


    def preview(self, name, src, dst, concurrency):
        """`planrun plan` of the same copy: the preview that `apply` shows before it starts."""
        state = tempfile.mkdtemp(prefix="state-", dir=self.work)
        plan = os.path.join(self.work, f"{name}.toml")
        with open(plan, "w") as f:
            f.write(plan_text(name, *src, *dst, concurrency, state))
        m = measure([self.binary, "plan", plan], log_path=os.path.join(self.work, f"{name}.log"))
        shutil.rmtree(state, ignore_errors=True)
        if m.rc != 0:
            raise SystemExit(f"planrun plan failed (exit {m.rc}):\n{m.out[-2000:]}")
        return m


class Rclone:
    """rclone with remotes from environment variables: no config file is read or written."""

    def __init__(self, work):
        self.work = work

    def env(self, remotes):
        env = dict(os.environ, RCLONE_CONFIG=os.path.join(self.work, "rclone.conf"))
        for name, endpoint in remotes.items():
            p = f"RCLONE_CONFIG_{name.upper()}_"
            env.update({
                p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENDPOINT": endpoint,
                p + "ACCESS_KEY_ID": ACCESS, p + "SECRET_ACCESS_KEY": SECRET,
                p + "REGION": "us-east-1", p + "FORCE_PATH_STYLE": "true",
            })
        return env

    def copy(self, name, src, dst, transfers):
        """src/dst: (endpoint, bucket, path). One remote when the endpoints match, so rclone copies
        server-side, as planrun does."""
        remotes = {"bsrc": src[0], "bdst": dst[0]} if src[0] != dst[0] else {"bsrc": src[0]}
        dst_remote = "bdst" if src[0] != dst[0] else "bsrc"
        cmd = [
            "rclone", "copy", f"bsrc:{src[1]}/{src[2]}", f"{dst_remote}:{dst[1]}/{dst[2]}",
            "--transfers", str(transfers), "--checkers", str(transfers),
            "--s3-upload-concurrency", "4", "-q",
        ]
        return measure(cmd, env=self.env(remotes), log_path=os.path.join(self.work, f"{name}.log"))


def check(m, what, s3, bucket, path, expect):
    if m.rc != 0:
        raise SystemExit(f"{what} failed (exit {m.rc}):\n{m.out[-3000:]}")
    got = listing(s3, bucket, path)
    if got != expect:
        raise SystemExit(f"{what} copied {got[0]} objects ({got[1]} bytes), expected {expect}")


# ---------------------------------------------------------------------------------------------
# Second S3 server


class S3Log:
    """The access log of the main S3 server (moto logs one line per request), when readable."""

    def __init__(self, path):
        self.path = path if path and os.path.exists(path) else ""

    def size(self):
        return os.path.getsize(self.path) if self.path else 0

    def gets(self, start, end, bucket):
        if not self.path:
            return set()
        with open(self.path, errors="replace") as f:
            f.seek(start)
            text = f.read() if end is None else f.read(end - start)
        return {m.group(1) for m in re.finditer(rf'"GET /{bucket}/([^ ?"]+)(?:\?[^ "]*)? HTTP/1\.1" 200', text)}


class Moto:
    """A private moto server on a free loopback port, stopped when the benchmarks end."""

    def __init__(self, python, work):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, "moto2.log")
        moto = os.path.join(os.path.dirname(python), "moto_server")
        self.proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the second moto server did not start; see {self.log_path}")
                time.sleep(0.2)

    def log_size(self):
        return os.path.getsize(self.log_path)

    def puts_since(self, offset, bucket, end=None):
        """Keys that received a PUT (whole object or a part) between two access-log offsets."""
        with open(self.log_path) as f:
            f.seek(offset)
            text = f.read() if end is None else f.read(end - offset)
        keys = set()
        for m in re.finditer(rf'"PUT /{bucket}/([^ ?"]+)[^"]* HTTP/1\.1" 200', text):
            keys.add(m.group(1))
        return keys

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Benchmarks


def alternate(rounds, a, b):
    """Runs a(i) and b(i) in alternating order; returns both lists of results."""
    ra, rb = [], []
    for i in range(rounds):
        if i % 2 == 0:
            ra.append(a(i))
            rb.append(b(i))
        else:
            rb.append(b(i))
            ra.append(a(i))
    return ra, rb


def copy_benchmark(tag, args, pr, rc, src_s3, dst_s3, src, dst_endpoint, dst_bucket, expect):
    """Copies src into fresh prefixes of dst with planrun and rclone, alternating."""
    n, total = expect

    def run_planrun(i):
        path = f"{tag}-r{i}-planrun"
        m = pr.copy(f"{tag}-planrun-{i}", src, (dst_endpoint, dst_bucket, path), args.concurrency)
        check(m, f"planrun ({tag} round {i})", dst_s3, dst_bucket, path, expect)
        delete_prefix(dst_s3, dst_bucket, path)
        log(f"{tag} round {i}: planrun {m.wall:.2f}s, peak RSS {m.rss_kib // 1024} MiB")
        return m

    def run_rclone(i):
        path = f"{tag}-r{i}-rclone"
        m = rc.copy(f"{tag}-rclone-{i}", src, (dst_endpoint, dst_bucket, path), 4 * args.concurrency)
        check(m, f"rclone ({tag} round {i})", dst_s3, dst_bucket, path, expect)
        delete_prefix(dst_s3, dst_bucket, path)
        log(f"{tag} round {i}: rclone {m.wall:.2f}s, peak RSS {m.rss_kib // 1024} MiB")
        return m

    ra, rb = alternate(args.rounds, run_planrun, run_rclone)
    tp = statistics.median(m.wall for m in ra)
    tr = statistics.median(m.wall for m in rb)
    return {
        "objects": n, "bytes": total, "rounds": args.rounds,
        "planrun_s": [round(m.wall, 3) for m in ra], "rclone_s": [round(m.wall, 3) for m in rb],
        "planrun_median_s": tp, "rclone_median_s": tr,
        "planrun_MiBps": total / MIB / tp, "rclone_MiBps": total / MIB / tr,
        "ratio": tr / tp,
        "planrun_rss_mib": max(m.rss_kib for m in ra) / 1024,
        "rclone_rss_mib": max(m.rss_kib for m in rb) / 1024,
    }


def big_object_benchmark(args, pr, rc, main_s3, moto, moto_s3):
    """One large object streamed between the two servers, at growing sizes: planrun's peak RSS
    should not grow with the object."""
    results = []
    pool = os.urandom(8 * MIB)
    for size in args.big_sizes:
        key = f"{BIG}/{size}/object.bin"
        log(f"uploading a {human(size)} object")
        mpu = main_s3.create_multipart_upload(Bucket=SRC_BUCKET, Key=key)
        parts, off, n = [], 0, 1
        while off < size:
            chunk = min(64 * MIB, size - off)
            body = (pool * (chunk // len(pool) + 1))[:chunk]
            r = main_s3.upload_part(Bucket=SRC_BUCKET, Key=key, UploadId=mpu["UploadId"],
                                    PartNumber=n, Body=body)
            parts.append({"ETag": r["ETag"], "PartNumber": n})
            off, n = off + chunk, n + 1
        main_s3.complete_multipart_upload(Bucket=SRC_BUCKET, Key=key, UploadId=mpu["UploadId"],
                                          MultipartUpload={"Parts": parts})
        src = (MAIN_S3, SRC_BUCKET, f"{BIG}/{size}")
        expect = (1, size)

        def run_planrun(i, size=size, src=src, expect=expect):
            path = f"big-{size}-r{i}-planrun"
            m = pr.copy(f"big-{size}-planrun-{i}", src, (moto.endpoint, DST_BUCKET, path),
                        args.concurrency)
            check(m, f"planrun (big {human(size)})", moto_s3, DST_BUCKET, path, expect)
            delete_prefix(moto_s3, DST_BUCKET, path)
            log(f"big {human(size)} round {i}: planrun {m.wall:.2f}s, RSS {m.rss_kib // 1024} MiB")
            return m

        def run_rclone(i, size=size, src=src, expect=expect):
            path = f"big-{size}-r{i}-rclone"
            m = rc.copy(f"big-{size}-rclone-{i}", src, (moto.endpoint, DST_BUCKET, path),
                        4 * args.concurrency)
            check(m, f"rclone (big {human(size)})", moto_s3, DST_BUCKET, path, expect)
            delete_prefix(moto_s3, DST_BUCKET, path)
            log(f"big {human(size)} round {i}: rclone {m.wall:.2f}s, RSS {m.rss_kib // 1024} MiB")
            return m

        ra, rb = alternate(args.big_rounds, run_planrun, run_rclone)
        main_s3.delete_object(Bucket=SRC_BUCKET, Key=key)
        tp = statistics.median(m.wall for m in ra)
        tr = statistics.median(m.wall for m in rb)
        results.append({
            "size": size, "planrun_median_s": tp, "rclone_median_s": tr, "ratio": tr / tp,
            "planrun_rss_mib": max(m.rss_kib for m in ra) / 1024,
            "rclone_rss_mib": max(m.rss_kib for m in rb) / 1024,
        })
    return results


def resume_benchmark(args, pr, moto, moto_s3, src, expect, sizes_by_key):
    """Streams src to the second server three times: uninterrupted; killed (-9) at about half of
    the uninterrupted time; then resumed. The second server's access log tells which objects
    were uploaded again."""
    n, total = expect
    full = []
    for i in range(args.resume_rounds):
        path = f"resume-full-{i}"
        m = pr.copy(f"resume-full-{i}", src, (moto.endpoint, DST_BUCKET, path), args.concurrency)
        check(m, "planrun (uninterrupted)", moto_s3, DST_BUCKET, path, expect)
        delete_prefix(moto_s3, DST_BUCKET, path)
        full.append(m.wall)
    t_full = statistics.median(full)
    # apply previews the plan first; how much of a run that is.
    previews = [pr.preview(f"resume-preview-{i}", src, (moto.endpoint, DST_BUCKET, "resume-0"),
                           args.concurrency).wall for i in range(args.resume_rounds)]

    runs = []
    for i in range(args.resume_rounds):
        path = f"resume-{i}"
        state = tempfile.mkdtemp(prefix="resume-state-", dir=pr.work)
        src_log = S3Log(os.environ.get("BENCH_S3_LOG", ""))
        src0 = src_log.size()
        off0 = moto.log_size()
        # One plan file for both applies: a run is resumed by applying the same plan again.
        first = pr.copy(f"resume-{i}", src, (moto.endpoint, DST_BUCKET, path),
                        args.concurrency, kill_after=t_full / 2, state=state, keep=True)
        if first.rc != -signal.SIGKILL:
            # Tiny (smoke) sizes can finish first; the resume then has nothing left to do.
            check(first, "planrun (to be killed)", moto_s3, DST_BUCKET, path, expect)
            log("the copy finished before the kill; the resume below has nothing to do")
        done_before, _ = listing(moto_s3, DST_BUCKET, path)
        off1 = moto.log_size()
        src1 = src_log.size()
        second = pr.copy(f"resume-{i}", src, (moto.endpoint, DST_BUCKET, path),
                         args.concurrency, state=state, keep=True)
        check(second, "planrun (resumed)", moto_s3, DST_BUCKET, path, expect)
        if first.rc == -signal.SIGKILL and "resuming run" not in second.out:
            raise SystemExit(f"the second apply did not resume the killed run:\n{second.out[-1500:]}")
        before = moto.puts_since(off0, DST_BUCKET, off1)
        after = moto.puts_since(off1, DST_BUCKET)
        # An object uploaded (whole, or a part of it) by both runs was transferred again.
        again = before & after
        again_bytes = sum(sizes_by_key[k.split("/", 1)[1]] for k in again)
        # Objects read from the source by both runs: also counts the copies cut off in flight.
        read_again = src_log.gets(src0, src1, SRC_BUCKET) & src_log.gets(src1, None, SRC_BUCKET)
        read_again_bytes = sum(sizes_by_key[k.split("/", 1)[1]] for k in read_again)
        delete_prefix(moto_s3, DST_BUCKET, path)
        shutil.rmtree(state, ignore_errors=True)
        runs.append({
            "killed_after_s": first.wall, "objects_done_at_kill": done_before,
            "resume_s": second.wall, "total_s": first.wall + second.wall,
            "objects_again": len(again), "bytes_again": again_bytes,
            "objects_read_again": len(read_again) if src_log.path else None,
            "bytes_read_again": read_again_bytes if src_log.path else None,
        })
        log(f"resume round {i}: killed at {first.wall:.2f}s with {done_before}/{n} objects, "
            f"resumed in {second.wall:.2f}s, {len(again)} objects ({human(again_bytes)}) "
            f"uploaded again, {len(read_again)} ({human(read_again_bytes)}) read again")
    total_s = statistics.median(r["total_s"] for r in runs)
    read_again = [r["bytes_read_again"] for r in runs if r["bytes_read_again"] is not None]
    return {
        "preview_median_s": statistics.median(previews),
        "bytes_read_again_pct": 100 * max(read_again) / total if read_again else None,
        "uninterrupted_s": full, "uninterrupted_median_s": t_full, "runs": runs,
        "time_ratio": total_s / t_full,
        "bytes_again_pct": 100 * max(r["bytes_again"] for r in runs) / total,
        "objects_again_max": max(r["objects_again"] for r in runs),
    }


def big_plan(collections, steps):
    """A plan with `steps` steps naming `collections` collections: backups of collections
    groups, each followed by a copy into a second bucket (offline checks only)."""
    backups = steps // 2
    per = collections // backups
    out = ["version = 1", 'name = "bench-big"', "",
           "[instances.milvus_a]", 'type = "milvus"', 'uri = "http://127.0.0.1:19530"', "",
           "[buckets.a]", 'type = "s3"', 'endpoint = "http://127.0.0.1:9000"', 'bucket = "bucket-a"',
           "", "[buckets.b]", 'type = "s3"', 'endpoint = "http://127.0.0.1:9000"',
           'bucket = "bucket-b"', ""]
    c = 0
    for i in range(backups):
        names = ", ".join(f'"coll_{c + j}"' for j in range(per))
        c += per
        out += [f"[steps.backup_{i}]", 'type = "backup"', 'instance = "milvus_a"',
                f"collections = [{names}]", f'to = "a:backup/b{i}"', "",
                f"[steps.copy_{i}]", 'type = "copy"', f'from = "a:backup/b{i}"',
                f'to = "b:backup/b{i}"', ""]
    return "\n".join(out)


def engine_benchmark(args, binary, work):
    path = os.path.join(work, "big-plan.toml")
    with open(path, "w") as f:
        f.write(big_plan(args.plan_collections, args.plan_steps))
    result = {"collections": args.plan_collections, "steps": args.plan_steps}
    for cmd in ("validate", "graph"):
        times, rss = [], 0
        for _ in range(args.rounds):
            m = measure([binary, cmd, path], log_path=os.path.join(work, f"big-{cmd}.log"))
            if m.rc != 0:
                raise SystemExit(f"planrun {cmd} of the big plan failed (exit {m.rc}):\n{m.out[-2000:]}")
            times.append(m.wall)
            rss = max(rss, m.rss_kib)
        result[cmd] = {"median_s": statistics.median(times), "rss_mib": rss / 1024}
    checkpoint_bin = os.environ.get("PLANRUN_CHECKPOINT_BENCH")
    if checkpoint_bin:
        out = subprocess.run([checkpoint_bin, str(args.checkpoint_tasks)], capture_output=True,
                             text=True, check=True).stdout
        result["checkpoint"] = json.loads(out)
    return result


# ---------------------------------------------------------------------------------------------
# Report


def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(results, args):
    rows = [("benchmark", "planrun", "peer", "ratio (peer time / planrun time)", "target")]
    if "server_side" in results:
        r = results["server_side"]
        rows.append((f"1 server-side copy, {r['objects']} objects, {human(r['bytes'])}",
                     f"{r['planrun_median_s']:.2f} s", f"rclone {r['rclone_median_s']:.2f} s",
                     f"{r['ratio']:.2f}x", ">= 1.25x"))
    if "streaming" in results:
        r = results["streaming"]
        rows.append((f"2 streaming copy, {r['objects']} objects, {human(r['bytes'])}",
                     f"{r['planrun_median_s']:.2f} s", f"rclone {r['rclone_median_s']:.2f} s",
                     f"{r['ratio']:.2f}x", ">= 1.25x"))
    for r in results.get("big_object", []):
        rows.append((f"2 one {human(r['size'])} object, streamed",
                     f"{r['planrun_median_s']:.2f} s, RSS {r['planrun_rss_mib']:.0f} MiB",
                     f"rclone {r['rclone_median_s']:.2f} s, RSS {r['rclone_rss_mib']:.0f} MiB",
                     f"{r['ratio']:.2f}x", "RSS < 200 MiB"))
    if "resume" in results:
        r = results["resume"]
        rows.append(("5 kill -9 at half, resume: total time",
                     f"{statistics.median(x['total_s'] for x in r['runs']):.2f} s",
                     f"uninterrupted {r['uninterrupted_median_s']:.2f} s",
                     f"{r['time_ratio']:.2f}x of uninterrupted", "<= 1.1x"))
        rows.append(("5 `planrun plan` of that copy (apply runs it first)",
                     f"{r['preview_median_s']:.2f} s", "-", "-", "-"))
        rows.append(("5 bytes uploaded again (stored before the kill)",
                     f"{r['bytes_again_pct']:.2f} %", f"{r['objects_again_max']} objects", "-",
                     "<= 1 %"))
        if r["bytes_read_again_pct"] is not None:
            rows.append(("5 bytes read again (incl. copies cut off by the kill)",
                         f"{r['bytes_read_again_pct']:.2f} %", "-", "-", "<= 1 %"))
    if "engine" in results:
        r = results["engine"]
        for cmd in ("validate", "graph"):
            rows.append((f"6 `{cmd}` of {r['collections']} collections / {r['steps']} steps",
                         f"{r[cmd]['median_s']:.2f} s, RSS {r[cmd]['rss_mib']:.0f} MiB", "-", "-", "-"))
        if "checkpoint" in r:
            c = r["checkpoint"]
            rows.append((f"6 checkpoint, {c['tasks']} tasks: lazy write + flush at end",
                         f"{c['lazy_us_per_task']:.1f} us/task", "-", "-", "not the bottleneck"))
            rows.append(("6 checkpoint: durable write (flushed each)",
                         f"{c['durable_us_per_task']:.0f} us/task", "-", "-", "-"))
            rows.append(("6 checkpoint: lookup of a done task",
                         f"{c['lookup_us_per_task']:.1f} us/task", "-", "-", "-"))
    if "binlog" in results or "rows" in results or "many" in results:
        import milvus_bench
        rows += milvus_bench.report_rows(results)
    print("\n## planrun benchmark results" + (" (smoke: tiny sizes, numbers mean nothing)" if args.smoke else ""))
    print()
    print(table(rows))
    print()


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except Exception:
            return "?"

    import moto
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "memory": human(mem), "kernel": platform.release(),
        "planrun": version([os.environ["PLANRUN"], "--version"]),
        "rclone": version(["rclone", "version"]), "moto": moto.__version__,
        "python": platform.python_version(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the suite runs")
    ap.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated benchmark numbers")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4,
                    help="planrun settings.concurrency; its copy step runs 4x as many objects at once, "
                         "and rclone gets --transfers/--checkers of 4x this")
    ap.add_argument("--big", default="256M,1G", help="sizes of the single large object (benchmark 2)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--binlog-rows", type=int, default=1_000_000, help="rows of benchmark 3")
    ap.add_argument("--rows-rows", type=int, default=200_000, help="rows of benchmark 4")
    ap.add_argument("--dim", type=int, default=128, help="vector dimensions (benchmarks 3, 4)")
    ap.add_argument("--milvus-rounds", type=int, default=3, help="rounds of benchmarks 3 and 4")
    ap.add_argument("--iterator-batch", type=int, default=1000,
                    help="the script's query_iterator batch size (benchmark 4; pymilvus default)")
    ap.add_argument("--collections", type=int, default=50, help="collections of benchmark 7")
    ap.add_argument("--rows", type=int, default=5000, help="rows per collection (benchmark 7)")
    ap.add_argument("--many-rounds", type=int, default=1, help="rounds of benchmark 7")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",")}
    if args.smoke:
        args.rounds, args.objects = 1, 40
        max_size = 512 * KIB
        args.big_sizes = [16 * MIB]
        args.big_rounds = args.resume_rounds = 1
        args.plan_collections, args.plan_steps, args.checkpoint_tasks = 200, 40, 2000
        args.binlog_rows, args.rows_rows, args.dim, args.milvus_rounds = 3000, 2000, 8, 1
        args.collections, args.rows, args.many_rounds = 3, 200, 1
    else:
        max_size = 8 * MIB
        args.big_sizes = [parse_size(s) for s in args.big.split(",")]
        args.big_rounds = args.resume_rounds = min(3, args.rounds)
        args.plan_collections, args.plan_steps, args.checkpoint_tasks = 10_000, 2_000, 100_000

    os.environ.pop("AWS_CA_BUNDLE", None)  # neither tool may depend on it
    binary = os.environ["PLANRUN"]
    work = tempfile.mkdtemp(prefix="planrun-bench-")
    results = {"machine": machine(), "settings": {
        "objects": args.objects, "max_size": max_size, "rounds": args.rounds,
        "planrun_concurrency": args.concurrency, "planrun_objects_in_flight": 4 * args.concurrency,
        "rclone_transfers": 4 * args.concurrency, "rclone_checkers": 4 * args.concurrency}}
    log(f"work dir {work}")
    main_s3 = s3_client(MAIN_S3)
    moto = None
    try:
        pr, rc = Planrun(binary, work), Rclone(work)
        sizes = binlog_mix(args.objects, max_size)
        keys = binlog_keys(sizes)
        sizes_by_key = dict(zip(keys, sizes))
        expect = (len(sizes), sum(sizes))
        if only & {1, 2, 5}:
            ensure_bucket(main_s3, SRC_BUCKET)
            ensure_bucket(main_s3, DST_BUCKET)
            delete_prefix_all(main_s3, SRC_BUCKET)
            delete_prefix_all(main_s3, DST_BUCKET)
            log(f"uploading {len(sizes)} objects ({human(sum(sizes))}) to {MAIN_S3}/{SRC_BUCKET}")
            upload(main_s3, SRC_BUCKET, DATA, keys, sizes)
        src = (MAIN_S3, SRC_BUCKET, DATA)
        if 1 in only:
            log("benchmark 1: server-side copy within one endpoint")
            results["server_side"] = copy_benchmark(
                "ss", args, pr, rc, main_s3, main_s3, src, MAIN_S3, DST_BUCKET, expect)
        if only & {2, 5}:
            moto = Moto(os.environ["BENCH_PYTHON"], work)
            moto_s3 = s3_client(moto.endpoint)
            moto_s3.create_bucket(Bucket=DST_BUCKET)
            log(f"second S3 server at {moto.endpoint}")
        if 2 in only:
            log("benchmark 2: streaming copy between two endpoints")
            results["streaming"] = copy_benchmark(
                "st", args, pr, rc, main_s3, moto_s3, src, moto.endpoint, DST_BUCKET, expect)
            results["big_object"] = big_object_benchmark(args, pr, rc, main_s3, moto, moto_s3)
        if 5 in only:
            log("benchmark 5: resume after kill -9")
            results["resume"] = resume_benchmark(args, pr, moto, moto_s3, src, expect, sizes_by_key)
        if only & {3, 4, 7}:
            import milvus_bench
            if 3 in only:
                log("benchmark 3: binlog migration, planrun vs a pymilvus + boto3 script")
                results["binlog"] = milvus_bench.binlog_benchmark(args, binary, work, alternate)
            if 4 in only:
                log("benchmark 4: rows mode, planrun vs query_iterator + insert")
                results["rows"] = milvus_bench.rows_benchmark(args, binary, work, alternate)
            if 7 in only:
                log("benchmark 7: many collections, planrun vs a script, one collection at a time")
                results["many"] = milvus_bench.many_benchmark(args, binary, work)
        if 6 in only:
            log("benchmark 6: engine overhead (offline)")
            results["engine"] = engine_benchmark(args, binary, work)
    finally:
        if moto:
            moto.stop()
        if only & {1, 2, 5}:
            delete_bucket(main_s3, SRC_BUCKET)
            delete_bucket(main_s3, DST_BUCKET)
    print(json.dumps(results["machine"]))
    print(json.dumps(results["settings"]))
    report(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": KIB, "M": MIB, "G": GIB}.get(s[-1])
    return int(s[:-1]) * mult if mult else int(s)


if __name__ == "__main__":
    main()
