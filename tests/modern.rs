//! Rows mode with the newer schema features: sparse vectors, nullable fields, default values,
//! dynamic fields, arrays of every element type, JSON, BM25 functions, GEOMETRY and TIMESTAMPTZ,
//! moved between Milvus Lite 3 and Milvus 2.3.5 where the target has them, and refused in the dry
//! run where it lacks them.

use std::path::{Path, PathBuf};

use crate::support::migrate::{Server, apply, dry_run, milvus_a, pymilvus, rows_plan};
use crate::support::{self, LITE, LITE25, MILVUS_B, Service};

/// A server without auth under the plan id `id` (two ids may name one server).
fn open(id: &'static str, s: &Service) -> Server {
    Server {
        id,
        uri: s.require().uri(),
        token: "",
        auth: "",
    }
}

/// A rows backup of `colls` on `from`, restored on `to` with `_bak` (and `restore_extra`, e.g.
/// a `database`), then verified. Returns the plan and the directory holding it and the backup.
fn plan(
    from: &Server,
    to: &Server,
    colls: &[&str],
    restore_extra: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let colls: Vec<String> = colls.iter().map(|c| c.to_string()).collect();
    let path = rows_plan(dir.path(), from, to, &colls, "modern", restore_extra);
    (dir, path)
}

/// Moves `colls` from `from` to `to` into a new database (rows mode, verified); apply must
/// succeed and say each copy equals its source. Returns the plan's directory, the database and
/// apply's output.
fn move_into_new_database(
    from: &Server,
    to: &Server,
    colls: &[&str],
) -> (tempfile::TempDir, String, String) {
    let db = support::unique("moddb");
    let (dir, plan) = plan(from, to, colls, &format!("database = {db:?}"));
    let (good, out) = apply(&plan, None);
    assert!(good, "{out}");
    assert_eq!(out.matches("equals").count(), colls.len(), "{out}");
    (dir, db, out)
}

/// Python that defines `rows(client, coll)` (every row by key, all fields) and `norm(value)`.
const ROWS_PY: &str = r#"
import json
def connect(uri, token, db):
    # Naming a database makes pymilvus call DescribeDatabase, which Milvus 2.3.5 lacks.
    return MilvusClient(uri=uri, token=token, timeout=60, **({} if db == "default" else {"db_name": db}))
def rows(c, coll):
    out = {}
    it = c.query_iterator(coll, batch_size=500, output_fields=["*"])
    while True:
        page = it.next()
        if not page:
            it.close()
            break
        for r in page:
            out[r["id"]] = dict(r)
    return out
def norm(v):
    if isinstance(v, float):
        return round(v, 5)
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): norm(x) for k, x in v.items()}
    return v
"#;

/// Compares `coll` on `from` (default database) with `target` on `to` (database `db`) with
/// pymilvus, row by row with every field (nulls, sparse vectors and function outputs included);
/// with `schema`, the field definitions and functions too. Returns the source's rows as JSON.
fn assert_same(
    from: &Server,
    coll: &str,
    to: &Server,
    db: &str,
    target: &str,
    schema: bool,
) -> serde_json::Value {
    let out = pymilvus(
        from,
        &format!(
            r#"{ROWS_PY}
t = connect({turi:?}, {ttoken:?}, {db:?})
s_rows, t_rows = rows(c, {coll:?}), rows(t, {target:?})
assert s_rows.keys() == t_rows.keys(), ("keys differ", sorted(s_rows.keys() ^ t_rows.keys())[:5])
diff = [k for k in s_rows if norm(s_rows[k]) != norm(t_rows[k])]
assert not diff, ("rows differ", diff[:5], s_rows[diff[0]], t_rows[diff[0]])
def shape(cl, name):
    d = cl.describe_collection(name)
    fields = [(f["name"], int(f["type"]), f.get("params"), f.get("element_type"), f.get("nullable", False),
               str(f.get("default_value", "")), f.get("is_function_output", False), f.get("is_primary", False))
              for f in d["fields"]]
    funcs = [(f["name"], int(f["type"]), f["input_field_names"], f["output_field_names"], f["params"])
             for f in d.get("functions", [])]
    return fields, funcs, d["enable_dynamic_field"]
if {schema}:
    assert shape(c, {coll:?}) == shape(t, {target:?}), (shape(c, {coll:?}), shape(t, {target:?}))
print(json.dumps([norm(s_rows[k]) for k in sorted(s_rows)]))
"#,
            turi = to.uri,
            ttoken = to.token,
            schema = if schema { "True" } else { "False" },
        ),
    );
    serde_json::from_str(out.trim()).unwrap()
}

/// Every scalar array element type, JSON, a dynamic field and a float vector: what both Milvus
/// 2.3.5 and Milvus Lite 3 have (2.3.5 takes only objects as JSON values). 300 rows.
fn seed_portable(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
schema.add_field("j", DataType.JSON)
kinds = dict(b=DataType.BOOL, i8=DataType.INT8, i16=DataType.INT16, i32=DataType.INT32,
             i64=DataType.INT64, f=DataType.FLOAT, d=DataType.DOUBLE)
for k, t in kinds.items():
    schema.add_field("a_" + k, DataType.ARRAY, element_type=t, max_capacity=5)
schema.add_field("a_s", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=5, max_length=16)
idx = c.prepare_index_params()
idx.add_index("v", index_type="FLAT", metric_type="L2")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
r = random.Random(5)
def row(i):
    n = i % 6
    out = dict(id=i, v=[r.random() for _ in range(4)], j={{"k": i, "nested": {{"x": [i, "s", None]}}}},
               a_b=[bool(r.getrandbits(1)) for _ in range(n % 5)], a_i8=[r.randint(-128, 127) for _ in range(n % 5)],
               a_i16=[r.randint(-30000, 30000) for _ in range(n % 5)], a_i32=[r.randint(-2**31, 2**31 - 1) for _ in range(n % 5)],
               a_i64=[r.randint(-2**62, 2**62) for _ in range(n % 5)], a_f=[r.random() for _ in range(n % 5)],
               a_d=[r.random() * 1e300 for _ in range(n % 5)], a_s=["é" * (i % 7)] * (n % 5))
    if i % 4 == 0:
        out["dyn"] = {{"tag": "t%d" % i}}
    if i % 5 == 0:
        out["other"] = i * 1.5
    return out
c.insert({coll:?}, [row(i) for i in range(300)])
c.load_collection({coll:?})
"#
        ),
    );
}

/// Sparse vectors, nullable fields (with nulls), default values (rows that leave the field out),
/// a dynamic field and JSON that is not an object: what Milvus Lite 3 has and 2.3.5 lacks.
fn seed_nulls_and_sparse(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("sp", DataType.SPARSE_FLOAT_VECTOR)
schema.add_field("n", DataType.INT32, nullable=True)
schema.add_field("ns", DataType.VARCHAR, max_length=32, nullable=True)
schema.add_field("nj", DataType.JSON, nullable=True)
schema.add_field("na", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4, nullable=True)
schema.add_field("d", DataType.VARCHAR, max_length=16, default_value="dflt")
schema.add_field("dn", DataType.DOUBLE, nullable=True, default_value=1.5)
idx = c.prepare_index_params()
idx.add_index("sp", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
r = random.Random(9)
rows = []
for i in range(300):
    row = dict(id=i, sp={{r.randrange(2**32 - 1): r.random() for _ in range(1 + i % 7)}},
               n=None if i % 3 == 0 else i, ns=None if i % 4 == 0 else "s%d" % i,
               nj=None if i % 5 == 0 else ({{"i": i}} if i % 3 else [i, "x"]),
               na=None if i % 2 else [i, -i])
    if i % 2:
        row["d"] = "own%d" % i
    if i % 7 == 0:
        row["dn"] = i / 7
    if i % 10 == 0:
        row["extra"] = "dyn%d" % i
    rows.append(row)
c.insert({coll:?}, rows)
"#
        ),
    );
}

/// A BM25 function over `text` into the sparse `bm`, indexed for BM25 search.
fn seed_bm25(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
from pymilvus import Function, FunctionType
schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("text", DataType.VARCHAR, max_length=512, enable_analyzer=True)
schema.add_field("bm", DataType.SPARSE_FLOAT_VECTOR)
schema.add_field("d", DataType.INT64, default_value=42)
schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25,
                             input_field_names=["text"], output_field_names=["bm"]))
idx = c.prepare_index_params()
idx.add_index("bm", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
r = random.Random(11)
docs = [dict(id=i, text=" ".join(r.choice(words) for _ in range(3 + i % 9))) for i in range(200)]
c.insert({coll:?}, docs)
"#
        ),
    );
}

/// GEOMETRY and TIMESTAMPTZ fields, plain, nullable (with nulls) and with defaults, in a
/// collection whose `timezone` is Asia/Shanghai: times are written with offsets and without
/// (read in that zone); WKT in the spellings Milvus Lite keeps as written. 300 rows.
fn seed_geo_time(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
# This long a VARCHAR makes planrun's pages a few hundred rows: 300 rows span several.
schema.add_field("note", DataType.VARCHAR, max_length=65535)
schema.add_field("g", DataType.GEOMETRY)
schema.add_field("t", DataType.TIMESTAMPTZ)
schema.add_field("gn", DataType.GEOMETRY, nullable=True)
schema.add_field("tn", DataType.TIMESTAMPTZ, nullable=True)
schema.add_field("gd", DataType.GEOMETRY, default_value="POINT (0 0)")
schema.add_field("td", DataType.TIMESTAMPTZ, nullable=True, default_value="2020-02-02T02:02:02+01:00")
idx = c.prepare_index_params()
idx.add_index("v", index_type="FLAT", metric_type="L2")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong",
                    properties={{"timezone": "Asia/Shanghai"}})
r = random.Random(13)
def geo(i):
    x, y = round(r.uniform(-180, 180), 6), round(r.uniform(-90, 90), 6)
    return ["POINT (%s %s)" % (x, y), "point(%s %s)" % (x, y), "POLYGON ((0 0, %s 0, %s %s, 0 0))" % (x, x, y)][i % 3]
def when(i):
    frac = "" if i % 2 else ".%06d" % r.randrange(10**6)
    return "%04d-%02d-%02dT%02d:%02d:%02d%s%s" % (r.randint(2, 9998), r.randint(1, 12), r.randint(1, 28),
        r.randrange(24), r.randrange(60), r.randrange(60), frac, ["Z", "+05:30", "-08:00", ""][i % 4])
rows = []
for i in range(300):
    row = dict(id=i, v=[r.random() for _ in range(4)], note="n%d" % i, g=geo(i), t=when(i),
               gn=None if i % 3 == 0 else geo(i + 1), tn=None if i % 4 == 0 else when(i + 1))
    if i % 2:
        row["gd"] = geo(i + 2)
    if i % 5 == 0:
        row["td"] = when(i + 2)
    elif i % 5 == 1:
        row["td"] = None  # a null where there is a default is the default
    if i % 10 == 0:
        row["extra"] = "dyn%d" % i
    rows.append(row)
c.insert({coll:?}, rows)
"#
        ),
    );
}

/// The ranked ids of a few BM25 text searches.
fn bm25_ranks(s: &Server, db: &str, coll: &str) -> String {
    pymilvus(
        s,
        &format!(
            r#"{ROWS_PY}
c = connect({uri:?}, {token:?}, {db:?})
queries = ["alpha beta", "gamma gamma delta", "omicron", "pi rho sigma theta"]
res = c.search({coll:?}, data=queries, anns_field="bm", limit=10, output_fields=["id"],
               search_params={{"metric_type": "BM25"}})
print([[h["id"] for h in hits] for hits in res])
"#,
            uri = s.uri,
            token = s.token,
        ),
    )
}

/// Every Parquet file under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

fn drop_all(s: &Server, db: &str, colls: &[&str]) {
    pymilvus(
        s,
        &format!(
            r#"{ROWS_PY}
c = connect({uri:?}, {token:?}, {db:?})
for name in {colls:?}:
    if c.has_collection(name):
        c.drop_collection(name)
if {db:?} != "default" and {db:?} in c.list_databases():
    c.using_database("default")
    c.drop_database({db:?})
"#,
            uri = s.uri,
            token = s.token,
        ),
    );
}

#[test]
fn lite_to_lite_into_another_database_keeps_sparse_nulls_defaults_and_every_type() {
    let (from, to) = (open("lite", &LITE), open("lite_b", &LITE));
    let (nulls, portable) = (support::unique("modnull"), support::unique("modport"));
    seed_nulls_and_sparse(&from, &nulls);
    seed_portable(&from, &portable);
    let (_dir, db, _) = move_into_new_database(&from, &to, &[&nulls, &portable]);
    let rows = assert_same(&from, &nulls, &to, &db, &format!("{nulls}_bak"), true);
    assert_same(&from, &portable, &to, &db, &format!("{portable}_bak"), true);
    // Nulls are nulls on the target (not zeros), and defaults are the values of rows that left
    // the field out.
    let rows = rows.as_array().unwrap();
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| rows.iter().filter(|r| f(r)).count();
    assert_eq!(count(&|r| r["n"].is_null()), 100);
    assert_eq!(count(&|r| r["na"].is_null()), 150);
    assert_eq!(count(&|r| r["nj"].is_null()), 60);
    assert_eq!(count(&|r| r["d"] == "dflt"), 150);
    assert_eq!(count(&|r| r["dn"] == 1.5), 300 - 43);
    // The target keeps the default: a row inserted without the field gets it.
    let got = pymilvus(
        &to,
        &format!(
            r#"{ROWS_PY}
c = connect({uri:?}, "", {db:?})
c.insert("{nulls}_bak", [dict(id=100000, sp={{1: 1.0}}, n=None, ns=None, nj=None, na=None)])
print(c.query("{nulls}_bak", filter="id == 100000", output_fields=["d", "dn"])[0])
"#,
            uri = to.uri
        ),
    );
    assert!(
        got.contains("'d': 'dflt'") && got.contains("'dn': 1.5"),
        "{got}"
    );
    drop_all(&from, "default", &[&nulls, &portable]);
    drop_all(
        &to,
        &db,
        &[&format!("{nulls}_bak"), &format!("{portable}_bak")],
    );
}

#[test]
fn a_bm25_collection_searches_the_same_after_the_move() {
    let (from, to) = (open("lite", &LITE), open("lite_b", &LITE));
    let coll = support::unique("modbm25");
    seed_bm25(&from, &coll);
    let (dir, db, out) = move_into_new_database(&from, &to, &[&coll]);
    assert!(
        out.contains("`bm` is computed by BM25 function `text_bm25` on each side"),
        "{out}"
    );
    // The backup records the function and its output field, but no file holds the output:
    // the target computed it from the text.
    let backup = dir.path().join("backups/backup/modern");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(backup.join("meta/full_meta.json")).unwrap())
            .unwrap();
    let schema = &meta["collection_backups"][0]["schema"];
    assert_eq!(schema["functions"][0]["name"], "text_bm25", "{schema}");
    assert!(
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "bm" && f["is_function_output"] == true),
        "{schema}"
    );
    let files = parquet_files(&backup);
    assert!(!files.is_empty());
    for f in files {
        let batches =
            planrun::codec::arrow::from_parquet(std::fs::read(&f).unwrap().into()).unwrap();
        let names: Vec<String> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|x| x.name().clone())
            .collect();
        assert_eq!(names, ["id", "text", "d"], "{}", f.display());
    }
    // Every field, `bm` included, is the same row by row; the function and default too.
    assert_same(&from, &coll, &to, &db, &format!("{coll}_bak"), true);
    let (a, b) = (
        bm25_ranks(&from, "default", &coll),
        bm25_ranks(&to, &db, &format!("{coll}_bak")),
    );
    assert!(a.matches(',').count() > 30, "searches find rows: {a}");
    assert_eq!(a, b, "BM25 ranks the same on the target");
    drop_all(&from, "default", &[&coll]);
    drop_all(&to, &db, &[&format!("{coll}_bak")]);
}

#[test]
fn lite_and_milvus_2_3_exchange_every_type_both_have() {
    let lite = open("lite", &LITE);
    for (from, to) in [
        (lite, open("b", &MILVUS_B)),
        (milvus_a(), open("lite", &LITE)),
    ] {
        let coll = support::unique("modx");
        seed_portable(&from, &coll);
        let (_dir, plan) = plan(&from, &to, &[&coll], "");
        let (good, out) = apply(&plan, None);
        assert!(good, "{out}");
        assert!(out.contains("equals"), "{out}");
        // Milvus Lite does not report `max_length` of a VARCHAR array: rows only.
        let rows = assert_same(&from, &coll, &to, "default", &format!("{coll}_bak"), false);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 300);
        assert!(
            rows.iter().filter(|r| r.get("dyn").is_some()).count() == 75,
            "dynamic keys kept"
        );
        drop_all(&from, "default", &[&coll]);
        drop_all(&to, "default", &[&format!("{coll}_bak")]);
    }
}

#[test]
fn lite_to_lite_keeps_geometries_and_timestamptz_with_nulls_and_defaults() {
    let (from, to) = (open("lite", &LITE), open("lite_b", &LITE));
    let coll = support::unique("modgeo");
    seed_geo_time(&from, &coll);
    let (dir, db, _) = move_into_new_database(&from, &to, &[&coll]);
    let target = format!("{coll}_bak");
    let rows = assert_same(&from, &coll, &to, &db, &target, true);
    let rows = rows.as_array().unwrap();
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| rows.iter().filter(|r| f(r)).count();
    assert_eq!(count(&|r| r["gn"].is_null()), 100);
    assert_eq!(count(&|r| r["tn"].is_null()), 75);
    assert_eq!(count(&|r| r["gd"] == "POINT (0 0)"), 150);
    assert_eq!(count(&|r| r["td"] == "2020-02-02T01:02:02Z"), 240);
    // The files hold instants as RFC 3339 text in UTC, as Milvus's import reads them; pages
    // were many files.
    let files = parquet_files(&dir.path().join("backups/backup/modern"));
    assert!(files.len() > 1, "{files:?}");
    let batches =
        planrun::codec::arrow::from_parquet(std::fs::read(&files[0]).unwrap().into()).unwrap();
    let t = batches[0].column_by_name("t").unwrap();
    let t = t
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .expect("text");
    assert!(t.iter().flatten().all(|v| v.ends_with('Z')), "{t:?}");
    // The target keeps the defaults for rows inserted later.
    let got = pymilvus(
        &to,
        &format!(
            r#"{ROWS_PY}
c = connect({uri:?}, "", {db:?})
c.insert("{target}", [dict(id=100000, v=[0.0] * 4, note="", g="POINT (1 1)", t="2024-01-01T00:00:00Z", gn=None, tn=None)])
print(c.query("{target}", filter="id == 100000", output_fields=["gd", "td"])[0])
"#,
            uri = to.uri
        ),
    );
    assert!(
        got.contains("'gd': 'POINT (0 0)'") && got.contains("'td': '2020-02-02T01:02:02Z'"),
        "{got}"
    );
    drop_all(&from, "default", &[&coll]);
    drop_all(&to, &db, &[&target]);
}

/// Runs the dry run and apply of `plan`, both refused; `target` must not have been created.
fn assert_refused(plan: &Path, to: &Server, target: &str, expected: &[&str]) {
    let (code, out) = dry_run(plan);
    assert_eq!(code, 1, "{out}");
    for e in expected {
        assert!(out.contains(e), "`{e}` missing from:\n{out}");
    }
    let (good, out) = apply(plan, None);
    assert!(!good, "{out}");
    assert!(out.contains("not applying"), "{out}");
    let exists = pymilvus(to, &format!("print(c.has_collection({target:?}))"));
    assert_eq!(exists.trim(), "False", "apply created nothing");
}

#[test]
fn the_dry_run_refuses_what_milvus_2_3_lacks() {
    let from = open("lite", &LITE);
    let to = open("b", &MILVUS_B);
    let (nulls, bm25) = (support::unique("modrn"), support::unique("modrb"));
    seed_nulls_and_sparse(&from, &nulls);
    seed_bm25(&from, &bm25);
    let (_dir, plan) = plan(&from, &to, &[&nulls, &bm25], "");
    assert_refused(
        &plan,
        &to,
        &format!("{nulls}_bak"),
        &[
            "field `sp` is a SparseFloatVector field, which Milvus v2.3.5",
            "field `n` is nullable, which Milvus v2.3.5",
            "field `d` has a default value, which Milvus v2.3.5",
            "field(s) `bm` are computed by BM25 function `text_bm25`, which Milvus v2.3.5",
            "(from 2.5)",
        ],
    );
    let exists = pymilvus(&to, &format!("print(c.has_collection(\"{bm25}_bak\"))"));
    assert_eq!(exists.trim(), "False");
    drop_all(&from, "default", &[&nulls, &bm25]);
}

#[test]
fn the_dry_run_refuses_half_precision_vectors_where_the_target_lacks_them() {
    let from = milvus_a();
    let coll = support::unique("modf16");
    pymilvus(
        &from,
        &format!(
            r#"
import numpy as np
schema = c.create_schema(auto_id=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("f16", DataType.FLOAT16_VECTOR, dim=4)
idx = c.prepare_index_params()
idx.add_index("f16", index_type="FLAT", metric_type="L2")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
c.insert({coll:?}, [dict(id=i, f16=np.array([i, 1, 2, 3], dtype=np.float16)) for i in range(20)])
c.load_collection({coll:?})
"#
        ),
    );
    for (to, lacks) in [
        (
            open("lite", &LITE),
            "which Milvus Lite (milvus_lite-3.2.2) does not have",
        ),
        (open("b", &MILVUS_B), "(from 2.4)"),
    ] {
        let (_dir, plan) = plan(&from, &to, &[&coll], "");
        assert_refused(
            &plan,
            &to,
            &format!("{coll}_bak"),
            &["field `f16` is a Float16Vector field", lacks],
        );
    }
    drop_all(&from, "default", &[&coll]);
}

#[test]
fn the_dry_run_refuses_geometries_and_timestamptz_where_the_target_lacks_them() {
    let from = open("lite", &LITE);
    let coll = support::unique("modrg");
    seed_geo_time(&from, &coll);
    // Milvus 2.3.5 (the pip server says "v2.3.5-lite") by version; Lite 2.5 reports none.
    for (to, lacks, since) in [
        (
            milvus_a(),
            "which Milvus v2.3.5",
            "does not have (from 2.6)",
        ),
        (
            open("lite25", &LITE25),
            "which Milvus Lite (milvus_lite 2.x (no GetVersion)) does not have",
            "",
        ),
    ] {
        let (_dir, plan) = plan(&from, &to, &[&coll], "");
        assert_refused(
            &plan,
            &to,
            &format!("{coll}_bak"),
            &[
                &format!("field `g` is a Geometry field, {lacks}"),
                &format!("field `t` is a Timestamptz field, {lacks}"),
                "field `tn` is a Timestamptz field",
                since,
            ],
        );
    }
    drop_all(&from, "default", &[&coll]);
}
