//! The Milvus connector against the real servers: Milvus 2.3.5 A (auth on), B, and Milvus Lite.

use std::collections::BTreeMap;
use std::time::Duration;

use planrun::milvus::data::{self, Pk};
use planrun::milvus::pb::common::{ConsistencyLevel, LoadState, SegmentState};
use planrun::milvus::pb::schema::{
    CollectionSchema, DataType, FieldData, FieldSchema, field_data, scalar_field,
};
use planrun::milvus::{Fresh, MilvusClient, MilvusConfig, MilvusError};

use crate::support::clients::{DIM, client_a, config_a, field, kv, small_schema};
use crate::support::{LITE, unique};

const WAIT: Duration = Duration::from_secs(120);

/// int64 key, varchar, bool, int8/16/32, float, double, JSON and a float vector; dynamic on.
fn wide_schema() -> CollectionSchema {
    CollectionSchema {
        fields: vec![
            FieldSchema {
                is_primary_key: true,
                ..field("id", DataType::Int64)
            },
            FieldSchema {
                type_params: vec![kv("max_length", "64")],
                ..field("title", DataType::VarChar)
            },
            field("flag", DataType::Bool),
            field("i8", DataType::Int8),
            field("i16", DataType::Int16),
            field("i32", DataType::Int32),
            field("f32", DataType::Float),
            field("f64", DataType::Double),
            field("doc", DataType::Json),
            FieldSchema {
                type_params: vec![kv("dim", &DIM.to_string())],
                ..field("vec", DataType::FloatVector)
            },
        ],
        enable_dynamic_field: true,
        ..Default::default()
    }
}

fn title_of(id: i64) -> String {
    format!("title \"{id}\"")
}

/// Rows `ids` of the wide schema as columns; every value derives from the id so a reader can
/// check it.
fn wide_rows(ids: &[i64]) -> Vec<FieldData> {
    vec![
        data::int64_column("id", ids.to_vec()),
        data::varchar_column("title", ids.iter().map(|&i| title_of(i)).collect()),
        data::bool_column("flag", ids.iter().map(|i| i % 2 == 0).collect()),
        data::int_column(
            "i8",
            DataType::Int8,
            ids.iter().map(|i| (i % 100) as i32).collect(),
        ),
        data::int_column(
            "i16",
            DataType::Int16,
            ids.iter().map(|i| (i % 1000) as i32).collect(),
        ),
        data::int_column(
            "i32",
            DataType::Int32,
            ids.iter().map(|&i| i as i32 * 3).collect(),
        ),
        data::float_column("f32", ids.iter().map(|&i| i as f32 / 2.0).collect()),
        data::double_column("f64", ids.iter().map(|&i| i as f64 * 1.5).collect()),
        data::json_column(
            "doc",
            ids.iter()
                .map(|i| format!(r#"{{"n": {i}, "tag": "t{}"}}"#, i % 3).into_bytes())
                .collect(),
        ),
        data::float_vector_column(
            "vec",
            DIM,
            ids.iter()
                .flat_map(|&i| (0..DIM).map(move |d| (i * 10 + d) as f32 / 100.0))
                .collect(),
        ),
        data::dynamic_column(
            ids.iter()
                .map(|i| format!(r#"{{"extra": {i}}}"#).into_bytes())
                .collect(),
        ),
    ]
}

fn column<'a>(fields: &'a [FieldData], name: &str) -> &'a FieldData {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .unwrap_or_else(|| panic!("no column `{name}` in {:?}", names(fields)))
}

fn names(fields: &[FieldData]) -> Vec<&str> {
    fields.iter().map(|f| f.field_name.as_str()).collect()
}

fn strings(f: &FieldData) -> Vec<String> {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => match &s.data {
            Some(scalar_field::Data::StringData(a)) => a.data.clone(),
            other => panic!("`{}` is not a string column: {other:?}", f.field_name),
        },
        _ => panic!("`{}` is not a scalar column", f.field_name),
    }
}

fn ints(f: &FieldData) -> Vec<i32> {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => match &s.data {
            Some(scalar_field::Data::IntData(a)) => a.data.clone(),
            other => panic!("`{}` is not an int column: {other:?}", f.field_name),
        },
        _ => panic!("`{}` is not a scalar column", f.field_name),
    }
}

fn jsons(f: &FieldData) -> Vec<serde_json::Value> {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => match &s.data {
            Some(scalar_field::Data::JsonData(a)) => a
                .data
                .iter()
                .map(|b| serde_json::from_slice(b).expect("valid JSON"))
                .collect(),
            other => panic!("`{}` is not a JSON column: {other:?}", f.field_name),
        },
        _ => panic!("`{}` is not a scalar column", f.field_name),
    }
}

fn int_ids(f: &FieldData) -> Vec<i64> {
    data::pks(f)
        .expect("a key column")
        .into_iter()
        .map(|pk| match pk {
            Pk::Int(i) => i,
            Pk::Str(s) => panic!("string key {s}"),
        })
        .collect()
}

/// Walks every row of `collection` with the primary-key cursor; returns the pages' columns
/// merged by key: id -> (title, ...).
async fn walk(
    c: &MilvusClient,
    collection: &str,
    partitions: &[String],
    page: usize,
    output: &[String],
) -> (Vec<i64>, BTreeMap<i64, String>, usize) {
    let mut after: Option<Pk> = None;
    let mut seen = Vec::new();
    let mut titles = BTreeMap::new();
    let mut pages = 0;
    loop {
        let p = c
            .query_page(
                collection,
                partitions,
                "id",
                after.as_ref(),
                "",
                page,
                output,
                Fresh::Strong,
            )
            .await
            .expect("query page");
        if p.num_rows == 0 {
            assert!(p.last_pk.is_none());
            break;
        }
        assert!(
            p.num_rows <= page,
            "page of {} rows > limit {page}",
            p.num_rows
        );
        pages += 1;
        let ids = int_ids(column(&p.fields, "id"));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "page not sorted by key: {ids:?}"
        );
        if output.iter().any(|o| o == "title") {
            for (id, t) in ids.iter().zip(strings(column(&p.fields, "title"))) {
                titles.insert(*id, t);
            }
        }
        assert_eq!(p.last_pk, ids.last().copied().map(Pk::Int));
        seen.extend(ids);
        after = p.last_pk;
    }
    (seen, titles, pages)
}

/// Drops the collections even when the test body panicked. It connects anew on its own runtime:
/// the test's channel is driven by the test's runtime, which is blocked while this runs.
struct DropOnExit {
    config: MilvusConfig,
    names: Vec<String>,
}

impl Drop for DropOnExit {
    fn drop(&mut self) {
        let config = self.config.clone();
        let names = std::mem::take(&mut self.names);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                if let Ok(client) = MilvusClient::connect(&config).await {
                    for n in names {
                        let _ = client.drop_collection(&n).await;
                    }
                }
            })
        })
        .join();
    }
}

#[tokio::test]
async fn milvus_a_collection_lifecycle() {
    let c = client_a().await;
    assert_eq!(c.name(), "milvus_a");
    assert!(
        c.server_version().contains("2.3.5"),
        "{}",
        c.server_version()
    );
    assert!(!c.is_lite());
    c.check_health().await.unwrap();
    assert!(
        c.list_databases()
            .await
            .unwrap()
            .contains(&"default".to_string())
    );

    let name = unique("pr_wide");
    let _guard = DropOnExit {
        config: config_a(),
        names: vec![name.clone()],
    };
    assert!(!c.has_collection(&name).await.unwrap());
    c.create_collection(&name, &wide_schema(), 1, ConsistencyLevel::Bounded, &[])
        .await
        .unwrap();
    assert!(c.has_collection(&name).await.unwrap());
    assert!(c.show_collections().await.unwrap().contains(&name));

    let info = c.describe_collection(&name).await.unwrap();
    assert_eq!(info.name, name);
    assert!(info.collection_id > 0);
    assert_eq!(info.shards_num, 1);
    assert_eq!(info.consistency_level, ConsistencyLevel::Bounded);
    assert!(info.schema.enable_dynamic_field);
    assert_eq!(info.primary_field().unwrap().name, "id");
    let user_fields: Vec<_> = info
        .schema
        .fields
        .iter()
        .filter(|f| !f.is_dynamic)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        user_fields,
        [
            "id", "title", "flag", "i8", "i16", "i32", "f32", "f64", "doc", "vec"
        ]
    );

    for p in ["p1", "p2"] {
        c.create_partition(&name, p).await.unwrap();
    }
    assert!(c.has_partition(&name, "p1").await.unwrap());
    assert!(!c.has_partition(&name, "nope").await.unwrap());
    let parts = c.show_partitions(&name).await.unwrap();
    let mut part_names: Vec<_> = parts.iter().map(|p| p.name.as_str()).collect();
    part_names.sort();
    assert_eq!(part_names, ["_default", "p1", "p2"]);
    assert!(parts.iter().all(|p| p.id > 0));

    // 100 rows in _default, 60 in p1, 40 in p2.
    let batches: [(Option<&str>, std::ops::Range<i64>); 3] = [
        (None, 0..100),
        (Some("p1"), 100..160),
        (Some("p2"), 160..200),
    ];
    for (part, ids) in &batches {
        let ids: Vec<i64> = ids.clone().collect();
        let r = c
            .insert(&name, *part, wide_rows(&ids), ids.len() as u32)
            .await
            .unwrap();
        assert_eq!(r.insert_count, ids.len() as i64);
        assert!(r.timestamp > 0);
    }

    let fr = c.flush_and_wait(&name, WAIT).await.unwrap();
    assert_eq!(fr.collection, name);
    assert!(fr.flush_ts > 0);
    let segs = c.get_persistent_segment_info(&name).await.unwrap();
    // One shard, three partitions with data: one sealed segment each.
    assert_eq!(segs.len(), 3, "{segs:?}");
    assert_eq!(segs.iter().map(|s| s.num_rows).sum::<i64>(), 200);
    assert!(segs.iter().all(|s| s.collection_id == info.collection_id));
    assert!(
        segs.iter()
            .all(|s| matches!(s.state, SegmentState::Flushed | SegmentState::Sealed))
    );
    let p1_id = parts.iter().find(|p| p.name == "p1").unwrap().id;
    assert_eq!(
        segs.iter()
            .find(|s| s.partition_id == p1_id)
            .unwrap()
            .num_rows,
        60
    );

    assert!(c.describe_index(&name).await.unwrap().is_empty());
    let params = [
        ("index_type".to_string(), "FLAT".to_string()),
        ("metric_type".to_string(), "L2".to_string()),
        ("params".to_string(), "{}".to_string()),
    ];
    c.create_index(&name, "vec", "vec_idx", &params)
        .await
        .unwrap();
    let idx = c.describe_index(&name).await.unwrap();
    assert_eq!(idx.len(), 1);
    assert_eq!(idx[0].index_name, "vec_idx");
    assert_eq!(idx[0].field_name, "vec");
    assert!(
        idx[0]
            .params
            .iter()
            .any(|(k, v)| k == "index_type" && v == "FLAT")
    );

    assert_eq!(c.get_load_state(&name).await.unwrap(), LoadState::NotLoad);
    c.load_collection(&name).await.unwrap();
    c.wait_loaded(&name, WAIT).await.unwrap();
    assert_eq!(c.get_load_state(&name).await.unwrap(), LoadState::Loaded);

    // A growing row after the flush: count(*) with Strong consistency must see it.
    c.insert(&name, Some("p2"), wide_rows(&[200]), 1)
        .await
        .unwrap();
    assert_eq!(c.query_count(&name, &[], "").await.unwrap(), 201);
    assert_eq!(c.query_count(&name, &["p1".into()], "").await.unwrap(), 60);
    assert_eq!(c.query_count(&name, &[], "id < 10").await.unwrap(), 10);

    // Cursor walk over every row, 7 per page: each key exactly once, in order.
    let out: Vec<String> = ["title", "flag", "i8", "doc", "vec", "$meta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (seen, titles, pages) = walk(&c, &name, &[], 7, &out).await;
    assert_eq!(seen, (0..=200).collect::<Vec<_>>());
    assert_eq!(pages, 201usize.div_ceil(7));
    assert!(titles.iter().all(|(id, t)| *t == title_of(*id)));

    // One page's other columns carry the values written.
    let p = c
        .query_page(
            &name,
            &["p1".into()],
            "id",
            Some(&Pk::Int(120)),
            "i8 >= 0",
            5,
            &out,
            Fresh::Strong,
        )
        .await
        .unwrap();
    assert_eq!(int_ids(column(&p.fields, "id")), [121, 122, 123, 124, 125]);
    assert_eq!(ints(column(&p.fields, "i8")), [21, 22, 23, 24, 25]);
    assert_eq!(jsons(column(&p.fields, "doc"))[0]["n"], 121);
    let meta = column(&p.fields, "$meta");
    assert!(meta.is_dynamic);
    assert_eq!(jsons(meta)[0]["extra"], 121);
    assert_eq!(data::column_len(column(&p.fields, "vec")), 5);

    // Aliases.
    let alias = unique("pr_alias");
    c.create_alias(&name, &alias).await.unwrap();
    assert_eq!(
        c.describe_alias(&alias).await.unwrap().as_deref(),
        Some(name.as_str())
    );
    assert_eq!(c.list_aliases(&name).await.unwrap(), vec![alias.clone()]);
    assert_eq!(
        c.describe_collection(&name).await.unwrap().aliases,
        vec![alias.clone()]
    );
    let other = unique("pr_other");
    let _guard2 = DropOnExit {
        config: config_a(),
        names: vec![other.clone()],
    };
    c.create_collection(&other, &wide_schema(), 1, ConsistencyLevel::Strong, &[])
        .await
        .unwrap();
    c.alter_alias(&other, &alias).await.unwrap();
    assert_eq!(
        c.describe_alias(&alias).await.unwrap().as_deref(),
        Some(other.as_str())
    );
    c.drop_alias(&alias).await.unwrap();
    assert_eq!(c.describe_alias(&alias).await.unwrap(), None);

    // Rename, then drop by the new name.
    let renamed = unique("pr_renamed");
    c.rename_collection(&other, &renamed, None).await.unwrap();
    assert!(!c.has_collection(&other).await.unwrap());
    assert!(c.has_collection(&renamed).await.unwrap());
    c.drop_collection(&renamed).await.unwrap();

    c.drop_collection(&name).await.unwrap();
    assert!(!c.has_collection(&name).await.unwrap());
}

/// A simple schema for the import test: key, text, vector.
fn small_rows(ids: &[i64]) -> Vec<FieldData> {
    vec![
        data::int64_column("id", ids.to_vec()),
        data::varchar_column("title", ids.iter().map(|&i| title_of(i)).collect()),
        data::float_vector_column(
            "vec",
            DIM,
            ids.iter().flat_map(|&i| [i as f32; DIM as usize]).collect(),
        ),
    ]
}

async fn index_and_load(c: &MilvusClient, name: &str) {
    let params = [
        ("index_type".to_string(), "FLAT".to_string()),
        ("metric_type".to_string(), "L2".to_string()),
        ("params".to_string(), "{}".to_string()),
    ];
    c.create_index(name, "vec", "vec_idx", &params)
        .await
        .unwrap();
    c.load_collection(name).await.unwrap();
    c.wait_loaded(name, WAIT).await.unwrap();
}

/// The binlog restore path: flush X, import each live segment's insert and delta logs into a
/// new collection Y with `backup=true`, and find X's rows in Y, deletions included.
#[tokio::test]
async fn milvus_a_import_binlogs_with_deletes() {
    let c = client_a().await;
    let x = unique("pr_src");
    let y = unique("pr_dst");
    let _guard = DropOnExit {
        config: config_a(),
        names: vec![x.clone(), y.clone()],
    };
    c.create_collection(&x, &small_schema(), 1, ConsistencyLevel::Strong, &[])
        .await
        .unwrap();
    c.create_partition(&x, "p1").await.unwrap();
    // p2 gets no deletes: its segment has no delta_log directory at all.
    c.create_partition(&x, "p2").await.unwrap();
    c.insert(
        &x,
        Some("p2"),
        small_rows(&(2000..2020).collect::<Vec<_>>()),
        20,
    )
    .await
    .unwrap();
    let default_ids: Vec<i64> = (0..150).collect();
    let p1_ids: Vec<i64> = (1000..1100).collect();
    c.insert(&x, None, small_rows(&default_ids), 150)
        .await
        .unwrap();
    c.insert(&x, Some("p1"), small_rows(&p1_ids), 100)
        .await
        .unwrap();
    // Deleted before the flush: these live only in delta logs next to the insert logs.
    let deleted = [3i64, 4, 77, 1001, 1050];
    assert_eq!(c.delete(&x, None, "id in [3, 4, 77]").await.unwrap(), 3);
    assert_eq!(
        c.delete(&x, Some("p1"), "id in [1001, 1050]")
            .await
            .unwrap(),
        2
    );
    c.flush_and_wait(&x, WAIT).await.unwrap();

    let info = c.describe_collection(&x).await.unwrap();
    let parts = c.show_partitions(&x).await.unwrap();
    let segs = c.get_persistent_segment_info(&x).await.unwrap();
    assert_eq!(segs.len(), 3, "{segs:?}");

    c.create_collection(
        &y,
        &info.schema,
        info.shards_num,
        info.consistency_level,
        &[],
    )
    .await
    .unwrap();
    c.create_partition(&y, "p1").await.unwrap();
    c.create_partition(&y, "p2").await.unwrap();

    let mut tasks = Vec::new();
    for s in &segs {
        let part = &parts.iter().find(|p| p.id == s.partition_id).unwrap().name;
        // Object keys inside bucket-a, rootPath `files` included.
        let files = vec![
            format!(
                "files/insert_log/{}/{}/{}/",
                info.collection_id, s.partition_id, s.id
            ),
            format!(
                "files/delta_log/{}/{}/{}/",
                info.collection_id, s.partition_id, s.id
            ),
        ];
        let t = c
            .import(&y, Some(part), files, &[("backup".into(), "true".into())])
            .await
            .unwrap();
        assert_eq!(t.len(), 1);
        tasks.extend(t);
    }
    let states = c.wait_import(&y, &tasks, WAIT).await.unwrap();
    assert_eq!(states.len(), 3);
    let live = 270 - deleted.len() as u64;
    // A wrong path (e.g. without the `files/` root) "completes" with 0 rows: check the counts.
    assert_eq!(states.iter().map(|s| s.row_count as u64).sum::<u64>(), live);
    let listed = c.list_import_tasks(&y, 10).await.unwrap();
    for t in &tasks {
        assert!(listed.iter().any(|l| l.id == *t), "task {t} not listed");
    }

    index_and_load(&c, &x).await;
    index_and_load(&c, &y).await;
    assert_eq!(c.query_count(&x, &[], "").await.unwrap(), live);
    assert_eq!(c.query_count(&y, &[], "").await.unwrap(), live);
    assert_eq!(c.query_count(&y, &["p1".into()], "").await.unwrap(), 98);
    assert_eq!(c.query_count(&y, &["p2".into()], "").await.unwrap(), 20);

    let out = vec!["title".to_string()];
    let (seen_x, titles_x, _) = walk(&c, &x, &[], 1000, &out).await;
    let (seen_y, titles_y, _) = walk(&c, &y, &[], 64, &out).await;
    assert_eq!(seen_x, seen_y);
    assert_eq!(titles_x, titles_y);
    for d in deleted {
        assert!(!seen_y.contains(&d), "deleted row {d} came back");
    }
    assert_eq!(seen_y.len() as u64, live);
}

#[tokio::test]
async fn milvus_lite_rows_and_unimplemented_import() {
    let cfg = MilvusConfig::new("lite", LITE.require().uri());
    let c = MilvusClient::connect(&cfg).await.unwrap();
    assert!(c.is_lite(), "version {}", c.server_version());
    assert!(c.server_version().starts_with("milvus_lite"));

    let name = unique("pr_lite");
    let _guard = DropOnExit {
        config: cfg.clone(),
        names: vec![name.clone()],
    };
    c.create_collection(&name, &wide_schema(), 1, ConsistencyLevel::Strong, &[])
        .await
        .unwrap();
    // Inserted out of key order: Lite returns insertion order unless asked for an iterator.
    let ids: Vec<i64> = (0..45).rev().chain(100..120).collect();
    c.insert(&name, None, wide_rows(&ids), ids.len() as u32)
        .await
        .unwrap();
    c.load_collection(&name).await.unwrap();
    c.wait_loaded(&name, WAIT).await.unwrap();
    assert_eq!(c.query_count(&name, &[], "").await.unwrap(), 65);

    let (seen, titles, _) = walk(&c, &name, &[], 10, &["title".to_string()]).await;
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(titles.iter().all(|(id, t)| *t == title_of(*id)));

    let e = c
        .import(
            &name,
            None,
            vec!["x/".into()],
            &[("backup".into(), "true".into())],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MilvusError::Unimplemented { instance, rpc } if instance == "lite" && *rpc == "Import"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("`lite` does not implement Import"),
        "{e}"
    );
    let e = c.get_persistent_segment_info(&name).await.unwrap_err();
    assert!(matches!(e, MilvusError::Unimplemented { .. }), "{e:?}");

    c.drop_collection(&name).await.unwrap();
    assert!(!c.has_collection(&name).await.unwrap());
}
