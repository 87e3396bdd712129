//! Waiting on a server-side job (flush, import, index build, load): the poll loop, its pauses.

use std::future::Future;
use std::time::{Duration, Instant};

use super::MilvusClient;
use crate::milvus::MilvusError;

/// The longest pause between two polls of a server-side job (flush, import, index build, load):
/// the state calls are cheap, and every pause is time added to the migration after the job ends.
pub const POLL_MAX: Duration = Duration::from_millis(500);
/// The first such pause for flush, load and index waits: short for the same reason, since a
/// small job is often done by the second poll.
pub(super) const POLL_FIRST: Duration = Duration::from_millis(200);

/// What one look at a server-side job (flush, import, index build, load) saw.
pub(super) enum Polled<T> {
    /// Finished; carries what the wait returns.
    Done(T),
    /// Not yet; says what was seen, for the timeout message.
    Pending(String),
}

impl MilvusClient {
    /// Calls `check` until it reports `Done`, pausing `first_pause` at first, then twice as long
    /// each time up to [`POLL_MAX`]. A `Pending` report says what was seen, so the timeout
    /// error can name the last state rather than just "too slow".
    pub(super) async fn poll_until<T, F, Fut>(
        &self,
        what: &'static str,
        collection: &str,
        timeout: Duration,
        first_pause: Duration,
        mut check: F,
    ) -> Result<T, MilvusError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Polled<T>, MilvusError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut delay = first_pause;
        loop {
            let last = match check().await? {
                Polled::Done(v) => return Ok(v),
                Polled::Pending(last) => last,
            };
            if Instant::now() + delay > deadline {
                return Err(MilvusError::WaitTimeout {
                    instance: self.info.name.clone(),
                    what,
                    collection: collection.to_string(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(POLL_MAX);
        }
    }
}
