//! Unit tests of what both backup modes decide without a server: which segments a binlog backup
//! takes or refuses, its file count, the meta of a collection, and the existing-backup guard.

use super::binlog::{file_count, l0, missing_binlog_hint};
use super::common::{collection_info, existing_backup, load_state_name};
use crate::format::meta::SegmentBackupInfo;
use crate::format::meta::{self, Binlog, CollectionBackupInfo, FieldBinlog, PartitionBackupInfo};
use crate::milvus::pb::common::{ConsistencyLevel, SegmentLevel, SegmentState};
use crate::milvus::{CollectionInfo, IndexInfo, PartitionInfo, SegmentInfo};
use crate::plan::Location;
use crate::storage::{MemoryStorage, Storage, StorageError};

fn segment(level: i32, storage_version: i64) -> SegmentInfo {
    SegmentInfo {
        id: 42,
        collection_id: 1,
        partition_id: 2,
        num_rows: 10,
        state: SegmentState::Flushed,
        level,
        storage_version,
    }
}

#[test]
fn delete_only_segments_are_told_from_the_others() {
    assert!(!l0("c", &segment(SegmentLevel::Legacy as i32, 0)).unwrap());
    assert!(!l0("c", &segment(SegmentLevel::L1 as i32, 1)).unwrap());
    assert!(l0("c", &segment(SegmentLevel::L0 as i32, 0)).unwrap());
}

#[test]
fn segments_planrun_cannot_read_are_refused_with_the_way_out() {
    let why = |level, version| l0("c", &segment(level, version)).unwrap_err().to_string();
    assert_eq!(
        why(SegmentLevel::L1 as i32, 2),
        "segment 42 of collection `c` is in storage format v2 (Milvus 2.6), whose files planrun \
         cannot read to count the backup's rows; back the collection up with mode = \"rows\""
    );
    assert_eq!(
        why(SegmentLevel::L1 as i32, 3),
        "segment 42 of collection `c` is in storage format v3, newer than any planrun knows (it \
         knows v1 and v2); back the collection up with mode = \"rows\""
    );
    assert_eq!(
        why(99, 1),
        "segment 42 of collection `c` is level 99, which this version of planrun does not know \
         (it knows Legacy, L0, L1, L2); back the collection up with mode = \"rows\""
    );
}

fn logs(field_id: i64, n: i64) -> FieldBinlog {
    FieldBinlog {
        field_id,
        binlogs: (0..n)
            .map(|log_id| Binlog {
                log_id,
                ..Default::default()
            })
            .collect(),
    }
}

#[test]
fn the_file_count_covers_insert_and_delta_logs_of_every_segment() {
    let seg = |binlogs, deltalogs| SegmentBackupInfo {
        binlogs,
        deltalogs,
        ..Default::default()
    };
    let c = CollectionBackupInfo {
        partition_backups: vec![PartitionBackupInfo {
            segment_backups: vec![seg(vec![logs(100, 2), logs(101, 3)], vec![logs(0, 1)])],
            ..Default::default()
        }],
        l0_segments: vec![seg(vec![], vec![logs(0, 4)])],
        ..Default::default()
    };
    assert_eq!(file_count(&[c.clone(), c]), 2 * (2 + 3 + 1 + 4));
}

#[test]
fn a_binlog_that_disappeared_mid_copy_says_how_to_start_over() {
    let store = MemoryStorage::new("data");
    let gone = StorageError::not_found(store.place(), "files/insert_log/1");
    assert_eq!(
        missing_binlog_hint(gone, "c").to_string(),
        "object `files/insert_log/1` not found in bucket `data` (in-memory store): a binlog of \
         collection `c` disappeared while it was copied (compaction and garbage collection); run \
         `planrun apply --restart` to take a fresh snapshot"
    );
}

#[test]
fn a_collection_meta_records_partitions_indexes_and_aliases() {
    let desc = CollectionInfo {
        name: "c".into(),
        collection_id: 7,
        schema: Default::default(),
        shards_num: 2,
        consistency_level: ConsistencyLevel::Strong,
        properties: vec![("mmap.enabled".into(), "true".into())],
        aliases: vec!["live".into()],
        num_partitions: 0,
        virtual_channels: vec![],
        created_timestamp: 0,
    };
    let parts = [PartitionInfo {
        name: "_default".into(),
        id: 3,
    }];
    let index = IndexInfo {
        index_name: "vec_idx".into(),
        field_name: "vec".into(),
        params: vec![
            ("index_type".into(), "HNSW".into()),
            ("M".into(), "8".into()),
        ],
        state: 0,
        indexed_rows: 0,
        total_rows: 0,
        pending_index_rows: 0,
        fail_reason: String::new(),
    };
    let info = collection_info("shop", "c", &desc, &parts, &[index], Some(5));
    assert_eq!((info.db_name.as_str(), info.collection_id), ("shop", 7));
    assert_eq!(info.consistency_level, ConsistencyLevel::Strong as i32);
    let p = &info.partition_backups[0];
    assert_eq!((p.partition_name.as_str(), p.partition_id), ("_default", 3));
    assert_eq!(p.collection_id, 7);
    assert!(info.has_index);
    assert_eq!(info.index_infos[0].index_type, "HNSW");
    assert_eq!(info.index_infos[0].params["M"], "8");
    assert_eq!(info.aliases, ["live"]);
    assert_eq!(info.properties[0].key, "mmap.enabled");
    assert_eq!(info.planrun_row_count, Some(5));
    assert!(info.load_state.is_empty(), "each mode records it");
}

#[test]
fn the_load_state_is_recorded_by_its_milvus_name() {
    assert_eq!(load_state_name(true), "LoadStateLoaded");
    assert_eq!(load_state_name(false), "LoadStateNotLoad");
}

#[tokio::test]
async fn a_backup_already_at_the_destination_is_never_overwritten() {
    let dst = MemoryStorage::new("dst");
    let to = Location::new("dst", "backup/b1").unwrap();
    assert_eq!(existing_backup(&dst, &to, "backup").await.unwrap(), None);
    dst.put_bytes(&to.join(meta::BACKUP_META), "{}".into())
        .await
        .unwrap();
    assert_eq!(
        existing_backup(&dst, &to, "backup")
            .await
            .unwrap()
            .as_deref(),
        Some(
            "a backup already exists at `dst:backup/b1`; choose another `to` in step `backup` \
             or delete it"
        )
    );
}
