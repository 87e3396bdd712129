//! Checks of a backup against its own meta: files present with the recorded size and MD5, and segments whose field binlogs are complete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::meta::{BackupInfo, CollectionBackupInfo, SegmentBackupInfo};
use super::rows::RowsMeta;
use crate::plan::Location;
use crate::schema::CollectionSchema;
use crate::storage::{Storage, StorageError, md5_hex};

/// Objects whose MD5 is computed by reading them at once: enough to keep a remote store busy,
/// few enough that the reads' buffers stay small.
const READ_CONCURRENCY: usize = 8;

/// Field ids Milvus stores for every segment besides the schema's user fields.
const SYSTEM_FIELDS: [(i64, &str); 2] = [(0, "RowID"), (1, "Timestamp")];

/// User fields start here; ids below are system fields.
const FIRST_USER_FIELD: i64 = 100;

/// Segments named in one `check_collection` message before the rest are only counted.
const SEGMENTS_SHOWN: usize = 5;

/// One file of a backup that does not match its meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The collection the file belongs to, as in the meta (`""` is the default database).
    pub db: String,
    pub collection: String,
    /// Relative to the backup location.
    pub key: String,
    pub problem: Problem,
}

/// What is wrong with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Missing,
    Size { found: u64, expected: u64 },
    Md5 { found: String, expected: String },
}

impl Damage {
    /// `db.collection`, or the name alone in the default database (as milvus-backup writes it).
    pub fn collection_name(&self) -> String {
        qualified(&self.db, &self.collection)
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (coll, key) = (self.collection_name(), &self.key);
        match &self.problem {
            Problem::Missing => write!(
                f,
                "`{coll}`: `{key}` is missing from the backup; the backup is incomplete, take it again"
            ),
            Problem::Size { found, expected } => write!(
                f,
                "`{coll}`: `{key}` is {found} bytes, the backup meta says {expected}; the file was \
                 truncated or replaced after the backup, take the backup again"
            ),
            Problem::Md5 { found, expected } => write!(
                f,
                "`{coll}`: `{key}` has MD5 {found}, the backup meta says {expected}; the file was \
                 changed after the backup, take the backup again"
            ),
        }
    }
}

fn qualified(db: &str, name: &str) -> String {
    if db.is_empty() {
        name.to_string()
    } else {
        format!("{db}.{name}")
    }
}

/// The damage grouped by collection `(db, name)`, so a caller can fail only those collections.
pub fn by_collection(damage: &[Damage]) -> BTreeMap<(String, String), Vec<&Damage>> {
    let mut out: BTreeMap<(String, String), Vec<&Damage>> = BTreeMap::new();
    for d in damage {
        out.entry((d.db.clone(), d.collection.clone()))
            .or_default()
            .push(d);
    }
    out
}

/// A file the meta promises: its collection, key relative to the backup, and what is recorded.
struct Expected<'a> {
    db: &'a str,
    collection: &'a str,
    key: String,
    size: Option<u64>,
    md5: Option<String>,
    /// The ETag recorded when planrun wrote the file, where its MD5 is not its ETag.
    etag: Option<&'a str>,
}

impl Expected<'_> {
    fn damage(&self, problem: Problem) -> Damage {
        Damage {
            db: self.db.to_string(),
            collection: self.collection.to_string(),
            key: self.key.clone(),
            problem,
        }
    }
}

/// A size as the meta records it (Go writes `int64`); a negative one can match no file.
fn meta_size(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(u64::MAX)
}

/// Checks a backup's files against its meta before a restore creates anything: every file the
/// meta lists is present with the recorded size and, where the meta records one, MD5. A binlog
/// backup when `rows` is `None`, else a rows backup. The damage comes sorted by collection, then
/// key; an `Err` is a store that could not be listed or read, not damage.
pub async fn verify_backup(
    store: &dyn Storage,
    at: &Location,
    backup: &BackupInfo,
    rows: Option<&RowsMeta>,
) -> Result<Vec<Damage>, StorageError> {
    let mut expected = Vec::new();
    match rows {
        None => {
            for c in &backup.collection_backups {
                for s in c.segments() {
                    for (key, size, md5) in s.files() {
                        expected.push(Expected {
                            db: &c.db_name,
                            collection: &c.collection_name,
                            key,
                            size: Some(meta_size(size)),
                            md5,
                            etag: None,
                        });
                    }
                }
            }
        }
        Some(r) => {
            for c in &r.collections {
                for p in &c.partitions {
                    for f in &p.files {
                        expected.push(Expected {
                            db: &c.db_name,
                            collection: &c.collection_name,
                            key: f.key.clone(),
                            size: f.size,
                            md5: f.md5.clone(),
                            etag: f.etag.as_deref(),
                        });
                    }
                }
            }
        }
    }

    // One listing of the whole backup rather than a HEAD per file: a backup holds many
    // thousands of binlogs, and a listing page answers for a thousand of them. Only the keys
    // the meta names are kept, so memory follows the meta, not whatever else lies there.
    let wanted: HashSet<&str> = expected.iter().map(|e| e.key.as_str()).collect();
    // The trailing `/` keeps a sibling such as `backup-old` out of `backup`'s listing.
    let prefix = if at.path.is_empty() {
        String::new()
    } else {
        format!("{}/", at.path)
    };
    let mut listed: HashMap<String, (u64, Option<String>, Option<String>)> = HashMap::new();
    let mut listing = store.list(&prefix);
    while let Some(o) = listing.try_next().await? {
        let Some(rel) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        if wanted.contains(rel) {
            listed.insert(rel.to_string(), (o.size, o.md5, o.etag));
        }
    }
    drop(listing);

    let mut damage = Vec::new();
    // Files whose MD5 only reading them can tell: (index into `expected`, recorded MD5).
    let mut to_read = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        let Some((size, md5, etag)) = listed.get(&e.key) else {
            damage.push(e.damage(Problem::Missing));
            continue;
        };
        if let Some(want) = e.size
            && *size != want
        {
            // A wrong size says enough; its MD5 would differ too.
            damage.push(e.damage(Problem::Size {
                found: *size,
                expected: want,
            }));
            continue;
        }
        let Some(want) = &e.md5 else { continue };
        match md5 {
            Some(found) if !found.eq_ignore_ascii_case(want) => {
                damage.push(e.damage(Problem::Md5 {
                    found: found.clone(),
                    expected: want.to_ascii_lowercase(),
                }));
            }
            Some(_) => {}
            // The object planrun wrote, unchanged since: its multipart ETag says so.
            None if e.etag.is_some() && etag.as_deref() == e.etag => {}
            None => to_read.push((i, want.to_ascii_lowercase())),
        }
    }
    drop(listed);

    let read: Vec<Option<Damage>> = futures::stream::iter(to_read)
        .map(|(i, want)| {
            let e = &expected[i];
            let key = at.join(&e.key);
            async move {
                Ok::<_, StorageError>(match content_md5(store, &key).await? {
                    // Gone since the listing: as missing as a file never there.
                    None => Some(e.damage(Problem::Missing)),
                    Some(found) if found != want => Some(e.damage(Problem::Md5 {
                        found,
                        expected: want,
                    })),
                    Some(_) => None,
                })
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    damage.extend(read.into_iter().flatten());

    damage.sort_by(|a, b| (&a.db, &a.collection, &a.key).cmp(&(&b.db, &b.collection, &b.key)));
    Ok(damage)
}

/// The MD5 of an object's content, streamed chunk by chunk; `None` when it does not exist.
async fn content_md5(store: &dyn Storage, key: &str) -> Result<Option<String>, StorageError> {
    let mut body = match store.get(key).await {
        Ok(body) => body,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = Md5::new();
    while let Some(chunk) = body.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(Some(md5_hex(hasher)))
}

/// Refuses a segment whose insert binlogs are incomplete or inconsistent, as when compaction
/// races the backup and some fields' logs are gone or new: every field Milvus stores (RowID,
/// Timestamp, and every field with id ≥ 100, the dynamic `$meta` field included) must have at
/// least one binlog, no binlog may be of a field the schema does not have, and every field must
/// have as many binlogs as the others, since each flush writes one log per field.
pub fn check_segment(schema: &CollectionSchema, seg: &SegmentBackupInfo) -> Result<(), String> {
    // An L0 segment holds only deletes (delta logs) by design.
    if seg.is_l0 {
        return Ok(());
    }
    // Which fields have binlogs: system fields by their fixed ids, user and dynamic fields by
    // the schema's ids (the ids below 100 other than 0 and 1 are never stored).
    let mut fields: Vec<(i64, String)> = SYSTEM_FIELDS
        .iter()
        .map(|(id, name)| (*id, name.to_string()))
        .collect();
    fields.extend(
        schema
            .fields
            .iter()
            .filter(|f| f.field_id >= FIRST_USER_FIELD)
            .map(|f| (f.field_id, f.name.clone())),
    );
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for fb in &seg.binlogs {
        *counts.entry(fb.field_id).or_default() += fb.binlogs.len();
    }
    let id = seg.segment_id;
    if seg.binlogs.iter().all(|fb| fb.binlogs.is_empty()) {
        return Err(format!(
            "segment {id} has no insert logs; it was likely compacted away while it was backed \
             up, take the backup again"
        ));
    }

    let mut problems = Vec::new();
    for (fid, name) in &fields {
        if counts.get(fid).copied().unwrap_or(0) == 0 {
            problems.push(format!("field `{name}` (id {fid}) has no binlog"));
        }
    }
    // DescribeCollection leaves out the dynamic `$meta` field, which has binlogs of its own:
    // with dynamic fields on, the one field id past the schema's is that field.
    let unknown: Vec<i64> = counts
        .keys()
        .filter(|fid| !fields.iter().any(|(f, _)| f == *fid))
        .copied()
        .collect();
    let max_known = fields.iter().map(|(f, _)| *f).max().unwrap_or(0);
    if schema.enable_dynamic_field
        && !schema.fields.iter().any(|f| f.is_dynamic)
        && let [only] = unknown.as_slice()
        && *only > max_known
    {
        fields.push((*only, "$meta".to_string()));
    }
    for fid in counts.keys() {
        if !fields.iter().any(|(f, _)| f == fid) {
            problems.push(format!(
                "it has binlogs of field id {fid}, which the schema does not have"
            ));
        }
    }
    // The count most fields agree on (the larger on a tie): a field with another count lost
    // or gained logs.
    let mut tally: BTreeMap<usize, usize> = BTreeMap::new();
    for (fid, _) in &fields {
        if let Some(&n) = counts.get(fid).filter(|&&n| n > 0) {
            *tally.entry(n).or_default() += 1;
        }
    }
    if let Some((&usual, _)) = tally.iter().max_by_key(|(n, fields)| (**fields, **n)) {
        for (fid, name) in &fields {
            match counts.get(fid).copied() {
                Some(n) if n > 0 && n != usual => problems.push(format!(
                    "field `{name}` (id {fid}) has {n} binlog(s) where the other fields have \
                     {usual}"
                )),
                _ => {}
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "segment {id}: {}; its binlogs changed while it was backed up (compaction), take the \
         backup again",
        problems.join("; ")
    ))
}

/// [`check_segment`] for every segment of a collection; the message names the collection and
/// the segments that fail.
pub fn check_collection(info: &CollectionBackupInfo) -> Result<(), String> {
    let failed: Vec<String> = info
        .partition_backups
        .iter()
        .flat_map(|p| &p.segment_backups)
        .filter_map(|s| check_segment(&info.schema, s).err())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    // The caller names the collection (it is the unit of work that fails).
    let mut msg = failed[..failed.len().min(SEGMENTS_SHOWN)].join("\n");
    if failed.len() > SEGMENTS_SHOWN {
        msg.push_str(&format!(
            "\nand {} more segment(s)",
            failed.len() - SEGMENTS_SHOWN
        ));
    }
    Err(msg)
}

#[cfg(test)]
mod tests;
