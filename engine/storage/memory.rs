//! `MemoryStorage`: a bucket held in a map, for tests and for code that wants a store without a disk or a server, with a few explicit ways to make it fail (`MemoryFault`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use md5::{Digest, Md5};

use super::{ByteStream, ObjectMeta, Place, Storage, StorageError, key_problem, md5_hex};

/// Keys per listing page, as on S3: a listing interleaved with writes sees each page as it was
/// when that page was read, not one snapshot of the whole prefix.
const LIST_PAGE: usize = 1000;

/// A way one key of a [`MemoryStorage`] goes wrong, armed with [`MemoryStorage::inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryFault {
    /// `get` flips the first byte of every chunk while `head` still tells the stored size and
    /// MD5: damage that only checking the bytes read can catch.
    CorruptReads,
    /// `get` hands out this many bytes, then fails as a dropped connection would (a transient
    /// `Io` error, connection reset). No fault for an object no longer than that.
    FailReadsAfter(u64),
    /// `put` yields to the scheduler after every chunk it takes, so it drains its body more
    /// slowly than a source fills it.
    SlowWrites,
}

/// Called after each chunk a `put` takes, with the bytes that put has taken so far.
type PutWatch = dyn Fn(u64) + Send + Sync;

struct Object {
    data: Bytes,
    md5: String,
}

/// A bucket in memory. Keeps the [`Storage`] contract: a put becomes visible only when its body
/// has ended, listings are recursive and in key order, `get` streams chunks of
/// [`MemoryStorage::READ_CHUNK`] bytes. Heads tell the MD5 computed at the put, and no ETag.
pub struct MemoryStorage {
    place: Arc<Place>,
    objects: Mutex<BTreeMap<String, Object>>,
    faults: Mutex<HashMap<String, MemoryFault>>,
    bytes_read: Arc<AtomicU64>,
    put_watch: Mutex<Option<Arc<PutWatch>>>,
}

// By hand: the objects' bytes and the watch closure are no use in a message.
impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("name", &self.place.id)
            .field("objects", &lock(&self.objects).len())
            .field("faults", &*lock(&self.faults))
            .finish()
    }
}

/// The guarded value even if a panicking test thread poisoned the lock: every update here is a
/// single map operation, so the map is never left half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStorage {
    /// Size of the chunks `get` hands out (the last one may be shorter).
    pub const READ_CHUNK: usize = 64 * 1024;

    /// An empty store; `name` is the bucket id its messages give.
    pub fn new(name: &str) -> Self {
        MemoryStorage {
            place: Arc::new(Place {
                id: name.to_string(),
                location: "in-memory store".into(),
                // No plan setting names a memory store; its messages never need one.
                setting: "bucket",
                endpoint_setting: None,
            }),
            objects: Mutex::default(),
            faults: Mutex::default(),
            bytes_read: Arc::default(),
            put_watch: Mutex::default(),
        }
    }

    /// Arms `fault` on `key` (replacing any earlier one); it applies to every later operation on
    /// that key that it concerns.
    pub fn inject(&self, key: &str, fault: MemoryFault) {
        lock(&self.faults).insert(key.to_string(), fault);
    }

    /// Bytes that `get` streams have handed out so far, all keys together.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    /// Calls `watch` after each chunk any later `put` takes, with the bytes that put has taken
    /// so far: lets a test see how far a producer runs ahead of this store.
    pub fn watch_puts(&self, watch: impl Fn(u64) + Send + Sync + 'static) {
        *lock(&self.put_watch) = Some(Arc::new(watch));
    }

    fn fault(&self, key: &str) -> Option<MemoryFault> {
        lock(&self.faults).get(key).copied()
    }

    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        match key_problem(key) {
            Some(reason) => Err(StorageError::InvalidKey {
                place: self.place.clone(),
                key: key.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Up to [`LIST_PAGE`] objects under `prefix`, from `from` on.
    fn list_page(&self, prefix: &str, from: Bound<String>) -> Vec<ObjectMeta> {
        lock(&self.objects)
            .range::<String, _>((from, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(LIST_PAGE)
            .map(|(key, object)| meta(key, object))
            .collect()
    }

    /// `data` as the stream `get` returns, with `key`'s read fault applied.
    fn read_stream(&self, key: &str, data: Bytes) -> ByteStream {
        let fault = self.fault(key);
        let (end, fail) = match fault {
            Some(MemoryFault::FailReadsAfter(n)) if n < data.len() as u64 => (n as usize, true),
            _ => (data.len(), false),
        };
        let corrupt = fault == Some(MemoryFault::CorruptReads);
        let read = self.bytes_read.clone();
        let chunks = stream::iter((0..end).step_by(Self::READ_CHUNK)).map(move |start| {
            let mut chunk = data.slice(start..(start + Self::READ_CHUNK).min(end));
            if corrupt {
                let mut damaged = chunk.to_vec();
                damaged[0] ^= 0xff;
                chunk = Bytes::from(damaged);
            }
            read.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Ok(chunk)
        });
        if !fail {
            return chunks.boxed();
        }
        let error = StorageError::Io {
            place: self.place.clone(),
            op: "read",
            key: key.to_string(),
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        chunks
            .chain(stream::once(async move { Err(error) }))
            .boxed()
    }
}

fn meta(key: &str, object: &Object) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: object.data.len() as u64,
        etag: None,
        md5: Some(object.md5.clone()),
    }
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    fn place(&self) -> &Place {
        &self.place
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let prefix = prefix.to_string();
        // State: where the next page starts, `None` once a page came back short.
        let first = Some(Bound::Included(prefix.clone()));
        stream::unfold(first, move |from| {
            let prefix = prefix.clone();
            async move {
                let page = self.list_page(&prefix, from?);
                let next = (page.len() == LIST_PAGE)
                    .then(|| Bound::Excluded(page[LIST_PAGE - 1].key.clone()));
                Some((stream::iter(page.into_iter().map(Ok)), next))
            }
        })
        .flatten()
        .boxed()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.check_key(key)?;
        Ok(lock(&self.objects).get(key).map(|object| meta(key, object)))
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StorageError> {
        Ok(self.get_with_meta(key).await?.1)
    }

    // Both from one look at the map: an overwrite between a head and a get cannot split them.
    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.check_key(key)?;
        let (meta, data) = match lock(&self.objects).get(key) {
            Some(object) => (meta(key, object), object.data.clone()),
            None => return Err(StorageError::not_found(&self.place, key)),
        };
        Ok((meta, self.read_stream(key, data)))
    }

    async fn put(&self, key: &str, mut body: ByteStream) -> Result<ObjectMeta, StorageError> {
        self.check_key(key)?;
        let slow = self.fault(key) == Some(MemoryFault::SlowWrites);
        let watch = lock(&self.put_watch).clone();
        let mut data = BytesMut::new();
        let mut hasher = Md5::new();
        while let Some(chunk) = body.next().await {
            // An error from the body ends the put here, before anything is stored.
            let chunk = chunk?;
            hasher.update(&chunk);
            data.extend_from_slice(&chunk);
            if let Some(watch) = &watch {
                watch(data.len() as u64);
            }
            if slow {
                tokio::task::yield_now().await;
            }
        }
        let object = Object {
            data: data.freeze(),
            md5: md5_hex(hasher),
        };
        let meta = meta(key, &object);
        lock(&self.objects).insert(key.to_string(), object);
        Ok(meta)
    }

    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StorageError> {
        self.put(key, stream::once(async move { Ok(body) }).boxed())
            .await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        // All keys checked first: a bad key deletes nothing.
        for key in keys {
            self.check_key(key)?;
        }
        let mut objects = lock(&self.objects);
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn read(store: &MemoryStorage, key: &str) -> (Vec<u8>, Option<StorageError>) {
        let mut body = store.get(key).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn reads_come_in_chunks_and_are_counted() {
        let store = MemoryStorage::new("mem");
        let data = Bytes::from(vec![3u8; 2 * MemoryStorage::READ_CHUNK + 10]);
        store.put_bytes("k", data.clone()).await.unwrap();
        let sizes: Vec<usize> = store
            .get("k")
            .await
            .unwrap()
            .map_ok(|c| c.len())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            sizes,
            [MemoryStorage::READ_CHUNK, MemoryStorage::READ_CHUNK, 10]
        );
        assert_eq!(store.bytes_read(), data.len() as u64);
        let err = store.head("/k").await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    }

    #[tokio::test]
    async fn corrupt_reads_keep_the_head_honest() {
        let store = MemoryStorage::new("mem");
        let meta = store
            .put_bytes("k", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        store.inject("k", MemoryFault::CorruptReads);
        assert_eq!(store.head("k").await.unwrap(), Some(meta));
        let (got, err) = read(&store, "k").await;
        assert!(err.is_none());
        assert_eq!(got, [b'a' ^ 0xff, b'b', b'c']);
    }

    #[tokio::test]
    async fn failing_reads_stop_at_the_given_byte() {
        let store = MemoryStorage::new("mem");
        let data = Bytes::from(vec![1u8; 100_000]);
        store.put_bytes("k", data.clone()).await.unwrap();
        store.inject("k", MemoryFault::FailReadsAfter(70_000));
        let (got, err) = read(&store, "k").await;
        assert_eq!(got.len(), 70_000);
        let err = err.expect("the read fails");
        assert!(
            matches!(err, StorageError::Io { .. }) && err.is_transient(),
            "{err:?}"
        );
        // Not longer than the limit: nothing to fail.
        store.inject("k", MemoryFault::FailReadsAfter(100_000));
        let (got, err) = read(&store, "k").await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_failed_put_stores_nothing_and_watches_see_each_chunk() {
        let store = MemoryStorage::new("mem");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        store.watch_puts(move |n| log.lock().unwrap().push(n));
        store.inject("k", MemoryFault::SlowWrites);
        let body = stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(StorageError::not_found(&store.place, "src")),
        ])
        .boxed();
        let err = store.put("k", body).await.unwrap_err();
        assert!(
            err.is_not_found(),
            "the body's error comes back unchanged: {err}"
        );
        assert_eq!(store.head("k").await.unwrap(), None);
        assert_eq!(*seen.lock().unwrap(), [7]);
    }
}
