//! Milvus binlog files, read just far enough to count a backup's live rows: keys, timestamps, deletes.
//!
//! A binlog is a magic number, a descriptor event and data events. Every event starts with a
//! 17-byte header (timestamp u64, type i8, event length i32, next position i32, little-endian);
//! a data event then has its start and end timestamps (16 bytes) and a Parquet file with one
//! column up to the event's end. Delta logs hold strings, `{"pk":…,"ts":…,"pkType":…}` since
//! Milvus 2.2 and `<pk>,<ts>` before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Array, BinaryArray, Int64Array, LargeStringArray, StringArray};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::FormatError;
use super::meta::{Binlog, CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::Pk;
use crate::plan::Location;
use crate::storage::Storage;

const MAGIC: u32 = 0x00ff_fabc;
const HEADER: usize = 17;
const DESCRIPTOR: i8 = 0;

/// The values of one binlog's column, in order, across its events.
pub enum Column {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `other`'s values after this column's; an empty column takes either type.
    pub fn append(&mut self, other: Column) -> Result<(), String> {
        match (&mut *self, other) {
            (Column::Int(a), Column::Int(b)) => a.extend(b),
            (Column::Str(a), Column::Str(b)) => a.extend(b),
            (_, other) if other.is_empty() => {}
            (me, other) if me.is_empty() => *me = other,
            _ => return Err("mixes integer and string payloads".into()),
        }
        Ok(())
    }
}

/// The Parquet payloads of a binlog's data events.
fn payloads(data: &Bytes) -> Result<Vec<Bytes>, String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| format!("cut short at byte {at} of {}", data.len()))
    };
    if u32_at(0)? != MAGIC {
        return Err("not a Milvus binlog (no magic number)".into());
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < data.len() {
        let kind = *data
            .get(at + 8)
            .ok_or_else(|| format!("cut short at byte {at}"))? as i8;
        let len = u32_at(at + 9)? as usize;
        let next = u32_at(at + 13)? as usize;
        let end = at + len;
        if len < HEADER || end > data.len() || next <= at {
            return Err(format!(
                "an event at byte {at} claims {len} bytes of {}",
                data.len()
            ));
        }
        if kind != DESCRIPTOR {
            // Data events carry start and end timestamps before their payload.
            out.push(data.slice(at + HEADER + 16..end));
        }
        at = next;
    }
    Ok(out)
}

/// The single column of a binlog (a field's insert log, or a delta log's strings).
pub fn column(data: &Bytes) -> Result<Column, String> {
    let mut out = Column::Int(Vec::new());
    for payload in payloads(data)? {
        let reader = ParquetRecordBatchReaderBuilder::try_new(payload)
            .and_then(|b| b.build())
            .map_err(|e| format!("its Parquet payload cannot be read: {e}"))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("its Parquet payload cannot be read: {e}"))?;
            let col = batch.column(0);
            let any = col.as_any();
            let strs = |it: &mut dyn Iterator<Item = Option<&str>>| {
                Column::Str(it.map(|s| s.unwrap_or_default().to_string()).collect())
            };
            out.append(if let Some(a) = any.downcast_ref::<Int64Array>() {
                Column::Int(a.values().to_vec())
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                strs(&mut a.iter())
            } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                strs(&mut a.iter())
            } else if let Some(a) = any.downcast_ref::<BinaryArray>() {
                Column::Str(
                    a.iter()
                        .map(|b| String::from_utf8_lossy(b.unwrap_or_default()).into_owned())
                        .collect(),
                )
            } else {
                return Err(format!("unexpected column type {}", col.data_type()));
            })?;
        }
    }
    Ok(out)
}

/// One delete record of a delta log: the key and the delete's timestamp.
fn delete_record(s: &str) -> Result<(Pk, u64), String> {
    #[derive(serde::Deserialize)]
    struct Record {
        pk: serde_json::Value,
        ts: u64,
    }
    if s.starts_with('{') {
        let r: Record = serde_json::from_str(s).map_err(|e| format!("delete record {s:?}: {e}"))?;
        let pk = match r.pk {
            serde_json::Value::String(s) => Pk::Str(s),
            serde_json::Value::Number(n) => Pk::Int(
                n.as_i64()
                    .ok_or_else(|| format!("delete record {s:?}: key {n}"))?,
            ),
            other => return Err(format!("delete record {s:?}: key {other}")),
        };
        return Ok((pk, r.ts));
    }
    // The older form: `<int pk>,<ts>`.
    let (pk, ts) = s
        .rsplit_once(',')
        .ok_or_else(|| format!("delete record {s:?} is neither JSON nor `pk,ts`"))?;
    let ts = ts
        .parse()
        .map_err(|_| format!("delete record {s:?}: timestamp"))?;
    Ok((
        pk.parse()
            .map(Pk::Int)
            .unwrap_or_else(|_| Pk::Str(pk.to_string())),
        ts,
    ))
}

/// A segment's deletes: each key with its latest delete timestamp.
#[derive(Default)]
pub struct Deletes(HashMap<Pk, u64>);

impl Deletes {
    /// Adds the records of one delta log.
    pub fn add_log(&mut self, data: &Bytes) -> Result<(), String> {
        let Column::Str(records) = column(data)? else {
            return Err("a delta log of integers, not delete records".into());
        };
        for r in records {
            let (pk, ts) = delete_record(&r)?;
            let e = self.0.entry(pk).or_insert(ts);
            *e = (*e).max(ts);
        }
        Ok(())
    }

    /// Whether these deletes remove a row with `key` written at `ts`, the way Milvus applies
    /// deletes: a delete removes a row written strictly before it (an upsert's delete and
    /// insert share a timestamp, and the row stays).
    pub fn removes(&self, key: &Pk, ts: i64) -> bool {
        self.0.get(key).is_some_and(|d| *d > ts as u64)
    }
}

/// The system field holding every row's insert timestamp.
const TIMESTAMP_FIELD: i64 = 1;

/// Segments read at once: enough to keep a remote store busy, few enough that the keys of the
/// segments in flight stay small.
const SEGMENTS_AT_ONCE: usize = 8;

/// Where a binlog backup's files are read.
#[derive(Clone)]
pub enum Files {
    /// The Milvus bucket, by each binlog's `log_path`: while the backup is taken.
    Source,
    /// The backup at this location.
    Backup(Location),
}

impl Files {
    fn key(&self, rel: String, b: &Binlog) -> String {
        match self {
            Files::Source => b.log_path.clone(),
            Files::Backup(at) => at.join(&rel),
        }
    }
}

/// The rows of a partition once every delete applies, and the digest of their primary keys
/// (`codec::digest` of each key alone, summed), which `verify` computes the same way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    pub rows: u64,
    pub keys: u128,
}

/// The live rows of every partition of a binlog backup, by partition id: each segment's keys
/// and insert timestamps, less its own deletes, its partition's L0 deletes and the
/// collection-level L0 deletes. This is what Milvus's binlog import restores, so what a
/// restore must hold. `pk` is the primary key's name and field id.
pub async fn live(
    store: Arc<dyn Storage>,
    files: Files,
    info: &CollectionBackupInfo,
    pk: (&str, i64),
) -> Result<BTreeMap<i64, Live>, FormatError> {
    let at = |s: &SegmentBackupInfo, e: String| {
        FormatError::Invalid(format!(
            "segment {} of `{}`: {e}",
            s.segment_id, info.collection_name
        ))
    };
    let mut l0: HashMap<i64, Deletes> = HashMap::new();
    for s in info.segments().filter(|s| s.is_l0) {
        let d = l0.entry(s.partition_id).or_default();
        add_deletes(store.as_ref(), &files, s, d)
            .await
            .map_err(|e| e.within(|e| at(s, e)))?;
    }
    let l0 = Arc::new(l0);
    // Owned items: borrowed ones make the spawned step future not `Send`.
    let segments: Vec<SegmentBackupInfo> = info.segments().filter(|s| !s.is_l0).cloned().collect();
    let pk = (pk.0.to_string(), pk.1);
    let counted: Vec<(i64, Live)> = futures::stream::iter(segments)
        .map(|s| {
            let (store, files, l0, pk) = (store.clone(), files.clone(), l0.clone(), pk.clone());
            async move {
                let live = segment_live(store.as_ref(), &files, &s, &l0, (&pk.0, pk.1))
                    .await
                    .map_err(|e| e.within(|e| at(&s, e)))?;
                Ok::<_, FormatError>((s.partition_id, live))
            }
        })
        .buffer_unordered(SEGMENTS_AT_ONCE)
        .try_collect()
        .await?;
    let mut out: BTreeMap<i64, Live> = info
        .partition_backups
        .iter()
        .map(|p| (p.partition_id, Live::default()))
        .collect();
    for (partition, l) in counted {
        let sum = out.entry(partition).or_default();
        sum.rows += l.rows;
        sum.keys = sum.keys.wrapping_add(l.keys);
    }
    Ok(out)
}

impl FormatError {
    /// An invalid file's message put in its place; a storage error is left as it is, so that a
    /// transient one is still retried.
    fn within(self, place: impl FnOnce(String) -> FormatError) -> FormatError {
        match self {
            FormatError::Invalid(e) => place(e),
            e => e,
        }
    }
}

async fn read(store: &dyn Storage, key: &str) -> Result<Bytes, FormatError> {
    super::read_all(store, key).await?.ok_or_else(|| {
        FormatError::Invalid(format!("binlog `{key}` disappeared while it was read"))
    })
}

async fn add_deletes(
    store: &dyn Storage,
    files: &Files,
    s: &SegmentBackupInfo,
    into: &mut Deletes,
) -> Result<(), FormatError> {
    for b in s.deltalogs.iter().flat_map(|f| &f.binlogs) {
        let key = files.key(s.delta_key(b), b);
        into.add_log(&read(store, &key).await?)
            .map_err(|e| FormatError::Invalid(format!("delta log `{key}`: {e}")))?;
    }
    Ok(())
}

async fn segment_live(
    store: &dyn Storage,
    files: &Files,
    s: &SegmentBackupInfo,
    l0: &HashMap<i64, Deletes>,
    (pk, pk_field): (&str, i64),
) -> Result<Live, FormatError> {
    let mut own = Deletes::default();
    add_deletes(store, files, s, &mut own).await?;
    let (mut keys, mut stamps) = (Column::Int(Vec::new()), Column::Int(Vec::new()));
    for (field, out) in [(pk_field, &mut keys), (TIMESTAMP_FIELD, &mut stamps)] {
        for fb in s.binlogs.iter().filter(|f| f.field_id == field) {
            for b in &fb.binlogs {
                let key = files.key(s.insert_key(field, b), b);
                column(&read(store, &key).await?)
                    .and_then(|c| out.append(c))
                    .map_err(|e| FormatError::Invalid(format!("binlog `{key}`: {e}")))?;
            }
        }
    }
    let Column::Int(stamps) = stamps else {
        return Err(FormatError::Invalid(
            "timestamps that are not integers".into(),
        ));
    };
    let n = keys.len();
    if n != stamps.len() {
        return Err(FormatError::Invalid(format!(
            "{n} keys but {} timestamps",
            stamps.len()
        )));
    }
    let column = match keys {
        Column::Int(v) => crate::milvus::data::int64_column(pk, v),
        Column::Str(v) => crate::milvus::data::varchar_column(pk, v),
    };
    let hashed =
        crate::codec::digest::hash_rows(&[column], pk, n, true).map_err(FormatError::Invalid)?;
    let deletes = [
        Some(&own),
        l0.get(&s.partition_id),
        l0.get(&SegmentBackupInfo::ALL_PARTITIONS),
    ];
    let mut live = Live::default();
    for ((key, h), ts) in hashed.into_iter().zip(stamps) {
        if !deletes.iter().flatten().any(|d| d.removes(&key, ts)) {
            live.rows += 1;
            live.keys = live.keys.wrapping_add(h);
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    /// A binlog as Milvus lays it out, with one data event per payload.
    fn binlog(payloads: &[arrow_array::ArrayRef]) -> Bytes {
        let mut out = MAGIC.to_le_bytes().to_vec();
        let event = |out: &mut Vec<u8>, kind: i8, body: &[u8]| {
            let len = (HEADER + body.len()) as u32;
            let next = out.len() as u32 + len;
            out.extend_from_slice(&7u64.to_le_bytes());
            out.push(kind as u8);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(body);
        };
        event(&mut out, DESCRIPTOR, &[0u8; 60]);
        for p in payloads {
            let batch = arrow_array::RecordBatch::try_from_iter([("val", p.clone())]).unwrap();
            let mut file = Vec::new();
            let mut w = ArrowWriter::try_new(&mut file, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            let mut body = vec![0u8; 16];
            body.extend_from_slice(&file);
            event(&mut out, 1, &body);
        }
        out.into()
    }

    fn deletes(records: &[&str]) -> Deletes {
        let mut d = Deletes::default();
        d.add_log(&binlog(&[Arc::new(StringArray::from(records.to_vec()))]))
            .unwrap();
        d
    }

    #[test]
    fn reads_keys_across_events_and_applies_deletes_strictly_before() {
        let keys = binlog(&[
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["c"])),
        ]);
        let Column::Str(keys) = column(&keys).unwrap() else {
            panic!("strings")
        };
        assert_eq!(keys, ["a", "b", "c"]);
        let d = deletes(&[
            r#"{"pk":"a","ts":15,"pkType":21}"#,
            r#"{"pk":"c","ts":20,"pkType":21}"#,
        ]);
        // `a` deleted after its insert; `c` deleted at its own timestamp (an upsert) stays.
        assert!(d.removes(&Pk::Str("a".into()), 10));
        assert!(!d.removes(&Pk::Str("c".into()), 20));
        assert!(!d.removes(&Pk::Str("b".into()), 10));
    }

    #[test]
    fn reads_the_old_delete_form_and_refuses_garbage() {
        let d = deletes(&["5,30", "6,1"]);
        assert!(d.removes(&Pk::Int(5), 10) && !d.removes(&Pk::Int(6), 10));
        assert!(column(&Bytes::from_static(b"PAR1 not a binlog")).is_err());
        let cut = binlog(&[Arc::new(Int64Array::from(vec![1]))]);
        assert!(column(&cut.slice(..cut.len() - 5)).is_err());
    }

    /// A backup as milvus-backup lays out a Milvus 2.4+ collection (layout from its facts, not
    /// captured): partitions 2 and 3 with a segment each, an L0 segment in partition 2 and a
    /// collection-level one (partition -1).
    #[tokio::test]
    async fn l0_deletes_apply_to_their_partition_or_to_the_collection() {
        use crate::format::meta::{FieldBinlog, PartitionBackupInfo};
        let store = Arc::new(crate::storage::MemoryStorage::new("m"));
        let at = Location::new("b", "bk").unwrap();
        let log = |id: i64| Binlog {
            log_id: id,
            ..Default::default()
        };
        let seg = |id: i64, partition: i64, l0: bool| SegmentBackupInfo {
            segment_id: id,
            collection_id: 1,
            partition_id: partition,
            group_id: if partition == -1 { 0 } else { id },
            is_l0: l0,
            binlogs: (!l0)
                .then(|| {
                    [100, TIMESTAMP_FIELD].map(|f| FieldBinlog {
                        field_id: f,
                        binlogs: vec![log(f)],
                    })
                })
                .into_iter()
                .flatten()
                .collect(),
            deltalogs: l0
                .then(|| FieldBinlog {
                    field_id: 0,
                    binlogs: vec![log(7)],
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let (s2, s3, l0_2, l0_all) = (
            seg(20, 2, false),
            seg(30, 3, false),
            seg(21, 2, true),
            seg(9, -1, true),
        );
        let put = |key: String, data: Bytes| {
            let store = store.clone();
            async move { store.put_bytes(&key, data).await.unwrap() }
        };
        for (s, keys) in [(&s2, vec![1, 2, 3]), (&s3, vec![1, 4])] {
            put(
                at.join(&s.insert_key(100, &log(100))),
                binlog(&[Arc::new(Int64Array::from(keys.clone()))]),
            )
            .await;
            let ts = vec![10; keys.len()];
            put(
                at.join(&s.insert_key(1, &log(1))),
                binlog(&[Arc::new(Int64Array::from(ts))]),
            )
            .await;
        }
        // Partition 2's L0 deletes key 1 (and key 4, which is in partition 3: untouched);
        // the collection-level one deletes key 3 after its insert, and key 1 at its insert.
        put(
            at.join(&l0_2.delta_key(&log(7))),
            binlog(&[Arc::new(StringArray::from(vec![
                r#"{"pk":1,"ts":15,"pkType":5}"#,
                r#"{"pk":4,"ts":15,"pkType":5}"#,
            ]))]),
        )
        .await;
        put(
            at.join(&l0_all.delta_key(&log(7))),
            binlog(&[Arc::new(StringArray::from(vec![
                r#"{"pk":3,"ts":11,"pkType":5}"#,
                r#"{"pk":1,"ts":10,"pkType":5}"#,
            ]))]),
        )
        .await;
        let info = CollectionBackupInfo {
            collection_name: "c".into(),
            partition_backups: vec![
                PartitionBackupInfo {
                    partition_id: 2,
                    segment_backups: vec![s2, l0_2],
                    ..Default::default()
                },
                PartitionBackupInfo {
                    partition_id: 3,
                    segment_backups: vec![s3],
                    ..Default::default()
                },
            ],
            l0_segments: vec![l0_all],
            ..Default::default()
        };
        let live = live(store.clone(), Files::Backup(at.clone()), &info, ("id", 100))
            .await
            .unwrap();
        let digest = |keys: Vec<i64>| {
            let n = keys.len();
            crate::codec::digest::hash_rows(
                &[crate::milvus::data::int64_column("id", keys)],
                "id",
                n,
                true,
            )
            .unwrap()
            .iter()
            .fold(0u128, |s, (_, h)| s.wrapping_add(*h))
        };
        assert_eq!(
            live[&2],
            Live {
                rows: 1,
                keys: digest(vec![2])
            }
        );
        assert_eq!(
            live[&3],
            Live {
                rows: 2,
                keys: digest(vec![1, 4])
            }
        );
        // A missing binlog names the segment and the collection.
        store
            .delete(&[at.join(&info.l0_segments[0].delta_key(&log(7)))])
            .await
            .unwrap();
        let err = super::live(store, Files::Backup(at), &info, ("id", 100))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("segment 9 of `c`") && err.contains("disappeared"),
            "{err}"
        );
    }
}
