//! `LocalStorage`: a directory as a bucket; keys are `/`-separated paths below it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectMeta, Place, Storage, StorageError, md5_hex};

/// A local directory used as a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    /// The plan's bucket id, e.g. `backup`.
    pub name: String,
    /// The directory; it must exist (it is the bucket).
    pub path: PathBuf,
}

/// Temporary files of puts in flight start with this; listings skip them and keys may not use it.
const TMP_PREFIX: &str = ".planrun-tmp.";

/// Read buffer for `get`: large enough for throughput, small enough to keep memory flat.
const READ_CHUNK: usize = 256 * 1024;

/// A directory holding one file per object. Writes go to a temporary file in the target's
/// directory and are renamed into place, so readers never see partial objects.
#[derive(Debug)]
pub struct LocalStorage {
    place: Arc<Place>,
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(config: &LocalConfig) -> Self {
        LocalStorage {
            place: Arc::new(Place {
                id: config.name.clone(),
                location: format!("local directory `{}`", config.path.display()),
                setting: "path",
                endpoint_setting: None,
            }),
            root: config.path.clone(),
        }
    }

    /// The directory this store reads and writes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn invalid(&self, key: &str, reason: &'static str) -> StorageError {
        StorageError::InvalidKey {
            place: self.place.clone(),
            key: key.to_string(),
            reason,
        }
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> StorageError {
        StorageError::Io {
            place: self.place.clone(),
            op,
            key: key.to_string(),
            source,
        }
    }

    /// The file for `key`, refusing keys that could escape the root or that a directory tree
    /// cannot represent.
    fn path_for(&self, key: &str) -> Result<PathBuf, StorageError> {
        if key.is_empty() {
            return Err(self.invalid(key, "a key may not be empty"));
        }
        if key.starts_with('/') || key.ends_with('/') {
            return Err(self.invalid(
                key,
                "a key may not start or end with `/` in a local directory",
            ));
        }
        if key.contains('\\') || key.contains('\0') {
            return Err(self.invalid(
                key,
                "a key may not contain `\\` or NUL in a local directory",
            ));
        }
        let mut path = self.root.clone();
        for segment in key.split('/') {
            match segment {
                "" => return Err(self.invalid(key, "a key may not contain `//`")),
                "." | ".." => {
                    return Err(self.invalid(key, "a key may not contain `.` or `..` segments"));
                }
                s if s.len() > 255 => {
                    return Err(self.invalid(key, "a file name may have at most 255 bytes"));
                }
                s if s.starts_with(TMP_PREFIX) => {
                    return Err(
                        self.invalid(key, "names starting with `.planrun-tmp.` are reserved")
                    );
                }
                s => path.push(s),
            }
        }
        Ok(path)
    }

    /// Maps "no such file" to NotFound, or BucketNotFound when the root itself is missing.
    async fn missing(&self, key: &str) -> StorageError {
        if tokio::fs::metadata(&self.root)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            StorageError::NotFound {
                place: self.place.clone(),
                key: key.to_string(),
            }
        } else {
            StorageError::BucketNotFound {
                place: self.place.clone(),
            }
        }
    }

    async fn require_root(&self) -> Result<(), StorageError> {
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Config {
                place: self.place.clone(),
                reason: format!(
                    "the path is not a directory; fix `buckets.{}.path`",
                    self.place.id
                ),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::BucketNotFound {
                place: self.place.clone(),
            }),
            Err(e) => Err(self.io("open", "", e)),
        }
    }

    /// Writes the body to a temporary file next to `path`, then renames it over `path`.
    async fn write_atomic(
        &self,
        key: &str,
        path: &Path,
        mut body: ByteStream,
    ) -> Result<ObjectMeta, StorageError> {
        static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().expect("a key path is below the root");
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| self.io("create the directory for", key, e))?;
        // Not derived from the key's file name, which may already be at the length limit.
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| self.io("create a temporary file for", key, e))?;
            let mut hasher = Md5::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| self.io("write", key, e))?;
            }
            file.flush().await.map_err(|e| self.io("write", key, e))?;
            // Durable before visible: a resumed run trusts objects that exist.
            file.sync_all().await.map_err(|e| self.io("sync", key, e))?;
            drop(file);
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(|e| self.io("rename into place", key, e))?;
            Ok(ObjectMeta {
                key: key.to_string(),
                size,
                etag: None,
                md5: Some(md5_hex(hasher)),
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Removes now-empty directories from `path`'s parent up to (not including) the root, so a
    /// deleted prefix leaves no empty directory tree behind.
    async fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root
                || !d.starts_with(&self.root)
                || tokio::fs::remove_dir(d).await.is_err()
            {
                break;
            }
            dir = d.parent();
        }
    }
}

/// An entry waiting in the listing's depth-first walk.
enum Pending {
    Dir { path: PathBuf, key_prefix: String },
    File { key: String, size: u64 },
}

/// Reads one directory and returns its children as `Pending` entries, sorted so that the walk yields
/// keys in lexicographic order: a directory `d` sorts as `d/`, because `a.txt` < `a/b` in key order.
async fn read_children(
    path: &Path,
    key_prefix: &str,
    prefix: &str,
) -> std::io::Result<Vec<(String, Pending)>> {
    let mut out = Vec::new();
    let mut dir = tokio::fs::read_dir(path).await?;
    while let Some(entry) = dir.next_entry().await? {
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        // Follows symlinks: a linked file or directory counts as what it points at.
        let meta = match tokio::fs::metadata(entry.path()).await {
            Ok(m) => m,
            // Deleted while we walked, or a dangling link: not an object.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let key = format!("{key_prefix}{name}");
        if meta.is_dir() {
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                out.push((
                    dir_key.clone(),
                    Pending::Dir {
                        path: entry.path(),
                        key_prefix: dir_key,
                    },
                ));
            }
        } else if meta.is_file() && key.starts_with(prefix) {
            out.push((
                key.clone(),
                Pending::File {
                    key,
                    size: meta.len(),
                },
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        self.path_for(key).map(|_| ())
    }

    fn place(&self) -> &Place {
        &self.place
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let prefix = prefix.to_string();
        // Start at the deepest directory the prefix names in full; entries are filtered by prefix.
        let start_key = match prefix.rfind('/') {
            Some(i) => prefix[..=i].to_string(),
            None => String::new(),
        };
        let start_path = start_key
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(self.root.clone(), |p, s| p.join(s));
        let unsafe_prefix = start_key.split('/').any(|s| s == ".." || s == ".");
        let state = (
            vec![Pending::Dir {
                path: start_path,
                key_prefix: start_key,
            }],
            true,
        );
        let s = stream::try_unfold(state, move |(mut stack, first)| {
            let prefix = prefix.clone();
            async move {
                if unsafe_prefix {
                    return Err(
                        self.invalid(&prefix, "a prefix may not contain `.` or `..` segments")
                    );
                }
                if first {
                    self.require_root().await?;
                }
                while let Some(next) = stack.pop() {
                    match next {
                        Pending::File { key, size } => {
                            let meta = ObjectMeta {
                                key,
                                size,
                                etag: None,
                                md5: None,
                            };
                            return Ok(Some((meta, (stack, false))));
                        }
                        Pending::Dir { path, key_prefix } => {
                            match read_children(&path, &key_prefix, &prefix).await {
                                Ok(children) => {
                                    stack.extend(children.into_iter().rev().map(|(_, p)| p))
                                }
                                // The prefix names a directory that does not exist: nothing under it.
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        ErrorKind::NotFound | ErrorKind::NotADirectory
                                    ) => {}
                                Err(e) => return Err(self.io("list", &key_prefix, e)),
                            }
                        }
                    }
                }
                Ok(None)
            }
        });
        s.boxed()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_for(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                etag: None,
                md5: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                self.require_root().await?;
                Ok(None)
            }
            Err(e) => Err(self.io("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StorageError> {
        let path = self.path_for(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(self.missing(key).await);
            }
            Err(e) => return Err(self.io("read", key, e)),
        };
        if file.metadata().await.is_ok_and(|m| m.is_dir()) {
            return Err(self.missing(key).await);
        }
        let place = self.place.clone();
        let key = key.to_string();
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                .map_err(move |source| StorageError::Io {
                    place: place.clone(),
                    op: "read",
                    key: key.clone(),
                    source,
                })
                .boxed(),
        )
    }

    async fn put(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StorageError> {
        let path = self.path_for(key)?;
        self.require_root().await?;
        self.write_atomic(key, &path, body).await
    }

    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StorageError> {
        self.put(key, stream::once(async move { Ok(body) }).boxed())
            .await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            let path = self.path_for(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => self.prune_empty_dirs(&path).await,
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
                Err(e) => return Err(self.io("delete", key, e)),
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.require_root().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> LocalStorage {
        LocalStorage::new(&LocalConfig {
            name: "local_b".into(),
            path: root.to_path_buf(),
        })
    }

    #[test]
    fn rejects_keys_that_escape_or_cannot_be_files() {
        let s = store(Path::new("/tmp/x"));
        for key in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "./a",
            "a\\b",
            ".planrun-tmp.1",
        ] {
            let err = s.path_for(key).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidKey { .. }),
                "{key}: {err}"
            );
        }
        assert_eq!(s.path_for("a/b.bin").unwrap(), Path::new("/tmp/x/a/b.bin"));
    }

    #[tokio::test]
    async fn lists_in_key_order_across_directories() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // `a.txt` sorts before `a/b` because `.` < `/`; a plain directory walk would get this wrong.
        for key in ["a/b", "a.txt", "a-c/d", "a/a/z", "b"] {
            s.put_bytes(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let keys: Vec<String> = s.list("").map_ok(|m| m.key).try_collect().await.unwrap();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys, ["a-c/d", "a.txt", "a/a/z", "a/b", "b"]);
        let under_a: Vec<String> = s.list("a/").map_ok(|m| m.key).try_collect().await.unwrap();
        assert_eq!(under_a, ["a/a/z", "a/b"]);
        let starts_a: Vec<String> = s.list("a").map_ok(|m| m.key).try_collect().await.unwrap();
        assert_eq!(starts_a.len(), 4);
        let none: Vec<String> = s
            .list("zzz/")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn failed_put_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let body = stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(StorageError::NotFound {
                place: s.place.clone(),
                key: "src".into(),
            }),
        ])
        .boxed();
        let err = s.put("d/obj", body).await.unwrap_err();
        assert!(
            err.is_not_found(),
            "the body's error comes back unchanged: {err}"
        );
        assert!(s.head("d/obj").await.unwrap().is_none());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "temporary file left behind: {leftovers:?}"
        );
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories_but_not_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.put_bytes("x/y/z", Bytes::from_static(b"1"))
            .await
            .unwrap();
        s.delete(&["x/y/z".to_string(), "missing/key".to_string()])
            .await
            .unwrap();
        assert!(!dir.path().join("x").exists());
        assert!(dir.path().exists());
    }

    #[tokio::test]
    async fn missing_root_is_a_missing_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir.path().join("nope"));
        let err = s
            .put_bytes("k", Bytes::from_static(b"1"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::BucketNotFound { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("create it or fix `buckets.local_b.path`"),
            "{err}"
        );
        let err = s.list("").try_collect::<Vec<_>>().await.unwrap_err();
        assert!(matches!(err, StorageError::BucketNotFound { .. }), "{err}");
    }
}
