#!/usr/bin/env python3
"""Test and demo data for planrun, through pymilvus (the client users already have).

  seed     create a collection with partitions, several segments, a dynamic field, JSON and
           a varchar- or int64-keyed primary key; delete some rows at the end (left unflushed)
  dump     print every row of a collection (PK order) as JSON lines, with partition names
  compare  compare two collections row by row, partitions and indexes; exit 1 on any difference
  drop     drop collections
  sweep    drop the collections of test runs that are gone (named by tests/support's unique():
           `<prefix>_<pid>_<millis>_<n>[_suffix]`, the pid no longer running on this machine)
  dump-names  list the collections (with their partitions) of every database
  s3-list  list every object of a bucket with its size and ETag
  s3-clean delete every object under a prefix of a bucket on the local S3 server

Addresses are URIs; a token is `user:password` (or empty).
"""
import argparse
import json
import random
import re
import logging
import os
import signal
import sys

from pymilvus import DataType, MilvusClient

# The local Garage servers' demo key (scripts/services.sh); S3_ACCESS_KEY / S3_SECRET_KEY override.
DEMO_KEY = "GK706c616e72756e2d64656d6f"
DEMO_SECRET = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

logging.getLogger("pymilvus").setLevel(logging.ERROR)


def client(uri, token, db=""):
    return MilvusClient(uri=uri, token=token or "", db_name=db, timeout=60)


def partitions(c, coll):
    """The partitions of `coll`. Milvus Lite 2.x has no partition RPCs (UNIMPLEMENTED) and keeps
    every row in `_default`."""
    log = logging.getLogger("pymilvus")
    level = log.level
    log.setLevel(logging.CRITICAL)  # pymilvus logs the expected UNIMPLEMENTED as an error
    try:
        return c.list_partitions(coll)
    except Exception as e:
        if "UNIMPLEMENTED" in str(e):
            return ["_default"]
        raise
    finally:
        log.setLevel(level)


def seed(a):
    c = client(a.uri, a.token)
    if c.has_collection(a.collection):
        c.drop_collection(a.collection)
    varchar = a.pk == "varchar"
    schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
    if varchar:
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    else:
        schema.add_field("pk", DataType.INT64, is_primary=True)
    if not a.binary:  # Milvus 2.3 allows one vector field
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=a.dim)
    schema.add_field("title", DataType.VARCHAR, max_length=128)
    schema.add_field("score", DataType.DOUBLE)
    schema.add_field("rank", DataType.INT32)
    schema.add_field("flag", DataType.BOOL)
    schema.add_field("meta", DataType.JSON)
    if a.partition_key:
        schema.add_field("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True)
    if a.binary:
        schema.add_field("bvec", DataType.BINARY_VECTOR, dim=16)
    index = c.prepare_index_params()
    if a.binary:
        index.add_index("bvec", index_type="BIN_FLAT", metric_type="HAMMING")
    else:
        index.add_index("vec", index_type="IVF_FLAT", metric_type="L2", params={"nlist": 16})
    extra = {"num_partitions": a.partition_key} if a.partition_key else {}
    if not a.no_index:
        extra["index_params"] = index
    c.create_collection(a.collection, schema=schema,
                        consistency_level="Strong", shards_num=a.shards, **extra)
    if a.partition_key:
        parts = [None]  # rows find their partitions by `tenant`
    else:
        parts = ["_default"] + [f"part_{i}" for i in range(1, a.partitions)]
        for p in parts[1:]:
            c.create_partition(a.collection, p)
    rnd = random.Random(a.seed)
    per_batch = max(1, a.rows // (len(parts) * a.segments))
    n = 0
    keys = []
    for s in range(a.segments):
        for p in parts:
            rows = []
            for _ in range(per_batch):
                key = f"k{n:08d}" if varchar else n
                keys.append(key)
                row = {
                    "pk": key,
                    "vec": [rnd.random() for _ in range(a.dim)],
                    "title": f"title {n} in {p}",
                    "score": rnd.random() * 100,
                    "rank": rnd.randint(-1000, 1000),
                    "flag": n % 2 == 0,
                    "meta": {"n": n, "tags": ["a", "b"][: n % 3], "nested": {"p": p}},
                }
                if a.partition_key:
                    row["tenant"] = f"t{n % 7}"
                if a.binary:
                    del row["vec"]
                    row["bvec"] = bytes([rnd.randrange(256), rnd.randrange(256)])
                if n % 5 == 0:  # dynamic fields on some rows only
                    row["extra"] = f"dyn-{n}"
                rows.append(row)
                n += 1
            if p is None:
                c.insert(a.collection, rows)
            else:
                c.insert(a.collection, rows, partition_name=p)
        c.flush(a.collection)  # one sealed segment per partition per round
    if a.no_index:  # a collection without an index cannot be loaded (nor deleted from)
        print(json.dumps({"collection": a.collection, "inserted": n, "deleted": 0, "rows": n,
                          "partitions": partitions(c, a.collection)}))
        return
    c.load_collection(a.collection)
    deleted = keys[:: a.delete_every] if a.delete_every else []
    if deleted:
        c.delete(a.collection, ids=deleted)
    print(json.dumps({"collection": a.collection, "inserted": n, "deleted": len(deleted),
                      "rows": n - len(deleted), "partitions": partitions(c, a.collection)}))


def rows_of(c, coll):
    """Every row of `coll`, keyed by PK, each with its partition, read partition by partition."""
    out = {}
    desc = c.describe_collection(coll)
    pk = next(f["name"] for f in desc["fields"] if f.get("is_primary"))
    # Partition-key collections cannot be queried by partition: Milvus routes rows by key.
    keyed = any(f.get("is_partition_key") for f in desc["fields"])
    for part in [None] if keyed else partitions(c, coll):
        scope = {} if part is None else {"partition_names": [part]}
        it = c.query_iterator(coll, batch_size=1000, output_fields=["*"], **scope)
        while True:
            page = it.next()
            if not page:
                it.close()
                break
            for row in page:
                row = dict(row)
                key = row[pk]
                row["$partition"] = part or "(by partition key)"
                if key in out:
                    raise SystemExit(f"duplicate primary key {key!r} in {coll}")
                out[key] = row
    return out


def norm(v):
    if isinstance(v, float):
        return round(v, 5)
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


def dump(a):
    c = client(a.uri, a.token)
    rows = rows_of(c, a.collection)
    keys = sorted(rows)
    for k in keys[: a.limit] if a.limit else keys:
        print(json.dumps(norm(rows[k]), sort_keys=True))


def compare(a):
    src, dst = client(a.uri, a.token), client(a.target_uri, a.target_token)
    s, t = rows_of(src, a.collection), rows_of(dst, a.target_collection)
    missing = sorted(k for k in s if k not in t)
    extra = sorted(k for k in t if k not in s)
    differ = sorted(k for k in s if k in t and norm(s[k]) != norm(t[k]))
    sp = sorted(partitions(src, a.collection))
    tp = sorted(partitions(dst, a.target_collection))
    si = sorted(src.list_indexes(a.collection))
    ti = sorted(dst.list_indexes(a.target_collection))
    report = {"source_rows": len(s), "target_rows": len(t), "missing": missing[:10],
              "extra": extra[:10], "different": differ[:10], "source_partitions": sp,
              "target_partitions": tp, "source_indexes": si, "target_indexes": ti}
    print(json.dumps(report, default=str))
    equal = not (missing or extra or differ) and sp == tp and si == ti
    sys.exit(0 if equal else 1)


def drop(a):
    c = client(a.uri, a.token)
    for name in a.collections:
        c.drop_collection(name)


# tests/support's unique(): `<prefix>_<pid>_<millis % 10^9>_<n>`, then any suffix (`_bak`, ...).
TEST_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*_(\d{1,7})_\d{1,9}_\d+(?:_\w*)?$")


def sweep(a):
    """Drops what interrupted test runs left behind on a long-lived server, so that it does not
    keep serving (and loading) them in every later run; a run still going keeps its own."""
    gone = []
    for db in client(a.uri, a.token).list_databases():
        # A client per database: 2.3 has no DescribeDatabase, which `use_database` calls.
        c = client(a.uri, a.token, db)
        for name in c.list_collections():
            m = TEST_NAME.match(name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                c.drop_collection(name)
                gone.append(f"{db}.{name}")
    print(json.dumps({"uri": a.uri, "dropped": gone}))


def dump_names(a):
    c = client(a.uri, a.token)
    for name in sorted(c.list_collections()):
        try:
            stats = c.get_collection_stats(name)  # flushed rows: changes if anything flushed
            print(name, sorted(partitions(c, name)), stats.get("row_count"))
        except Exception:  # dropped meanwhile by a test running in parallel
            continue


def s3(a):
    import os
    os.environ.pop("AWS_CA_BUNDLE", None)
    import boto3
    return boto3.client("s3", endpoint_url=a.endpoint, region_name="us-east-1",
                        aws_access_key_id=os.environ.get("S3_ACCESS_KEY", DEMO_KEY),
                        aws_secret_access_key=os.environ.get("S3_SECRET_KEY", DEMO_SECRET))


def s3_list(a):
    for page in s3(a).get_paginator("list_objects_v2").paginate(Bucket=a.bucket):
        for o in page.get("Contents", []):
            print(a.bucket, o["Key"], o["Size"], o["ETag"])


def s3_clean(a):
    cl = s3(a)
    n = 0
    for page in cl.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            cl.delete_objects(Bucket=a.bucket, Delete={"Objects": keys})
            n += len(keys)
    print(json.dumps({"bucket": a.bucket, "prefix": a.prefix, "deleted": n}))


def state(a):
    """Prints the collection's load state and flushed row count as JSON."""
    c = client(a.uri, a.token)
    c.flush(a.collection)  # rows inserted by a restore count once flushed
    st = c.get_load_state(a.collection)["state"]
    rows = c.get_collection_stats(a.collection).get("row_count")
    desc = c.describe_collection(a.collection)
    cid = desc.get("collection_id")
    print(json.dumps({"collection": a.collection, "id": cid, "aliases": desc.get("aliases", []),
                      "loaded": str(st).endswith("Loaded"),
                      "state": str(st), "flushed_rows": rows}))


def alias(a):
    client(a.uri, a.token).create_alias(a.collection, a.alias)


def drop_alias(a):
    client(a.uri, a.token).drop_alias(a.alias)


def release(a):
    client(a.uri, a.token).release_collection(a.collection)


def s3_put(a):
    s3(a).put_object(Bucket=a.bucket, Key=a.key, Body=sys.stdin.buffer.read())


def s3_get(a):
    sys.stdout.buffer.write(s3(a).get_object(Bucket=a.bucket, Key=a.key)["Body"].read())


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `dump | head` ends quietly
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--uri", default="http://127.0.0.1:19530")
        sp.add_argument("--token", default="root:Milvus")

    sp = sub.add_parser("seed"); common(sp)
    sp.add_argument("--collection", default="coll")
    sp.add_argument("--rows", type=int, default=3000)
    sp.add_argument("--partitions", type=int, default=3)
    sp.add_argument("--segments", type=int, default=2, help="flush rounds (segments per partition)")
    sp.add_argument("--shards", type=int, default=1)
    sp.add_argument("--dim", type=int, default=8)
    sp.add_argument("--pk", choices=["int64", "varchar"], default="int64")
    sp.add_argument("--partition-key", type=int, default=0,
                    help="add a varchar partition-key field `tenant` with this many partitions")
    sp.add_argument("--delete-every", type=int, default=7, help="delete every Nth row at the end (0: none)")
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--no-index", action="store_true", help="no index, so the collection stays unloaded")
    sp.add_argument("--binary", action="store_true", help="a BINARY_VECTOR field `bvec` instead of `vec`")
    sp = sub.add_parser("dump"); common(sp)
    sp.add_argument("--collection", default="coll_bak")
    sp.add_argument("--limit", type=int, default=0, help="print only the first N rows")
    sp = sub.add_parser("compare"); common(sp)
    sp.add_argument("--collection", default="coll")
    sp.add_argument("--target-uri", default="http://127.0.0.1:19540")
    sp.add_argument("--target-token", default="")
    sp.add_argument("--target-collection", default="coll_bak")
    sp = sub.add_parser("drop"); common(sp)
    sp.add_argument("collections", nargs="+")
    sp = sub.add_parser("sweep"); common(sp)
    sp = sub.add_parser("dump-names"); common(sp)
    sp = sub.add_parser("state"); common(sp)
    sp.add_argument("collection")
    sp = sub.add_parser("alias"); common(sp)
    sp.add_argument("collection")
    sp.add_argument("alias")
    sp = sub.add_parser("drop-alias"); common(sp)
    sp.add_argument("alias")
    sp = sub.add_parser("release"); common(sp)
    sp.add_argument("collection")
    sp = sub.add_parser("s3-put", help="store stdin as an object")
    sp.add_argument("--endpoint", default="http://127.0.0.1:9000")
    sp.add_argument("--bucket", required=True)
    sp.add_argument("--key", required=True)
    sp = sub.add_parser("s3-get")
    sp.add_argument("--endpoint", default="http://127.0.0.1:9000")
    sp.add_argument("--bucket", required=True)
    sp.add_argument("--key", required=True)
    sp = sub.add_parser("s3-list")
    sp.add_argument("--endpoint", default="http://127.0.0.1:9000")
    sp.add_argument("--bucket", required=True)
    sp = sub.add_parser("s3-clean")
    sp.add_argument("--endpoint", default="http://127.0.0.1:9000")
    sp.add_argument("--bucket", required=True)
    sp.add_argument("--prefix", required=True)
    a = p.parse_args()
    {"seed": seed, "dump": dump, "compare": compare, "drop": drop, "sweep": sweep,
     "dump-names": dump_names,
     "s3-list": s3_list, "s3-clean": s3_clean, "state": state, "release": release, "alias": alias,
     "drop-alias": drop_alias,
     "s3-get": s3_get, "s3-put": s3_put}[a.cmd](a)


if __name__ == "__main__":
    main()
