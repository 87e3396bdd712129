"""planrun benchmarks against the tools users would otherwise pick (issue 6); see docs/benchmarks.md.

Run through bench/run.sh, which builds planrun in release mode, provides rclone and starts the two
Garage S3 servers of scripts/services.sh (s3 on :9000, s3-b on :9100).
Every comparison rotates planrun and its peers round by round and reports medians and ratios;
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
ACCESS, SECRET = "GK706c616e72756e2d64656d6f", "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"
MAIN_S3 = "http://127.0.0.1:9000"
# The second, separate Garage server of scripts/services.sh (`scripts/services.sh up s3-b`).
S3_B = "http://127.0.0.1:9100"
# The demo key may not create buckets (Garage), so the benchmarks use the services' buckets, each
# run under a prefix of its own: a smoke test may run while a full benchmark is going on, and
# Milvus A and B keep their binlogs beside it (under files/).
SRC_BUCKET, DST_BUCKET = "bucket-a", "bucket-b"
RUN = f"planrun-bench-{os.getpid()}"
DATA = f"{RUN}/data"
BIG = f"{RUN}/big"


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


def require_s3(endpoint, name, buckets):
    """A client of a running services.sh Garage server whose buckets the demo key can use."""
    host, port = endpoint.rsplit("/", 1)[1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        raise SystemExit(f"no S3 server on {host}:{port}: start it with scripts/services.sh up {name}")
    s3 = s3_client(endpoint)
    for b in buckets:
        try:
            s3.head_bucket(Bucket=b)
        except Exception as e:
            raise SystemExit(f"the S3 server on {host}:{port} has no bucket {b} the demo key can "
                             f"use ({e}): is it the Garage of scripts/services.sh up {name}?")
    return s3


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


def stamps(s3, bucket, prefix):
    """{key: LastModified} under prefix/: an object written again gets a new LastModified."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["LastModified"]
    return out


def delete_prefix(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


def clean_run(s3, endpoint):
    """Removes this run's prefix from both buckets of one server."""
    for bucket in (SRC_BUCKET, DST_BUCKET):
        try:
            delete_prefix(s3, bucket, RUN)
        except Exception as e:  # cleanup must not hide the results
            log(f"could not delete {endpoint}/{bucket}/{RUN}/: {e}")


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


def rotate(rounds, *fns):
    """Runs every fn(i) once per round, the order rotated round by round (A B C, B C A, C A B, ...);
    returns each fn's list of results."""
    out = [[] for _ in fns]
    for i in range(rounds):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            out[j].append(fns[j](i))
    return out


SUMMARY = re.compile(r"(\d+) objects \(([^)]*)\) into \S+: (\d+) copied server-side, "
                     r"(\d+) streamed \(([^)]*)\), (\d+) already present")


def summary(out):
    """planrun's copy step summary line, as a dict (None when the run printed none)."""
    m = None
    for m in SUMMARY.finditer(out):
        pass
    if not m:
        return None
    return {"objects": int(m.group(1)), "server_side": int(m.group(3)),
            "streamed": int(m.group(4)), "streamed_bytes": m.group(5), "present": int(m.group(6))}


def three_sides(tag, args, rounds, pr, rc, src, dst_endpoint, dst_s3, expect):
    """Copies src into fresh prefixes of dst_endpoint's DST_BUCKET with planrun (default
    settings.concurrency), planrun with settings.concurrency = 1 and rclone, rotating; returns
    medians and ratios."""

    def side(name, run):
        def f(i):
            path = f"{RUN}/{tag}-r{i}-{name}"
            m = run(f"{tag}-{name}-{i}", (dst_endpoint, DST_BUCKET, path))
            check(m, f"{name} ({tag} round {i})", dst_s3, DST_BUCKET, path, expect)
            delete_prefix(dst_s3, DST_BUCKET, path)
            log(f"{tag} round {i}: {name} {m.wall:.2f}s, peak RSS {m.rss_kib // 1024} MiB")
            return m
        return f

    ra, rt, rr = rotate(
        rounds,
        side("planrun", lambda n, d: pr.copy(n, src, d, args.concurrency)),
        side("planrun-c1", lambda n, d: pr.copy(n, src, d, 1)),
        side("rclone", lambda n, d: rc.copy(n, src, d, 4 * args.concurrency)),
    )
    tp = statistics.median(m.wall for m in ra)
    tt = statistics.median(m.wall for m in rt)
    tr = statistics.median(m.wall for m in rr)
    n, total = expect
    return {
        "objects": n, "bytes": total, "rounds": rounds,
        "planrun_s": [round(m.wall, 3) for m in ra],
        "tight_s": [round(m.wall, 3) for m in rt],
        "rclone_s": [round(m.wall, 3) for m in rr],
        "planrun_median_s": tp, "tight_median_s": tt, "rclone_median_s": tr,
        "planrun_MiBps": total / MIB / tp, "tight_MiBps": total / MIB / tt,
        "rclone_MiBps": total / MIB / tr,
        # > 1: planrun (default) is faster than the peer.
        "ratio": tr / tp, "tight_ratio": tt / tp,
        "planrun_rss_mib": max(m.rss_kib for m in ra) / 1024,
        "tight_rss_mib": max(m.rss_kib for m in rt) / 1024,
        "rclone_rss_mib": max(m.rss_kib for m in rr) / 1024,
        "planrun_summary": summary(ra[-1].out), "tight_summary": summary(rt[-1].out),
    }


def copy_benchmark(tag, args, pr, rc, dst_s3, src, dst_endpoint, expect):
    """The binlog-like objects, copied into dst_endpoint by the three sides."""
    return three_sides(tag, args, args.rounds, pr, rc, src, dst_endpoint, dst_s3, expect)


def big_object_benchmark(args, pr, rc, main_s3, b_s3):
    """One large object streamed from the main server to the second, at growing sizes: planrun's
    peak RSS should not grow with the object."""
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
        r = three_sides(f"big-{size}", args, args.big_rounds, pr, rc, src, S3_B, b_s3, (1, size))
        main_s3.delete_object(Bucket=SRC_BUCKET, Key=key)
        r["size"] = size
        results.append(r)
    return results


def resume_benchmark(args, pr, b_s3, src, expect, sizes_by_key):
    """Streams src to the second server three times: uninterrupted; killed (-9) at about half of
    the uninterrupted time; then resumed. Garage keeps no access log to count PUTs by, so an
    object counts as uploaded again when it was listed after the kill and its LastModified
    changed during the resume; planrun's own summary line of the resumed apply says how many
    objects it streamed and how many it found already there."""
    n, total = expect
    full = []
    for i in range(args.resume_rounds):
        path = f"{RUN}/resume-full-{i}"
        m = pr.copy(f"resume-full-{i}", src, (S3_B, DST_BUCKET, path), args.concurrency)
        check(m, "planrun (uninterrupted)", b_s3, DST_BUCKET, path, expect)
        delete_prefix(b_s3, DST_BUCKET, path)
        full.append(m.wall)
    t_full = statistics.median(full)
    # apply previews the plan first; how much of a run that is.
    previews = [pr.preview(f"resume-preview-{i}", src, (S3_B, DST_BUCKET, f"{RUN}/resume-0"),
                           args.concurrency).wall for i in range(args.resume_rounds)]

    runs = []
    for i in range(args.resume_rounds):
        path = f"{RUN}/resume-{i}"
        state = tempfile.mkdtemp(prefix="resume-state-", dir=pr.work)
        # One plan file for both applies: a run is resumed by applying the same plan again.
        first = pr.copy(f"resume-{i}", src, (S3_B, DST_BUCKET, path),
                        args.concurrency, kill_after=t_full / 2, state=state, keep=True)
        if first.rc != -signal.SIGKILL:
            # Tiny (smoke) sizes can finish first; the resume then has nothing left to do.
            check(first, "planrun (to be killed)", b_s3, DST_BUCKET, path, expect)
            log("the copy finished before the kill; the resume below has nothing to do")
        # Garage may still finish requests of the killed process: let them land first, so the
        # listing below holds everything the first apply stored.
        time.sleep(1)
        before = stamps(b_s3, DST_BUCKET, path)
        second = pr.copy(f"resume-{i}", src, (S3_B, DST_BUCKET, path),
                         args.concurrency, state=state, keep=True)
        check(second, "planrun (resumed)", b_s3, DST_BUCKET, path, expect)
        if first.rc == -signal.SIGKILL and "resuming run" not in second.out:
            raise SystemExit(f"the second apply did not resume the killed run:\n{second.out[-1500:]}")
        after = stamps(b_s3, DST_BUCKET, path)
        rel = lambda k: k[len(path) + 1:]
        # Stored before the resume and written again by it.
        again = [k for k, t in before.items() if after.get(k) != t]
        again_bytes = sum(sizes_by_key[rel(k)] for k in again)
        written = [k for k, t in after.items() if before.get(k) != t]
        written_bytes = sum(sizes_by_key[rel(k)] for k in written)
        said = summary(second.out)
        delete_prefix(b_s3, DST_BUCKET, path)
        shutil.rmtree(state, ignore_errors=True)
        runs.append({
            "killed_after_s": first.wall, "objects_done_at_kill": len(before),
            "resume_s": second.wall, "total_s": first.wall + second.wall,
            "objects_again": len(again), "bytes_again": again_bytes,
            "objects_written_by_resume": len(written), "bytes_written_by_resume": written_bytes,
            "planrun_summary": said,
        })
        log(f"resume round {i}: killed at {first.wall:.2f}s with {len(before)}/{n} objects, "
            f"resumed in {second.wall:.2f}s, wrote {len(written)} objects "
            f"({human(written_bytes)}), {len(again)} ({human(again_bytes)}) of them again; "
            f"planrun: {said}")
    total_s = statistics.median(r["total_s"] for r in runs)
    return {
        "preview_median_s": statistics.median(previews),
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
    def copy_rows(name, r, target):
        planrun = f"{r['planrun_median_s']:.2f} s, RSS {r['planrun_rss_mib']:.0f} MiB"
        rows.append((name, planrun,
                     f"rclone {r['rclone_median_s']:.2f} s, RSS {r['rclone_rss_mib']:.0f} MiB",
                     f"{r['ratio']:.2f}x", target))
        rows.append((f"{name[0]} the same, vs planrun with `concurrency = 1`", planrun,
                     f"concurrency = 1: {r['tight_median_s']:.2f} s, RSS {r['tight_rss_mib']:.0f} MiB",
                     f"{r['tight_ratio']:.2f}x", "-"))

    if "server_side" in results:
        r = results["server_side"]
        copy_rows(f"1 server-side copy, {r['objects']} objects, {human(r['bytes'])}", r, ">= 1.25x")
    if "streaming" in results:
        r = results["streaming"]
        copy_rows(f"2 streaming copy, {r['objects']} objects, {human(r['bytes'])}", r, ">= 1.25x")
    for r in results.get("big_object", []):
        copy_rows(f"2 one {human(r['size'])} object, streamed", r, "RSS < 200 MiB")
    if "resume" in results:
        r = results["resume"]
        rows.append(("5 kill -9 at half, resume: total time",
                     f"{statistics.median(x['total_s'] for x in r['runs']):.2f} s",
                     f"uninterrupted {r['uninterrupted_median_s']:.2f} s",
                     f"{r['time_ratio']:.2f}x of uninterrupted", "<= 1.1x"))
        rows.append(("5 `planrun plan` of that copy (apply runs it first)",
                     f"{r['preview_median_s']:.2f} s", "-", "-", "-"))
        rows.append(("5 bytes uploaded again (listed after the kill, LastModified changed)",
                     f"{r['bytes_again_pct']:.2f} %", f"{r['objects_again_max']} objects", "-",
                     "<= 1 %"))
        for x in r["runs"]:
            said = x["planrun_summary"] or {}
            rows.append(("5 resume: objects listed at the kill / written by the resume",
                         f"{x['objects_done_at_kill']} / {x['objects_written_by_resume']}",
                         f"planrun: {said.get('streamed', '?')} streamed, "
                         f"{said.get('present', '?')} already present", "-", "-"))
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
    if "binlog" in results or "rows" in results or "many" in results or "import" in results:
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

    garage = os.environ.get("BENCH_GARAGE") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".tools", "bin", "garage")
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "memory": human(mem), "kernel": platform.release(),
        "planrun": version([os.environ["PLANRUN"], "--version"]),
        "rclone": version(["rclone", "version"]), "garage": version([garage, "--version"]),
        "python": platform.python_version(), "boto3": boto3.__version__,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the suite runs")
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8", help="comma-separated benchmark numbers")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=4,
                    help="planrun settings.concurrency; its copy step runs 4x as many objects at once, "
                         "and rclone gets --transfers/--checkers of 4x this; benchmarks 1 and 2 also "
                         "run planrun with settings.concurrency = 1 (4 objects at once)")
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
    ap.add_argument("--b8-rows", type=int, default=1_000_000,
                    help="rows of benchmark 8's vectors-only collection (benchmark 3's collection)")
    ap.add_argument("--b8-mixed-rows", type=int, default=300_000,
                    help="rows of benchmark 8's collection with JSON, an array and dynamic fields")
    ap.add_argument("--b8-variants", default="vectors,mixed", help="benchmark 8's collections")
    ap.add_argument("--b8-sides", default="",
                    help="benchmark 8's sides (default all): rows_import,rows_insert,binlog,script,"
                         "read1,read2,read4")
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
        args.b8_rows, args.b8_mixed_rows = 3000, 2000
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
        "tight_concurrency": 1, "tight_objects_in_flight": 4,
        "rclone_transfers": 4 * args.concurrency, "rclone_checkers": 4 * args.concurrency}}
    log(f"work dir {work}")
    main_s3 = b_s3 = None
    try:
        pr, rc = Planrun(binary, work), Rclone(work)
        sizes = binlog_mix(args.objects, max_size)
        keys = binlog_keys(sizes)
        sizes_by_key = dict(zip(keys, sizes))
        expect = (len(sizes), sum(sizes))
        if only & {1, 2, 5}:
            main_s3 = require_s3(MAIN_S3, "s3", (SRC_BUCKET, DST_BUCKET))
        if only & {2, 5}:
            b_s3 = require_s3(S3_B, "s3-b", (DST_BUCKET,))
            log(f"second S3 server at {S3_B}")
        if main_s3:
            clean_run(main_s3, MAIN_S3)
            log(f"uploading {len(sizes)} objects ({human(sum(sizes))}) to {MAIN_S3}/{SRC_BUCKET}")
            upload(main_s3, SRC_BUCKET, DATA, keys, sizes)
        src = (MAIN_S3, SRC_BUCKET, DATA)
        if 1 in only:
            log("benchmark 1: server-side copy within one endpoint")
            results["server_side"] = copy_benchmark("ss", args, pr, rc, main_s3, src, MAIN_S3, expect)
        if 2 in only:
            log("benchmark 2: streaming copy between two endpoints")
            results["streaming"] = copy_benchmark("st", args, pr, rc, b_s3, src, S3_B, expect)
            results["big_object"] = big_object_benchmark(args, pr, rc, main_s3, b_s3)
        if 5 in only:
            log("benchmark 5: resume after kill -9")
            results["resume"] = resume_benchmark(args, pr, b_s3, src, expect, sizes_by_key)
        if only & {3, 4, 7, 8}:
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
            if 8 in only:
                log("benchmark 8: rows mode by import vs insert, binlog, the script and the read alone")
                results["import"] = milvus_bench.import_benchmark(args, binary, work)
        if 6 in only:
            log("benchmark 6: engine overhead (offline)")
            results["engine"] = engine_benchmark(args, binary, work)
    finally:
        if main_s3:
            clean_run(main_s3, MAIN_S3)
        if b_s3:
            clean_run(b_s3, S3_B)
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
