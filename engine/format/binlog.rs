//! Milvus binlog files, read just far enough to count a segment's live rows: keys, timestamps, deletes.
//!
//! A binlog is a magic number, a descriptor event and data events. Every event starts with a
//! 17-byte header (timestamp u64, type i8, event length i32, next position i32, little-endian);
//! a data event then has its start and end timestamps (16 bytes) and a Parquet file with one
//! column up to the event's end. Delta logs hold strings, `{"pk":…,"ts":…,"pkType":…}` since
//! Milvus 2.2 and `<pk>,<ts>` before.

use std::collections::HashMap;

use arrow_array::{Array, BinaryArray, Int64Array, LargeStringArray, StringArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::milvus::Pk;

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

    fn into_pks(self) -> Vec<Pk> {
        match self {
            Column::Int(v) => v.into_iter().map(Pk::Int).collect(),
            Column::Str(v) => v.into_iter().map(Pk::Str).collect(),
        }
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

    /// Rows left when these deletes apply to a segment's keys and their insert timestamps, the
    /// way Milvus's import applies a segment's own delta logs: a delete removes a row written
    /// strictly before it (an upsert's delete and insert share a timestamp, and the row stays).
    pub fn live(&self, keys: Column, timestamps: Column) -> Result<u64, String> {
        let Column::Int(timestamps) = timestamps else {
            return Err("timestamps that are not integers".into());
        };
        if keys.len() != timestamps.len() {
            return Err(format!(
                "{} keys but {} timestamps",
                keys.len(),
                timestamps.len()
            ));
        }
        Ok(keys
            .into_pks()
            .iter()
            .zip(timestamps)
            .filter(|(pk, ts)| self.0.get(pk).is_none_or(|d| *d <= *ts as u64))
            .count() as u64)
    }
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

    #[test]
    fn reads_keys_across_events_and_counts_live_rows() {
        let keys = binlog(&[
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(StringArray::from(vec!["c"])),
        ]);
        let ts = binlog(&[Arc::new(Int64Array::from(vec![10, 10, 20]))]);
        let deltas = binlog(&[Arc::new(StringArray::from(vec![
            r#"{"pk":"a","ts":15,"pkType":21}"#,
            r#"{"pk":"c","ts":20,"pkType":21}"#,
            r#"{"pk":"zz","ts":99,"pkType":21}"#,
        ]))]);
        let mut d = Deletes::default();
        d.add_log(&deltas).unwrap();
        // `a` deleted after its insert; `c` deleted at its own timestamp (an upsert) stays.
        assert_eq!(
            d.live(column(&keys).unwrap(), column(&ts).unwrap())
                .unwrap(),
            2
        );
    }

    #[test]
    fn reads_the_old_delete_form_and_refuses_garbage() {
        let mut d = Deletes::default();
        d.add_log(&binlog(&[Arc::new(StringArray::from(vec!["5,30", "6,1"]))]))
            .unwrap();
        assert_eq!(
            d.live(Column::Int(vec![5, 6, 7]), Column::Int(vec![10, 10, 10]))
                .unwrap(),
            2
        );
        assert!(column(&Bytes::from_static(b"PAR1 not a binlog")).is_err());
        let cut = binlog(&[Arc::new(Int64Array::from(vec![1]))]);
        assert!(column(&cut.slice(..cut.len() - 5)).is_err());
    }
}
