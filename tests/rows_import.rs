//! A rows backup's Parquet files are Milvus's own import format: a file of a backup on Milvus
//! 2.3.5, imported as it is by that server's bulk import, holds the source's rows unchanged.

use crate::support::migrate::{apply, milvus_a, pymilvus};
use crate::support::{self, PLAN_HEAD, data};

/// Drops the collections and the backup's objects a test made, however it ends.
struct Cleanup {
    colls: Vec<String>,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.colls {
            data(&["drop", c]);
        }
        data(&["s3-clean", "--bucket", "bucket-a", "--prefix", &self.prefix]);
    }
}

/// The collection's schema, in pymilvus, as `schema` with its index as `idx`: every column type
/// Milvus 2.3.5's import was verified with, a dynamic field among them.
const SCHEMA: &str = r#"
schema = c.create_schema(auto_id=False, enable_dynamic_field=True)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("v", DataType.FLOAT_VECTOR, dim=8)
schema.add_field("title", DataType.VARCHAR, max_length=64)
schema.add_field("j", DataType.JSON)
schema.add_field("ai", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8)
idx = c.prepare_index_params()
idx.add_index("v", index_type="FLAT", metric_type="L2")
"#;

#[test]
fn a_rows_backup_file_is_imported_by_milvus_as_it_is() {
    let from = milvus_a();
    let coll = support::unique("rimp");
    let imported = format!("{coll}_imp");
    // Outside Milvus A's root path (`files`): the import reads any key of its bucket.
    let prefix = format!("import-test/{}", support::unique("bk"));
    let _cleanup = Cleanup {
        colls: vec![coll.clone(), imported.clone()],
        prefix: format!("{prefix}/"),
    };
    pymilvus(
        &from,
        &format!(
            r#"{SCHEMA}
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
r = random.Random(5)
rows = [dict(id=i * 7 - 5000, v=[r.uniform(-1, 1) for _ in range(8)], title="t%d" % i,
             j={{"n": i, "s": ["x"] * (i % 3), "f": r.random()}},
             ai=[r.randint(-2**40, 2**40) for _ in range(i % 5)],
             **({{"extra": i, "tag": "d%d" % i}} if i % 2 else {{}}))
        for i in range(1500)]
for k in range(0, len(rows), 500):
    c.insert({coll:?}, rows[k:k + 500])
"#
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            r#"{PLAN_HEAD}
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{coll}"]
to = "bucket_a:{prefix}"
mode = "rows"

[settings]
state_dir = "{state}"
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let (good, out) = apply(&plan, None);
    assert!(good, "{out}");

    // The first file of the backup, imported with pymilvus's own call into a fresh collection
    // of the same schema, then compared row by row (by key) with the source.
    let report = pymilvus(
        &from,
        &format!(
            r#"
import json, time, boto3
from pymilvus import connections, utility
from pymilvus.client.types import BulkInsertState
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
                  aws_access_key_id={key:?}, aws_secret_access_key={secret:?})
meta = json.loads(s3.get_object(Bucket="bucket-a", Key={prefix:?} + "/meta/rows_meta.json")["Body"].read())
assert meta["layout"] == "import", meta.get("layout")
f = meta["collections"][0]["partitions"][0]["files"][0]
# pyarrow reads the file with the fields as columns, in the types Milvus imports.
import io, pyarrow.parquet as pq
body = s3.get_object(Bucket="bucket-a", Key={prefix:?} + "/" + f["key"])["Body"].read()
types = {{fl.name: str(fl.type) for fl in pq.read_table(io.BytesIO(body)).schema}}
assert types == {{"id": "int64", "v": "list<item: float>", "title": "string", "j": "string",
                 "ai": "list<item: int64>", "$meta": "string"}}, types
{SCHEMA}
c.create_collection({imported:?}, schema=schema, index_params=idx, consistency_level="Strong")
c.release_collection({imported:?})
connections.connect(alias="default", uri={uri:?}, token="root:Milvus")
task = utility.do_bulk_insert(collection_name={imported:?}, files=[{prefix:?} + "/" + f["key"]])
deadline = time.time() + 180
while True:
    st = utility.get_bulk_insert_state(task)
    if st.state == BulkInsertState.ImportCompleted:
        break
    assert st.state not in (BulkInsertState.ImportFailed, BulkInsertState.ImportFailedAndCleaned), str(st)
    assert time.time() < deadline, "import not completed: " + str(st)
    time.sleep(0.1)
c.load_collection({imported:?})
def rows(coll):
    got = c.query(coll, filter="id >= %d and id <= %d" % (f["first"], f["last"]), output_fields=["*"], limit=16384)
    return {{r["id"]: r for r in got}}
want, have = rows({coll:?}), rows({imported:?})
assert len(want) == f["rows"] and len(have) == f["rows"], (len(want), len(have), f["rows"])
diff = [k for k in want if want[k] != have.get(k)]
assert not diff, (diff[:3], [want[k] for k in diff[:1]], [have.get(k) for k in diff[:1]])
print(json.dumps({{"rows": len(have), "file": f["key"]}}))
"#,
            key = support::S3_KEY.0,
            secret = support::S3_KEY.1,
            uri = from.uri,
        ),
    );
    let v: serde_json::Value = serde_json::from_str(report.trim().lines().last().unwrap()).unwrap();
    // The script compared every row of the file; readers split the 1,500 rows into files.
    assert!(v["rows"].as_u64().is_some_and(|n| n >= 500), "{v}");
}
