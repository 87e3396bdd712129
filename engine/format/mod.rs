//! The backup on disk: milvus-backup's layout and JSON (`meta`), Milvus binlogs (`binlog`), the
//! rows format (`rows`), and reading and writing a backup's meta.

pub mod binlog;
pub mod check;
pub mod meta;
pub mod rows;

use futures::TryStreamExt;

use crate::plan::Location;
use crate::storage::{Storage, StorageError};
use meta::BackupInfo;

/// Why a backup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Invalid(String),
}

/// The whole content of an object, or `None` when it does not exist. For meta files only:
/// binlogs and Parquet files are streamed or bounded by the page size.
pub async fn read_all(
    store: &dyn Storage,
    key: &str,
) -> Result<Option<bytes::Bytes>, StorageError> {
    match store.get(key).await {
        Ok(stream) => {
            let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
            Ok(Some(chunks.concat().into()))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a backup's full meta; `None` when there is no (complete) backup at `at`.
pub async fn read_meta(
    store: &dyn Storage,
    at: &Location,
) -> Result<Option<BackupInfo>, FormatError> {
    // `backup_meta.json` is written last: without it the backup is incomplete, for both tools.
    if read_all(store, &at.join(meta::BACKUP_META))
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let Some(full) = read_all(store, &at.join(meta::FULL_META)).await? else {
        return Err(FormatError::Invalid(format!(
            "the backup at `{at}` has no `{}`; backups written by milvus-backup before 0.4 are not supported",
            meta::FULL_META
        )));
    };
    serde_json::from_slice(&full).map(Some).map_err(|e| {
        FormatError::Invalid(format!(
            "the backup meta `{at}/{}` is not valid: {e}",
            meta::FULL_META
        ))
    })
}

/// Reads the file list of a rows backup.
pub async fn read_rows_meta(
    store: &dyn Storage,
    at: &Location,
) -> Result<rows::RowsMeta, FormatError> {
    let raw = read_all(store, &at.join(rows::ROWS_META))
        .await?
        .ok_or_else(|| {
            FormatError::Invalid(format!(
                "the rows backup at `{at}` has no `{}`",
                rows::ROWS_META
            ))
        })?;
    serde_json::from_slice(&raw)
        .map_err(|e| FormatError::Invalid(format!("`{at}/{}` is not valid: {e}", rows::ROWS_META)))
}

/// Writes a backup's meta files: the per-level files milvus-backup also writes (binlog mode) or
/// the file list (rows mode), the full meta, and `backup_meta.json` last, so a backup without it
/// is recognisably incomplete.
pub async fn write_meta(
    dst: &dyn Storage,
    to: &Location,
    backup: &BackupInfo,
    rows: Option<&rows::RowsMeta>,
) -> Result<(), StorageError> {
    fn json<T: serde::Serialize>(v: &T) -> bytes::Bytes {
        serde_json::to_vec_pretty(v)
            .expect("meta serialises")
            .into()
    }
    let (head, c, p, s) = backup.split();
    match rows {
        Some(r) => {
            dst.put_bytes(&to.join(rows::ROWS_META), json(r)).await?;
        }
        None => {
            dst.put_bytes(&to.join(meta::COLLECTION_META), json(&c))
                .await?;
            dst.put_bytes(&to.join(meta::PARTITION_META), json(&p))
                .await?;
            dst.put_bytes(&to.join(meta::SEGMENT_META), json(&s))
                .await?;
        }
    }
    dst.put_bytes(&to.join(meta::FULL_META), json(backup))
        .await?;
    dst.put_bytes(&to.join(meta::BACKUP_META), json(&head))
        .await?;
    Ok(())
}
