//! What every step works with when it runs: its error type, the run's connections
//! (`Resources`), its checkpointed tasks, events and cancellation (`StepCtx`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointError, TaskState, Tasks};
use crate::events::{Event, Events};
use crate::format::FormatError;
use crate::format::meta::BackupInfo;
use crate::milvus::{MilvusClient, MilvusConfig, MilvusError};
use crate::plan::{Location, Plan};
use crate::steps::feed::{Ended, Feed, Unit};
use crate::storage::{self, Storage, StorageConfig, StorageError};
use crate::throttle::Throttle;

/// Why a step failed. Messages name the step's instance, bucket, collection or key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Milvus(#[from] MilvusError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Interrupted,
    /// A step it needs did not finish; it stopped after what it had done with that step's
    /// finished collections (pipelining). Reported as skipped, as if it had not started.
    #[error("{0}")]
    Upstream(String),
    /// Some collections failed, the others finished: what depends on the finished ones may go on.
    #[error("{} of the step's collections failed: {}", failed.len(), failed.iter().map(|(u, why)| format!("`{u}`: {why}")).collect::<Vec<_>>().join("; "))]
    Partial {
        summary: String,
        failed: Vec<(String, String)>,
    },
}

impl StepError {
    /// Whether the server behind the error could not be reached (refused, dropped, silent):
    /// a fault of the network or the server, not of what was asked.
    pub fn is_unreachable(&self) -> bool {
        use crate::storage::StorageError as S;
        match self {
            StepError::Storage(e) | StepError::Format(FormatError::Storage(e)) => {
                matches!(e, S::Unreachable { .. } | S::Timeout { .. })
            }
            StepError::Milvus(e) => matches!(
                e,
                MilvusError::Unreachable { .. }
                    | MilvusError::ConnectionLost { .. }
                    | MilvusError::Timeout { .. }
            ),
            _ => false,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            StepError::Storage(e) | StepError::Format(FormatError::Storage(e)) => e.is_transient(),
            StepError::Milvus(e) => e.is_transient(),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StepError>;

pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(StepError::Failed(msg.into()))
}

/// How long a collection may take to load.
pub const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Loads a collection unless it is loaded already.
pub async fn ensure_loaded(c: &crate::milvus::MilvusClient, coll: &str) -> Result<()> {
    if c.get_load_state(coll).await? != crate::milvus::pb::common::LoadState::Loaded {
        c.load_collection(coll).await?;
        c.wait_loaded(coll, LOAD_TIMEOUT).await?;
    }
    Ok(())
}

/// Connections of one run, opened on first use and shared by all steps.
pub struct Resources {
    pub plan: Arc<Plan>,
    milvus: Mutex<HashMap<String, MilvusClient>>,
    storage: Mutex<HashMap<String, Arc<dyn Storage>>>,
    /// Object copies in flight in the whole run (`settings.copies`).
    pub copies: Arc<Semaphore>,
    /// Imports in flight per instance (`settings.imports`).
    imports: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Requests per second per instance, shared by every step and client of the run.
    throttles: HashMap<String, Arc<Throttle>>,
}

impl Resources {
    pub fn new(plan: Arc<Plan>) -> Resources {
        let throttles = plan
            .instances
            .values()
            .map(|i| {
                let cap = i.requests_per_second as f64;
                let t = Throttle::new(format!("`{}`", i.id), "requests", Some(cap));
                (i.id.clone(), t)
            })
            .collect();
        Resources {
            throttles,
            milvus: Mutex::new(HashMap::new()),
            storage: Mutex::new(HashMap::new()),
            copies: Arc::new(Semaphore::new(plan.settings.copies.max(1))),
            imports: std::sync::Mutex::new(HashMap::new()),
            plan,
        }
    }

    /// Says in `events` when a server first pushes back and its throttle slows down.
    pub fn report_throttling(&self, events: &Events) {
        for (id, t) in &self.throttles {
            let (events, target) = (events.clone(), id.clone());
            t.tell(Arc::new(move |message| {
                events.send(Event::Backoff {
                    target: target.clone(),
                    message,
                })
            }));
        }
    }

    /// The import slots of one instance: held while an import of it runs.
    pub fn imports(&self, instance: &str) -> Arc<Semaphore> {
        let mut map = self.imports.lock().expect("not poisoned");
        map.entry(instance.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.plan.settings.imports.max(1))))
            .clone()
    }

    pub fn milvus_config(&self, id: &str) -> MilvusConfig {
        let inst = &self.plan.instances[id];
        let mut cfg = MilvusConfig::new(id, inst.uri.clone());
        cfg.user = inst.user.clone();
        cfg.password = inst.password.clone();
        cfg.token = inst.token.clone();
        cfg.database = inst.database.clone();
        if let Some(tls) = &inst.tls {
            cfg.ca_cert = tls.ca_cert.clone();
            cfg.client_cert = tls.client_cert.clone();
            cfg.client_key = tls.client_key.clone();
            cfg.server_name = tls.server_name.clone();
        }
        if let Some(secs) = inst.timeout {
            cfg.timeout = Duration::from_secs(secs);
        }
        cfg.retries = self.plan.settings.retries;
        cfg.throttle = self.throttles[id].clone();
        cfg
    }

    pub async fn milvus(&self, id: &str) -> Result<MilvusClient> {
        let mut map = self.milvus.lock().await;
        if let Some(c) = map.get(id) {
            return Ok(c.clone());
        }
        let client = MilvusClient::connect(&self.milvus_config(id)).await?;
        map.insert(id.to_string(), client.clone());
        Ok(client)
    }

    pub fn storage_config(&self, id: &str) -> StorageConfig {
        self.plan.buckets[id].config.clone()
    }

    pub async fn storage(&self, id: &str) -> Result<Arc<dyn Storage>> {
        let mut map = self.storage.lock().await;
        if let Some(s) = map.get(id) {
            return Ok(s.clone());
        }
        let s = storage::open(&self.storage_config(id)).await?;
        map.insert(id.to_string(), s.clone());
        Ok(s)
    }

    /// Whether two bucket ids name the same physical bucket (same kind, endpoint and name).
    pub fn same_bucket(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        match (&self.plan.buckets[a].config, &self.plan.buckets[b].config) {
            (StorageConfig::S3(x), StorageConfig::S3(y)) => {
                x.endpoint == y.endpoint && x.bucket == y.bucket
            }
            (StorageConfig::Local(x), StorageConfig::Local(y)) => x.path == y.path,
            _ => false,
        }
    }
}

/// What one running step needs: its checkpointed tasks, the event stream, connections, and the
/// cancellation token that Ctrl-C trips.
#[derive(Clone)]
pub struct StepCtx {
    pub run: String,
    pub step: String,
    pub tasks: Tasks,
    pub events: Events,
    pub res: Arc<Resources>,
    pub cancel: CancellationToken,
    /// Where this step publishes each collection it finishes, for the steps after it.
    pub feed: Arc<Feed>,
    /// The steps this one needs that were still running when it started, with their feeds.
    pub upstream: Vec<(String, Arc<Feed>)>,
}

/// Where a step records how each of its collections ended, and the source of each target.
pub const UNIT: &str = "@unit";
pub const SOURCE: &str = "@source";

/// The record of a step that finished in a run (its summary): a resumed run skips the step.
pub fn done_key(step: &str) -> String {
    format!("{step}/@done")
}

impl StepCtx {
    /// Publishes a finished collection, a backup of it alone at `at`, to the steps after this one.
    pub fn publish(&self, at: &Location, backup: BackupInfo) {
        self.publish_unit(Unit {
            at: at.clone(),
            backup,
            rows: None,
            partial: false,
        });
    }

    pub fn publish_unit(&self, unit: Unit) {
        self.feed.push(unit);
    }

    /// Runs `work` on each collection the running steps this one needs publish at `at`, as they
    /// come and `settings.collections` at a time, until those steps end. `Err` when one of them
    /// did not finish (what `work` did is recorded and stays done), or when the run is
    /// interrupted. Nothing to wait for when every step it needs had ended before it started.
    pub async fn pipelined<F, Fut>(&self, at: &Location, work: F) -> Result<()>
    where
        F: Fn(Unit) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        use futures::StreamExt;
        let streams = self.upstream.iter().map(|(_, feed)| {
            futures::stream::unfold((feed.clone(), 0usize), |(feed, seen)| {
                let cancel = self.cancel.clone();
                async move {
                    let units = feed.next(seen, &cancel).await?;
                    let seen = seen + units.len();
                    Some((futures::stream::iter(units), (feed, seen)))
                }
            })
            .flatten()
            .boxed()
        });
        let n = self.res.plan.settings.collections.max(1);
        let results: Vec<Result<()>> = futures::stream::select_all(streams)
            .filter(|u| futures::future::ready(u.at == *at))
            .map(&work)
            .buffer_unordered(n)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.check_cancel()?;
        match self
            .upstream
            .iter()
            .find(|(_, f)| f.ended() == Some(Ended::Failed))
        {
            Some((id, _)) => Err(StepError::Upstream(format!(
                "it needs `{id}`, which did not finish (what it did with the collections `{id}` \
                 had finished is recorded)"
            ))),
            None => Ok(()),
        }
    }

    /// Whether a step this one needs finished only some of its collections.
    pub fn upstream_partial(&self) -> bool {
        self.upstream
            .iter()
            .any(|(_, f)| f.ended() == Some(Ended::Partial))
    }

    pub fn concurrency(&self) -> usize {
        self.res.plan.settings.concurrency.max(1)
    }

    /// Runs `work` for every collection of the step, `settings.collections` at a time. Each
    /// collection is its own unit: a failure is reported for it (a `unit` event) and the others
    /// go on. Only an interruption or a broken state dir stops them all. Returns the results of
    /// the units that finished, in the order given, and the failures.
    pub async fn each<T, R, F, Fut>(
        &self,
        units: Vec<T>,
        name: impl Fn(&T) -> String,
        work: F,
    ) -> Result<Units<R>>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        use futures::StreamExt;
        let n = self.res.plan.settings.collections.max(1);
        let work = &work;
        let mut results: Vec<(usize, String, Result<R>)> =
            futures::stream::iter(units.into_iter().enumerate())
                .map(|(i, u)| {
                    let unit = name(&u);
                    async move {
                        let mut r = work(u).await;
                        // Reported as each unit ends, so progress shows collections finishing.
                        let ended = match &r {
                            Ok(_) => self.unit_ended(&unit, None),
                            Err(StepError::Interrupted | StepError::Checkpoint(_)) => Ok(()),
                            Err(e) => self.unit_ended(&unit, Some(&e.to_string())),
                        };
                        if let Err(e) = ended {
                            r = Err(e);
                        }
                        (i, unit, r)
                    }
                })
                .buffer_unordered(n)
                .collect()
                .await;
        results.sort_by_key(|(i, _, _)| *i);
        let mut out = Units {
            done: Vec::new(),
            failed: Vec::new(),
        };
        for (_, unit, r) in results {
            match r {
                Ok(v) => out.done.push(v),
                Err(e @ (StepError::Interrupted | StepError::Checkpoint(_))) => return Err(e),
                Err(e) => out.failed.push((unit, e.to_string())),
            }
        }
        Ok(out)
    }

    pub(super) fn key(&self, task: &str) -> String {
        format!("{}/{task}", self.step)
    }

    /// Reports how one collection of the step ended, and records it (`@unit/<unit>`, with the
    /// error if it failed) for `planrun status`. The next flushed record makes it durable.
    pub fn unit_ended(&self, unit: &str, error: Option<&str>) -> Result<()> {
        self.events.unit(&self.step, unit, error);
        let outcome = TaskState::Done(to_json(&error));
        Ok(self
            .tasks
            .set_lazy(&self.key(&format!("{UNIT}/{unit}")), &outcome)?)
    }

    /// Records which source collection a unit named after its target comes from, so that
    /// `planrun status` shows both on one line.
    pub fn unit_source(&self, unit: &str, source: &str) -> Result<()> {
        let from = TaskState::Done(to_json(&source));
        Ok(self
            .tasks
            .set_lazy(&self.key(&format!("{SOURCE}/{unit}")), &from)?)
    }

    /// Stops before starting new work once the run is interrupted.
    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(StepError::Interrupted)
        } else {
            Ok(())
        }
    }

    pub fn done<T: DeserializeOwned>(&self, task: &str) -> Result<Option<T>> {
        Ok(self.tasks.done(&self.key(task))?)
    }

    pub fn state(&self, task: &str) -> Result<Option<TaskState>> {
        Ok(self.tasks.get(&self.key(task))?)
    }

    pub async fn set(&self, task: &str, state: TaskState) -> Result<()> {
        Ok(self.tasks.set(&self.key(task), &state).await?)
    }

    /// Forgets every task under `prefix/`, so the next run does that work again from the start.
    pub async fn forget(&self, prefix: &str) -> Result<()> {
        self.tasks.remove_prefix(&self.key(&format!("{prefix}/")))?;
        Ok(self.tasks.sync().await?)
    }

    /// Runs an idempotent task once: a finished task returns its recorded result; otherwise `f`
    /// runs (retried on transient errors) and its result is flushed before this returns.
    pub async fn once<T, F, Fut>(&self, task: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(v) = self.done(task)? {
            return Ok(v);
        }
        self.check_cancel()?;
        let v = self.retry(task, f).await?;
        self.set(task, TaskState::Done(to_json(&v))).await?;
        Ok(v)
    }

    /// Like `once`, for the many small tasks (one per object) whose loss in a crash only means
    /// repeating an idempotent copy: recorded without waiting for the disk; `sync` at the end.
    pub async fn once_lazy<T, F, Fut>(&self, task: &str, f: F) -> Result<(T, bool)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(v) = self.done(task)? {
            return Ok((v, true));
        }
        self.check_cancel()?;
        let v = self.retry(task, f).await?;
        crate::fault::point("object-copied");
        self.tasks
            .set_lazy(&self.key(task), &TaskState::Done(to_json(&v)))?;
        Ok((v, false))
    }

    /// Retries transient failures with exponential backoff, up to `settings.retries` times.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let retries = self.res.plan.settings.retries;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_transient() && attempt < retries => {
                    attempt += 1;
                    self.events.warn(
                        &self.step,
                        format!("{what}: {e}; retry {attempt} of {retries} in {delay:?}"),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return Err(StepError::Interrupted),
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }
}

/// What a step's units of work came to.
pub struct Units<R> {
    pub done: Vec<R>,
    /// (collection, why) of every unit that failed.
    pub failed: Vec<(String, String)>,
}

impl<R> Units<R> {
    /// `Ok(summary)` when every unit finished; otherwise the step is partial: what finished is
    /// kept (and recorded), the next apply retries only the failed units.
    pub fn finish(self, summary: String) -> Result<String> {
        if self.failed.is_empty() {
            Ok(summary)
        } else {
            Err(StepError::Partial {
                summary,
                failed: self.failed,
            })
        }
    }
}

/// A task's result as it is recorded.
pub fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("task results serialise")
}
