//! Hand-built restore steps and backups for the unit tests of restore and verify.

use crate::format::meta::{BackupInfo, CollectionBackupInfo, PartitionBackupInfo};
use crate::plan::{Keys, Location, Naming, OnConflict, RestoreStep};

/// A restore of `bucket_b:backup/b1` into `milvus_b`, names kept, every collection.
pub(crate) fn step() -> RestoreStep {
    RestoreStep {
        instance: "milvus_b".into(),
        from: Location::new("bucket_b", "backup/b1").unwrap(),
        collections: None,
        naming: Naming::Keep,
        database: None,
        on_conflict: OnConflict::Fail,
        indexes: true,
        aliases: true,
        load: None,
        keys: Keys::Keep,
        method: None,
    }
}

/// A backed-up collection of database `db` ("" as milvus-backup writes the default) with
/// these partitions.
pub(crate) fn coll(db: &str, name: &str, partitions: &[&str]) -> CollectionBackupInfo {
    CollectionBackupInfo {
        db_name: db.into(),
        collection_name: name.into(),
        partition_backups: partitions
            .iter()
            .map(|p| PartitionBackupInfo {
                partition_name: p.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn backup(collections: Vec<CollectionBackupInfo>) -> BackupInfo {
    BackupInfo {
        collection_backups: collections,
        ..Default::default()
    }
}
