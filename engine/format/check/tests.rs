//! Tests of the backup checks on hand-built metas and an in-memory store.

use super::*;
use crate::format::meta::{Binlog, FieldBinlog, PartitionBackupInfo};
use crate::format::rows::{RowsCollection, RowsFile, RowsPartition};
use crate::schema::FieldSchema;
use crate::storage::{ByteStream, MemoryFault, MemoryStorage, ObjectMeta, Place};
use bytes::Bytes;
use futures::stream::BoxStream;

fn md5_of(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn schema() -> CollectionSchema {
    let field = |id: i64, name: &str, dynamic: bool| FieldSchema {
        field_id: id,
        name: name.into(),
        is_dynamic: dynamic,
        ..Default::default()
    };
    CollectionSchema {
        name: "c".into(),
        fields: vec![
            field(100, "pk", false),
            field(101, "vec", false),
            field(102, "$meta", true),
        ],
        enable_dynamic_field: true,
        ..Default::default()
    }
}

/// A segment with `logs` binlogs of every stored field, each holding `content(field, log)`.
fn segment(coll: i64, id: i64, logs: i64) -> SegmentBackupInfo {
    let binlogs = [0, 1, 100, 101, 102]
        .into_iter()
        .map(|field| FieldBinlog {
            field_id: field,
            binlogs: (0..logs)
                .map(|log| {
                    let data = content(coll, id, field, log);
                    Binlog {
                        log_path: String::new(),
                        log_size: data.len() as i64,
                        log_id: 1000 + log,
                        md5: Some(md5_of(&data)),
                    }
                })
                .collect(),
        })
        .collect();
    SegmentBackupInfo {
        segment_id: id,
        collection_id: coll,
        partition_id: 9,
        group_id: id,
        num_of_rows: 10,
        binlogs,
        ..Default::default()
    }
}

fn content(coll: i64, seg: i64, field: i64, log: i64) -> Vec<u8> {
    format!("coll {coll} seg {seg} field {field} log {log}").into_bytes()
}

fn collection(name: &str, coll: i64) -> CollectionBackupInfo {
    CollectionBackupInfo {
        collection_id: coll,
        db_name: "db".into(),
        collection_name: name.into(),
        schema: schema(),
        partition_backups: vec![PartitionBackupInfo {
            partition_id: 9,
            segment_backups: vec![segment(coll, 7, 2), segment(coll, 8, 1)],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn backup() -> BackupInfo {
    BackupInfo {
        collection_backups: vec![collection("a", 1), collection("b", 2)],
        ..Default::default()
    }
}

fn at() -> Location {
    Location::new("mem", "backups/one").unwrap()
}

/// A store holding every file of `backup()` under `at()`, plus a sibling backup's file.
async fn stored() -> MemoryStorage {
    let store = MemoryStorage::new("mem");
    for c in &backup().collection_backups {
        for s in &c.partition_backups[0].segment_backups {
            for fb in &s.binlogs {
                for (i, b) in fb.binlogs.iter().enumerate() {
                    let key =
                        at().join(&format!("{}/{}/{}", s.insert_dir(), fb.field_id, b.log_id));
                    let data = content(c.collection_id, s.segment_id, fb.field_id, i as i64);
                    store.put_bytes(&key, Bytes::from(data)).await.unwrap();
                }
            }
        }
    }
    store
        .put_bytes("backups/one-old/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
}

fn key_of(coll: i64, seg: i64, field: i64, log: i64) -> String {
    format!(
        "binlogs/insert_log/{coll}/9/{seg}/{seg}/{field}/{}",
        1000 + log
    )
}

#[tokio::test]
async fn a_complete_backup_passes() {
    let store = stored().await;
    let damage = verify_backup(&store, &at(), &backup(), None).await.unwrap();
    assert!(damage.is_empty(), "{damage:?}");
    // The listing's MD5s sufficed: nothing was read.
    assert_eq!(store.bytes_read(), 0);
}

#[tokio::test]
async fn missing_truncated_and_replaced_files_are_reported_per_collection() {
    let store = stored().await;
    let missing = key_of(1, 7, 101, 1);
    let truncated = key_of(2, 8, 0, 0);
    let replaced = key_of(2, 7, 102, 0);
    store.delete(&[at().join(&missing)]).await.unwrap();
    store
        .put_bytes(&at().join(&truncated), Bytes::from_static(b"coll"))
        .await
        .unwrap();
    let mut other = content(2, 7, 102, 0);
    other[0] ^= 1;
    store
        .put_bytes(&at().join(&replaced), Bytes::from(other.clone()))
        .await
        .unwrap();

    let damage = verify_backup(&store, &at(), &backup(), None).await.unwrap();
    let got: Vec<(&str, &str, &Problem)> = damage
        .iter()
        .map(|d| (d.collection.as_str(), d.key.as_str(), &d.problem))
        .collect();
    let full = content(2, 8, 0, 0).len() as u64;
    assert_eq!(
        got,
        [
            ("a", missing.as_str(), &Problem::Missing),
            (
                "b",
                replaced.as_str(),
                &Problem::Md5 {
                    found: md5_of(&other),
                    expected: md5_of(&content(2, 7, 102, 0))
                }
            ),
            (
                "b",
                truncated.as_str(),
                &Problem::Size {
                    found: 4,
                    expected: full
                }
            ),
        ]
    );
    assert_eq!(
        damage[0].to_string(),
        format!(
            "`db.a`: `{missing}` is missing from the backup; the backup is incomplete, take it again"
        )
    );
    let groups = by_collection(&damage);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[&("db".to_string(), "b".to_string())].len(), 2);
}

/// A store whose listings tell no MD5 (as S3 for multipart uploads): the check must read.
#[derive(Debug)]
struct NoListedMd5(MemoryStorage);

#[async_trait::async_trait]
impl Storage for NoListedMd5 {
    fn place(&self) -> &Place {
        self.0.place()
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        self.0
            .list(prefix)
            .map_ok(|o| ObjectMeta { md5: None, ..o })
            .boxed()
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.0.head(key).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StorageError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StorageError> {
        self.0.put(key, body).await
    }
    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StorageError> {
        self.0.put_bytes(key, body).await
    }
    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        self.0.delete(keys).await
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.0.check().await
    }
}

#[tokio::test]
async fn without_listed_md5s_the_content_is_read_and_checked() {
    let store = NoListedMd5(stored().await);
    let damage = verify_backup(&store, &at(), &backup(), None).await.unwrap();
    assert!(damage.is_empty(), "{damage:?}");
    let total: u64 = backup()
        .collection_backups
        .iter()
        .flat_map(|c| &c.partition_backups)
        .flat_map(|p| &p.segment_backups)
        .flat_map(|s| s.files())
        .map(|(_, size, _)| size as u64)
        .sum();
    assert_eq!(store.0.bytes_read(), total);

    let bad = key_of(1, 8, 100, 0);
    store.0.inject(&at().join(&bad), MemoryFault::CorruptReads);
    let damage = verify_backup(&store, &at(), &backup(), None).await.unwrap();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(
        (damage[0].collection.as_str(), damage[0].key.as_str()),
        ("a", bad.as_str())
    );
    assert!(matches!(damage[0].problem, Problem::Md5 { .. }));
    assert!(damage[0].to_string().contains("the backup meta says"));
}

#[tokio::test]
async fn a_rows_backup_with_a_missing_parquet_file_is_reported() {
    let store = MemoryStorage::new("mem");
    let file = |key: &str, data: Option<&[u8]>| RowsFile {
        size: data.map(|d| d.len() as u64),
        md5: data.map(md5_of),
        ..RowsFile::named(key)
    };
    let rows = RowsMeta {
        collections: vec![RowsCollection {
            db_name: "".into(),
            collection_name: "r".into(),
            partitions: vec![RowsPartition {
                name: "_default".into(),
                files: vec![
                    file("rows/default/r/_default/000000.parquet", Some(b"one")),
                    file("rows/default/r/_default/000001.parquet", None),
                    file("rows/default/r/_default/000002.parquet", Some(b"three")),
                ],
            }],
        }],
        ..Default::default()
    };
    store
        .put_bytes(
            &at().join("rows/default/r/_default/000000.parquet"),
            Bytes::from_static(b"one"),
        )
        .await
        .unwrap();
    // An older backup's file records no size or MD5: present is all that is asked.
    store
        .put_bytes(
            &at().join("rows/default/r/_default/000001.parquet"),
            Bytes::from_static(b"anything"),
        )
        .await
        .unwrap();
    let damage = verify_backup(&store, &at(), &BackupInfo::default(), Some(&rows))
        .await
        .unwrap();
    assert_eq!(
        damage.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        [
            "`r`: `rows/default/r/_default/000002.parquet` is missing from the backup; the \
          backup is incomplete, take it again"
        ]
    );
}

#[test]
fn rows_files_of_older_backups_still_read() {
    let f: RowsFile = serde_json::from_str(r#"{"key":"k","rows":1,"first":1,"last":2}"#).unwrap();
    assert_eq!((f.size, f.md5.as_deref()), (None, None));
    let json = serde_json::to_value(&f).unwrap();
    assert!(json.get("size").is_none() && json.get("md5").is_none());
}

#[test]
fn complete_segments_pass() {
    let c = collection("a", 1);
    assert_eq!(check_collection(&c), Ok(()));
    let l0 = SegmentBackupInfo {
        segment_id: 3,
        is_l0: true,
        ..Default::default()
    };
    assert_eq!(check_segment(&schema(), &l0), Ok(()));
}

#[test]
fn a_segment_missing_a_fields_binlog_is_refused() {
    let mut s = segment(1, 7, 2);
    s.binlogs.retain(|fb| fb.field_id != 102);
    let err = check_segment(&schema(), &s).unwrap_err();
    assert!(err.starts_with("segment 7: "), "{err}");
    assert!(
        err.contains("field `$meta` (id 102) has no binlog"),
        "{err}"
    );

    let mut s = segment(1, 8, 1);
    s.binlogs.retain(|fb| fb.field_id != 1);
    s.binlogs.push(FieldBinlog {
        field_id: 105,
        binlogs: s.binlogs[0].binlogs.clone(),
    });
    let err = check_segment(&schema(), &s).unwrap_err();
    assert!(
        err.contains("field `Timestamp` (id 1) has no binlog"),
        "{err}"
    );
    assert!(
        err.contains("field id 105, which the schema does not have"),
        "{err}"
    );
}

#[test]
fn a_segment_with_unequal_log_counts_is_refused() {
    let mut c = collection("a", 1);
    let s = &mut c.partition_backups[0].segment_backups[0];
    let vec = s.binlogs.iter_mut().find(|fb| fb.field_id == 101).unwrap();
    vec.binlogs.pop();
    let err = check_collection(&c).unwrap_err();
    assert!(err.starts_with("segment 7: "), "{err}");
    assert!(
        err.contains("field `vec` (id 101) has 1 binlog(s) where the other fields have 2"),
        "{err}"
    );
    assert!(!err.contains("segment 8"), "{err}");
}
