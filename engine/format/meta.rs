//! The backup's metadata, in milvus-backup's layout and JSON so backups move between the two tools.
//!
//! Layout under a backup location: `meta/{backup,collection,partition,segment,full}_meta.json` and
//! `binlogs/insert_log/<coll>/<part>/<group>/<seg>/<field>/<log>`,
//! `binlogs/delta_log/<coll>/<part>/<group>/<seg>/<log>`, where the group is the segment id. The
//! JSON mirrors Go's encoding/json of milvus-backup's structs (snake_case keys, enums as numbers);
//! planrun adds `md5` to every binlog and a `planrun` object, which Go's decoder ignores. The
//! collection schema embedded here is `crate::schema`'s, a concept of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::{CollectionSchema, KeyValue};

pub const META_DIR: &str = "meta";
pub const BACKUP_META: &str = "meta/backup_meta.json";
pub const COLLECTION_META: &str = "meta/collection_meta.json";
pub const PARTITION_META: &str = "meta/partition_meta.json";
pub const SEGMENT_META: &str = "meta/segment_meta.json";
pub const FULL_META: &str = "meta/full_meta.json";
/// Every metadata file a backup holds besides its binlogs.
pub const META_FILES: [&str; 5] = [
    BACKUP_META,
    COLLECTION_META,
    PARTITION_META,
    SEGMENT_META,
    FULL_META,
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupInfo {
    pub id: String,
    pub state_code: i32,
    pub name: String,
    pub backup_timestamp: u64,
    pub collection_backups: Vec<CollectionBackupInfo>,
    pub size: i64,
    pub milvus_version: String,
    /// `""` is the binlog format; planrun's rows mode writes `"planrun-rows"`.
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planrun: Option<PlanrunInfo>,
}

/// What planrun adds: how the backup was made, for checks on restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanrunInfo {
    pub version: String,
    pub run: String,
    pub files: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectionBackupInfo {
    pub id: String,
    pub collection_id: i64,
    pub db_name: String,
    pub collection_name: String,
    pub schema: CollectionSchema,
    pub shards_num: i32,
    pub consistency_level: i32,
    pub partition_backups: Vec<PartitionBackupInfo>,
    pub backup_timestamp: u64,
    pub size: i64,
    pub has_index: bool,
    pub index_infos: Vec<IndexInfo>,
    pub load_state: String,
    pub properties: Vec<KeyValue>,
    pub aliases: Vec<String>,
    /// Exact live rows at backup time (count(*) after flush), when the server could count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planrun_row_count: Option<u64>,
    /// Collection-level L0 (delete-only) segments that milvus-backup records from Milvus 2.4 on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l0_segments: Vec<SegmentBackupInfo>,
}

impl CollectionBackupInfo {
    /// Every segment: the partitions' (L0 ones among them), then the collection-level L0 ones.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentBackupInfo> {
        self.partition_backups
            .iter()
            .flat_map(|p| &p.segment_backups)
            .chain(&self.l0_segments)
    }

    pub fn segments_mut(&mut self) -> impl Iterator<Item = &mut SegmentBackupInfo> {
        self.partition_backups
            .iter_mut()
            .flat_map(|p| &mut p.segment_backups)
            .chain(&mut self.l0_segments)
    }

    /// Why planrun cannot restore this collection's binlogs whatever the target, if it cannot:
    /// segments in a storage format it cannot read. Storage v2 (Milvus 2.6) packs fields into
    /// files whose layout planrun does not know, so it can neither count their rows nor check a
    /// restore of them; a newer format is unknown altogether. Refused, not guessed at.
    pub fn unknown_layout(&self) -> Option<String> {
        let s = self.segments().max_by_key(|s| s.storage_version)?;
        let what = match s.storage_version {
            ..=1 => return None,
            2 => {
                "storage format v2 (Milvus 2.6 or later), whose files planrun cannot read to \
                  count and check the restored rows"
            }
            _ => "a storage format newer than any planrun knows (it knows v1 and v2)",
        };
        Some(format!(
            "segment {} of `{}` is in {what} (storage_version {}); back the collection up again \
             with mode = \"rows\"",
            s.segment_id, self.collection_name, s.storage_version
        ))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexInfo {
    pub field_name: String,
    pub index_name: String,
    pub index_type: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionBackupInfo {
    pub partition_id: i64,
    pub partition_name: String,
    pub collection_id: i64,
    pub segment_backups: Vec<SegmentBackupInfo>,
    pub size: i64,
    pub load_state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentBackupInfo {
    pub segment_id: i64,
    pub collection_id: i64,
    pub partition_id: i64,
    pub num_of_rows: i64,
    pub binlogs: Vec<FieldBinlog>,
    pub deltalogs: Vec<FieldBinlog>,
    pub size: i64,
    /// The segment id, which names a directory of its own ("virtual partition"), except for
    /// collection-level L0 segments (partition -1), which have none (0).
    pub group_id: i64,
    /// Holds only deletes (delta logs), which apply to every segment of its partition, or of
    /// the collection when the partition is -1 (Milvus 2.4 on).
    pub is_l0: bool,
    /// milvus-backup records the segment's storage format from Milvus 2.6 on (2: storage v2,
    /// columnar packed files); absent or 0/1 is the binlog-per-field layout of earlier servers.
    #[serde(skip_serializing_if = "is_zero")]
    pub storage_version: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldBinlog {
    #[serde(rename = "fieldID")]
    pub field_id: i64,
    pub binlogs: Vec<Binlog>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Binlog {
    /// The source key in the Milvus bucket, as milvus-backup records it.
    pub log_path: String,
    pub log_size: i64,
    pub log_id: i64,
    /// Hex MD5 of the content (planrun's addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl SegmentBackupInfo {
    /// The partition id whose deletes apply to the whole collection (collection-level L0).
    pub const ALL_PARTITIONS: i64 = -1;

    /// The directory holding the segment's directory: its group's, or for a collection-level
    /// L0 segment the partition's (milvus-backup gives those no group).
    fn parent(&self, kind: &str) -> String {
        if self.partition_id == Self::ALL_PARTITIONS {
            format!(
                "binlogs/{kind}/{}/{}",
                self.collection_id, self.partition_id
            )
        } else {
            format!(
                "binlogs/{kind}/{}/{}/{}",
                self.collection_id, self.partition_id, self.group_id
            )
        }
    }

    /// The segment's insert log directory, relative to the backup location.
    pub fn insert_dir(&self) -> String {
        format!("{}/{}", self.insert_group_dir(), self.segment_id)
    }

    pub fn delta_dir(&self) -> String {
        format!("{}/{}", self.delta_group_dir(), self.segment_id)
    }

    /// The group directories Milvus's binlog import takes (a directory of segment directories).
    pub fn insert_group_dir(&self) -> String {
        self.parent("insert_log")
    }

    pub fn delta_group_dir(&self) -> String {
        self.parent("delta_log")
    }

    /// Where insert log `b` of field `field` lies, relative to the backup location.
    pub fn insert_key(&self, field: i64, b: &Binlog) -> String {
        format!("{}/{field}/{}", self.insert_dir(), b.log_id)
    }

    pub fn delta_key(&self, b: &Binlog) -> String {
        format!("{}/{}", self.delta_dir(), b.log_id)
    }

    /// Whether the segment has delta logs.
    pub fn has_deletes(&self) -> bool {
        self.deltalogs.iter().any(|d| !d.binlogs.is_empty())
    }

    /// Every file of the segment: (key relative to the backup location, size, md5).
    pub fn files(&self) -> Vec<(String, i64, Option<String>)> {
        let mut out = Vec::new();
        for fb in &self.binlogs {
            for b in &fb.binlogs {
                out.push((self.insert_key(fb.field_id, b), b.log_size, b.md5.clone()));
            }
        }
        for fb in &self.deltalogs {
            for b in &fb.binlogs {
                out.push((self.delta_key(b), b.log_size, b.md5.clone()));
            }
        }
        out
    }
}

impl BackupInfo {
    /// The four per-level files milvus-backup also writes, derived from the full meta.
    pub fn split(
        &self,
    ) -> (
        BackupInfo,
        Vec<CollectionBackupInfo>,
        Vec<PartitionBackupInfo>,
        Vec<SegmentBackupInfo>,
    ) {
        let mut backup = self.clone();
        let mut colls = Vec::new();
        let mut parts = Vec::new();
        let mut segs = Vec::new();
        for c in &mut backup.collection_backups {
            for p in &mut c.partition_backups {
                segs.append(&mut p.segment_backups);
                parts.push(p.clone());
            }
            c.partition_backups.clear();
            // As milvus-backup writes them: only the full meta has collection-level L0 segments.
            c.l0_segments.clear();
            colls.push(c.clone());
        }
        backup.collection_backups.clear();
        (backup, colls, parts, segs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> SegmentBackupInfo {
        SegmentBackupInfo {
            segment_id: 7,
            collection_id: 1,
            partition_id: 2,
            num_of_rows: 10,
            group_id: 7,
            binlogs: vec![FieldBinlog {
                field_id: 100,
                binlogs: vec![Binlog {
                    log_path: "files/insert_log/1/2/7/100/55".into(),
                    log_size: 12,
                    log_id: 55,
                    md5: Some("ab".into()),
                }],
            }],
            deltalogs: vec![FieldBinlog {
                field_id: 0,
                binlogs: vec![Binlog {
                    log_path: "files/delta_log/1/2/7/56".into(),
                    log_size: 3,
                    log_id: 56,
                    md5: None,
                }],
            }],
            ..Default::default()
        }
    }

    /// Shaped like milvus-backup's `full_meta.json` of a Milvus 2.4+ server (keys from its
    /// documented `CollectionBackupInfo`/`SegmentBackupInfo` and layout), not captured from one:
    /// a partition L0 segment among the partition's, and a collection-level one (partition -1,
    /// group 0) in `l0_segments`.
    const L0_META: &str = r#"{"collection_id": 1, "collection_name": "c",
        "partition_backups": [{"partition_id": 2, "partition_name": "_default",
          "segment_backups": [
            {"segment_id": 7, "collection_id": 1, "partition_id": 2, "num_of_rows": 10,
             "group_id": 7, "storage_version": 1,
             "binlogs": [{"fieldID": 100, "binlogs": [{"log_path": "f/insert_log/1/2/7/100/55",
               "log_size": 12, "log_id": 55}]}]},
            {"segment_id": 8, "collection_id": 1, "partition_id": 2, "num_of_rows": 2,
             "group_id": 8, "is_l0": true,
             "deltalogs": [{"fieldID": 0, "binlogs": [{"log_path": "f/delta_log/1/2/8/60",
               "log_size": 4, "log_id": 60}]}]}]}],
        "l0_segments": [{"segment_id": 9, "collection_id": 1, "partition_id": -1,
          "num_of_rows": 1, "is_l0": true,
          "deltalogs": [{"fieldID": 0, "binlogs": [{"log_path": "f/delta_log/1/-1/9/61",
            "log_size": 4, "log_id": 61}]}]}]}"#;

    #[test]
    fn l0_segments_round_trip_in_milvus_backup_layout() {
        let c: CollectionBackupInfo = serde_json::from_str(L0_META).unwrap();
        let keys: Vec<String> = c.segments().flat_map(|s| s.files()).map(|f| f.0).collect();
        assert_eq!(
            keys,
            [
                "binlogs/insert_log/1/2/7/7/100/55",
                "binlogs/delta_log/1/2/8/8/60",
                // No group directory for collection-level L0.
                "binlogs/delta_log/1/-1/9/61",
            ]
        );
        assert_eq!(c.l0_segments[0].delta_group_dir(), "binlogs/delta_log/1/-1");
        assert_eq!(c.unknown_layout(), None);
        let back: CollectionBackupInfo =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["l0_segments"][0]["partition_id"], -1);
        assert_eq!(
            json["partition_backups"][0]["segment_backups"][1]["is_l0"],
            true
        );
        assert_eq!(
            json["partition_backups"][0]["segment_backups"][0]["storage_version"],
            1
        );
        // The per-level files leave collection-level L0 to the full meta, as milvus-backup does.
        let full = BackupInfo {
            collection_backups: vec![c],
            ..Default::default()
        };
        let (_, colls, _, segs) = full.split();
        assert!(colls[0].l0_segments.is_empty());
        assert_eq!(segs.len(), 2);
    }

    #[test]
    fn storage_formats_planrun_cannot_read_are_refused_with_rows_mode() {
        let meta = |version: i64| {
            serde_json::from_str::<CollectionBackupInfo>(&format!(
                r#"{{"collection_name": "c", "partition_backups": [{{"partition_name": "_default",
                   "segment_backups": [{{"segment_id": 1}}, {{"segment_id": 3,
                   "storage_version": {version}}}]}}]}}"#
            ))
            .unwrap()
        };
        assert_eq!(meta(0).unknown_layout(), None);
        assert_eq!(meta(1).unknown_layout(), None);
        for (v, says) in [
            (2, "storage format v2"),
            (3, "newer than any planrun knows"),
        ] {
            let why = meta(v).unknown_layout().expect("refused");
            assert!(
                why.contains(says)
                    && why.contains("segment 3 of `c`")
                    && why.contains("mode = \"rows\""),
                "{why}"
            );
        }
        // What planrun writes for the layout 2.3 has is unchanged: no new keys.
        let out = serde_json::to_string(&meta(0)).unwrap();
        assert!(
            !out.contains("l0_segments") && !out.contains("storage_version"),
            "{out}"
        );
    }

    #[test]
    fn segment_files_follow_milvus_backup_layout() {
        let files: Vec<String> = segment().files().into_iter().map(|f| f.0).collect();
        assert_eq!(
            files,
            [
                "binlogs/insert_log/1/2/7/7/100/55",
                "binlogs/delta_log/1/2/7/7/56"
            ]
        );
    }

    #[test]
    fn json_uses_milvus_backup_keys_and_reads_without_planrun_extras() {
        let json = serde_json::to_value(segment()).unwrap();
        assert_eq!(json["binlogs"][0]["fieldID"], 100);
        assert_eq!(
            json["binlogs"][0]["binlogs"][0]["log_path"],
            "files/insert_log/1/2/7/100/55"
        );
        // A milvus-backup file has no md5 and omits zero values.
        let theirs: SegmentBackupInfo = serde_json::from_str(
            r#"{"segment_id":7,"binlogs":[{"fieldID":100,"binlogs":[{"log_path":"x","log_size":1}]}]}"#,
        )
        .unwrap();
        assert_eq!(theirs.binlogs[0].binlogs[0].md5, None);
        assert_eq!(theirs.partition_id, 0);
    }

    #[test]
    fn split_moves_children_into_their_own_files() {
        let full = BackupInfo {
            name: "b".into(),
            collection_backups: vec![CollectionBackupInfo {
                collection_name: "c".into(),
                partition_backups: vec![PartitionBackupInfo {
                    partition_name: "p".into(),
                    segment_backups: vec![segment()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let (b, c, p, s) = full.split();
        assert!(b.collection_backups.is_empty());
        assert!(c[0].partition_backups.is_empty());
        assert!(p[0].segment_backups.is_empty());
        assert_eq!(s.len(), 1);
    }
}
