//! The rows format (`planrun-rows`): Parquet files of primary-key pages and the meta that lists them.
//!
//! Layout under a backup location: `meta/backup_meta.json` and `meta/full_meta.json` (format
//! `planrun-rows`, with schema, partitions and indexes), `meta/rows_meta.json` (the files of
//! every partition and their key ranges), and
//! `rows/<db>/<coll>/<partition>/r<range>-<seq>.parquet` in Milvus's own import layout
//! (`layout`; `codec::arrow` names the column types). Each file holds consecutive primary-key
//! pages (in row groups of about 64 MiB; older backups wrote one per page) up to
//! `settings.file_bytes`, written as a stream, so memory stays
//! bounded whatever the collection size; key ranges of files never overlap, which is what lets
//! a restore reconcile a file it may have inserted before a crash by counting its range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::milvus::Pk;

pub const FORMAT: &str = "planrun-rows";
pub const ROWS_META: &str = "meta/rows_meta.json";

/// The files of a rows backup, per collection and partition.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsMeta {
    pub collections: Vec<RowsCollection>,
    /// How the Parquet columns are typed. `Default` is what a backup writes now; a meta without
    /// the key is from a backup written before it, in the first layout.
    #[serde(default = "Layout::first")]
    pub layout: Layout,
}

impl RowsMeta {
    /// Whether Milvus's own bulk import reads these files as they are, so a restore may import
    /// them server-side instead of inserting their rows.
    pub fn importable(&self) -> bool {
        self.layout == Layout::Import
    }
}

/// The column types of a rows backup's files (`codec::arrow` reads both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// planrun's first layout: float vectors as fixed-size lists, JSON and `$meta` as bytes,
    /// arrays as protobuf bytes, other vectors as fixed-size binary. Only an insert reads it.
    First,
    /// Milvus's import layout: the column types its Parquet import accepts (`codec::arrow`'s
    /// schema names them), which pyarrow and DuckDB read as plain lists and strings too.
    #[default]
    Import,
}

impl Layout {
    fn first() -> Layout {
        Layout::First
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsCollection {
    pub db_name: String,
    pub collection_name: String,
    pub partitions: Vec<RowsPartition>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsPartition {
    pub name: String,
    pub files: Vec<RowsFile>,
}

/// One Parquet file: a primary-key page. Key ranges of files never overlap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowsFile {
    /// Relative to the backup location.
    pub key: String,
    pub rows: u64,
    pub first: Key,
    pub last: Key,
    /// Bytes of the file as written, for the check before a restore; absent in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hex MD5 of the file as written; absent in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The ETag the bucket gave the file as written (a multipart upload's is not an MD5): a
    /// listing that shows it again vouches for the content without reading it. Absent in
    /// older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The sum of the hashes of the file's primary keys (`codec::digest::hash_rows` of the key
    /// column, with the key), hex: what an imported collection's keys are checked against.
    /// Absent in older backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// The longest value read per size limit the source did not report (`codec::limits`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub longest: BTreeMap<String, u64>,
}

/// A primary key as it is stored in the meta and checkpoints (a number or a string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Str(String),
}

#[cfg(test)]
impl RowsFile {
    /// A file of one row (key 1) at `key`, nothing else known: for tests.
    pub fn named(key: &str) -> RowsFile {
        RowsFile {
            key: key.into(),
            rows: 1,
            first: Key::Int(1),
            last: Key::Int(1),
            size: None,
            md5: None,
            etag: None,
            keys: None,
            longest: Default::default(),
        }
    }
}

impl From<Pk> for Key {
    fn from(p: Pk) -> Key {
        match p {
            Pk::Int(v) => Key::Int(v),
            Pk::Str(s) => Key::Str(s),
        }
    }
}

impl From<&Key> for Pk {
    fn from(k: &Key) -> Pk {
        match k {
            Key::Int(v) => Pk::Int(*v),
            Key::Str(s) => Pk::Str(s.clone()),
        }
    }
}

/// A file name part for a partition or collection name that is safe in any store.
pub fn safe(name: &str) -> String {
    if name.is_empty() {
        // The whole of a partition-key collection; `-` never occurs in a partition name.
        return "all-partitions".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The key digest of `files` (see [`RowsFile::keys`]), when every one of them records one.
pub fn key_digest(files: &[RowsFile]) -> Option<u128> {
    files.iter().try_fold(0u128, |sum, f| {
        let d = u128::from_str_radix(f.keys.as_deref()?, 16).ok()?;
        Some(sum.wrapping_add(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_without_a_layout_is_an_older_backup_and_not_importable() {
        let old: RowsMeta = serde_json::from_str(r#"{"collections":[]}"#).unwrap();
        assert_eq!(old.layout, Layout::First);
        assert!(!old.importable());
        let new = RowsMeta::default();
        assert!(new.importable());
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""layout":"import""#), "{text}");
        let back: RowsMeta = serde_json::from_str(&text).unwrap();
        assert!(back.importable());
    }

    #[test]
    fn a_key_digest_sums_every_file_or_is_unknown() {
        let file = |keys: Option<&str>| RowsFile {
            keys: keys.map(String::from),
            ..RowsFile::named("f")
        };
        let max = format!("{:032x}", u128::MAX);
        assert_eq!(key_digest(&[file(Some("02")), file(Some(&max))]), Some(1));
        assert_eq!(key_digest(&[file(Some("02")), file(None)]), None);
        assert_eq!(key_digest(&[]), Some(0));
    }
}
