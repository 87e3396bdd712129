//! Pipelining: the collections a running step has finished, handed to the steps after it.
//!
//! A backup step publishes each collection it finished (as a one-collection backup at its `to`);
//! a copy step that reads exactly that location copies the collection's files at once and
//! publishes it again at its own `to`; a restore step reading there restores it at once. Each
//! step still ends with its whole pass over the finished backup, which skips by its records
//! what the pipelined work already did, so resume works as before. A rows backup also publishes
//! each Parquet file as it is written (a partial unit), so a rows restore inserts it at once.

use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::format::meta::BackupInfo;
use crate::format::rows::RowsMeta;
use crate::plan::Location;

/// One collection: a backup of it alone at `at`, complete unless `partial`. The whole backup a
/// step reads once its upstream ended is a `Unit` too.
#[derive(Clone, Debug)]
pub struct Unit {
    pub at: Location,
    pub backup: BackupInfo,
    /// The Parquet files of a rows backup (`backup.format` is rows): all of them, or with
    /// `partial` those written so far.
    pub rows: Option<RowsMeta>,
    /// More files of this collection are coming: what arrived may be inserted, but the
    /// collection is not finished (indexed, loaded, counted) on it.
    pub partial: bool,
}

/// How the publishing step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    /// Finished some collections and failed others: what depends on it goes on with those.
    Partial,
    /// Failed, skipped or interrupted: what depends on it stops after what it already did.
    Failed,
}

#[derive(Default)]
struct State {
    units: Vec<Unit>,
    ended: Option<Ended>,
}

/// The units one step published, in order, and how it ended.
#[derive(Default)]
pub struct Feed {
    state: Mutex<State>,
    changed: Notify,
}

impl Feed {
    pub fn push(&self, unit: Unit) {
        self.state.lock().expect("feed lock").units.push(unit);
        self.changed.notify_waiters();
    }

    /// Called by the executor once the step is over, whatever the outcome.
    pub fn end(&self, ended: Ended) {
        self.state
            .lock()
            .expect("feed lock")
            .ended
            .get_or_insert(ended);
        self.changed.notify_waiters();
    }

    pub fn ended(&self) -> Option<Ended> {
        self.state.lock().expect("feed lock").ended
    }

    /// The units from index `seen` on, waiting until there is one or the step ended; `None`
    /// once it ended and everything was seen (or the run was interrupted).
    pub async fn next(&self, seen: usize, cancel: &CancellationToken) -> Option<Vec<Unit>> {
        loop {
            let changed = self.changed.notified();
            {
                let s = self.state.lock().expect("feed lock");
                if s.units.len() > seen {
                    return Some(s.units[seen..].to_vec());
                }
                if s.ended.is_some() {
                    return None;
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn unit(n: &str) -> Unit {
        Unit {
            at: Location {
                bucket: "b".into(),
                path: n.into(),
            },
            backup: BackupInfo::default(),
            rows: None,
            partial: false,
        }
    }

    #[tokio::test]
    async fn a_reader_gets_every_unit_in_order_then_the_end() {
        let feed = Arc::new(Feed::default());
        let cancel = CancellationToken::new();
        let reader = {
            let (feed, cancel) = (feed.clone(), cancel.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(units) = feed.next(got.len(), &cancel).await {
                    got.extend(units.into_iter().map(|u| u.at.path));
                }
                (got, feed.ended())
            })
        };
        feed.push(unit("a"));
        tokio::task::yield_now().await;
        feed.push(unit("b"));
        feed.end(Ended::Partial);
        feed.end(Ended::Done);
        let (got, ended) = reader.await.unwrap();
        assert_eq!(got, ["a", "b"]);
        // The first end is what counts.
        assert_eq!(ended, Some(Ended::Partial));
    }

    #[tokio::test]
    async fn an_interrupted_run_stops_the_wait() {
        let feed = Feed::default();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(feed.next(0, &cancel).await.is_none());
    }
}
