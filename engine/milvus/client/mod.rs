//! `MilvusClient` and what every call shares: connection state, headers, retries, status checks.

// One file per RPC family, each with its own `impl MilvusClient`.
mod alias;
mod collection;
mod connect;
mod database;
mod import;
mod index;
mod load;
mod rows;
mod segment;
// What the families share beside `call`: how a failure becomes an error, how a job is waited on.
mod failure;
mod poll;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::error::{CallSite, MilvusError, check_status};
use super::pb::common::{KeyValuePair, Status};
use super::pb::milvus as m;
use super::pb::milvus::milvus_service_client::MilvusServiceClient;
use crate::throttle::Throttle;

pub use collection::{CollectionInfo, PartitionInfo};
pub use import::ImportTask;
pub use index::IndexInfo;
pub use poll::POLL_MAX;
pub use rows::{Fresh, InsertResult, MAX_QUERY_LIMIT, QueryPage};
pub use segment::{FlushResult, SegmentInfo};

/// Milvus's own name for the database a request without one addresses.
const DEFAULT_DATABASE: &str = "default";

fn is_default(db: &str) -> bool {
    db.is_empty() || db == DEFAULT_DATABASE
}

/// Large enough for a full query page of wide vectors and for big insert batches.
const MAX_MESSAGE: usize = 512 * 1024 * 1024;
/// How long a status poll that must not be cancelled (`Wait::Patient`) may go unanswered before
/// planrun stops waiting for it. Also how long HTTP/2 keepalive waits for a ping's answer: a
/// connection closed mid-stall would cancel such a poll just the same.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(600);

type Svc = MilvusServiceClient<InterceptedService<Channel, Headers>>;

/// The metadata every call carries. Not `Debug`: the authorization value is a secret.
#[derive(Clone)]
struct Headers {
    authorization: Option<MetadataValue<Ascii>>,
    dbname: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        if let Some(d) = &self.dbname {
            req.metadata_mut().insert("dbname", d.clone());
        }
        Ok(req)
    }
}

/// How long one call keeps asking a server that answers it with rate limits before it fails.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(600);
/// How often a server that cannot be reached is tried again while it is waited for.
const OUTAGE_POLL: Duration = Duration::from_secs(2);

/// Facts about the connection that every clone shares.
#[derive(Clone)]
struct Info {
    name: String,
    uri: String,
    user: Option<String>,
    uses_token: bool,
    version: String,
    lite: bool,
    /// Whether the server has database RPCs (Milvus Lite 2.x has none).
    databases: bool,
    /// Whether the server has partition RPCs (Milvus Lite 2.x has none: every row is in
    /// `_default`).
    partitions: bool,
    /// Whether the server has alias RPCs (Milvus Lite 2.x has none).
    aliases: bool,
    /// Known, from what the server is, to refuse nullable fields (Milvus Lite 2.x).
    refuses_nullable: bool,
    timeout: Duration,
    retries: u32,
    throttle: Arc<Throttle>,
    /// Connected once: from then on a server that cannot be reached is waited for `outage`.
    established: bool,
    outage: Duration,
}

/// A connection to one Milvus instance. Cheap to clone; clones share the HTTP/2 channel.
#[derive(Clone)]
pub struct MilvusClient {
    channel: Channel,
    headers: Headers,
    info: Arc<Info>,
    /// The database every call addresses; empty means the server's `default`.
    db: String,
}

impl std::fmt::Debug for MilvusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilvusClient")
            .field("name", &self.info.name)
            .field("uri", &self.info.uri)
            .field("user", &self.info.user)
            .field("database", &self.db)
            .field("version", &self.info.version)
            .finish_non_exhaustive()
    }
}

/// Responses that carry a `Status`, so one retry loop can check them all.
trait HasStatus {
    fn status(&self) -> Option<&Status>;
}

impl HasStatus for Status {
    fn status(&self) -> Option<&Status> {
        Some(self)
    }
}

macro_rules! has_status {
    ($($t:ty),* $(,)?) => {
        $(impl HasStatus for $t {
            fn status(&self) -> Option<&Status> {
                self.status.as_ref()
            }
        })*
    };
}

has_status!(
    m::ConnectResponse,
    m::GetVersionResponse,
    m::CheckHealthResponse,
    m::ListDatabasesResponse,
    m::ShowCollectionsResponse,
    m::BoolResponse,
    m::DescribeCollectionResponse,
    m::ShowPartitionsResponse,
    m::FlushResponse,
    m::GetFlushStateResponse,
    m::GetPersistentSegmentInfoResponse,
    m::QueryResults,
    m::MutationResult,
    m::DescribeIndexResponse,
    m::GetLoadingProgressResponse,
    m::GetLoadStateResponse,
    m::ImportResponse,
    m::GetImportStateResponse,
    m::ListImportTasksResponse,
    m::DescribeAliasResponse,
    m::ListAliasesResponse,
);

/// Whether a call may be repeated after any transient error. A call that changes state is only
/// repeated when the error proves the server did not act on it (unreachable, or an explicit
/// rate-limit/not-ready status); a timeout might hide a success, and repeating an insert or an
/// import then duplicates rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Always,
    IfNotApplied,
}

/// How one attempt of a call waits for its answer.
#[derive(Clone, Copy)]
enum Wait<'a> {
    /// The instance's per-call timeout, as gRPC deadline and local timer: a call that does not
    /// answer in time is cancelled (its HTTP/2 stream reset) and may be repeated.
    Deadline,
    /// For status polls Milvus must never see cancelled: 2.3.5's proxy dies on a cancelled
    /// GetImportState (docs/architecture.md, "Status polls are never cancelled"). No deadline;
    /// the call runs on a task of its own, so nothing planrun drops can reset its stream. Each
    /// further per-call timeout without an answer is reported (the message goes to this
    /// function) while the call goes on; after [`STALL_LIMIT`] planrun stops waiting, leaves the
    /// call in flight and fails the attempt with a `Timeout` that is not repeated here, since a
    /// repeat would put a second call in flight.
    Patient(&'a (dyn Fn(String) + Sync)),
}

fn kv(pairs: &[(String, String)]) -> Vec<KeyValuePair> {
    pairs
        .iter()
        .map(|(k, v)| KeyValuePair {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn pairs(kvs: Vec<KeyValuePair>) -> Vec<(String, String)> {
    kvs.into_iter().map(|p| (p.key, p.value)).collect()
}

/// 200 ms, 400 ms, 800 ms, ... capped at 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

impl MilvusClient {
    /// The plan's id for this instance.
    /// Outages of this instance seen so far (see `Throttle::outages`).
    pub fn outages(&self) -> u64 {
        self.info.throttle.outages()
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn uri(&self) -> &str {
        &self.info.uri
    }

    /// As reported by GetVersion: "v2.3.5" style for Milvus, "milvus_lite-3.2.2" for Lite, and
    /// "milvus_lite 2.x (no GetVersion)" for a Milvus Lite 2.x, which has no GetVersion.
    pub fn server_version(&self) -> &str {
        &self.info.version
    }

    /// Milvus Lite: no segments, no bulk import, no real load states.
    pub fn is_lite(&self) -> bool {
        self.info.lite
    }

    /// Whether the server has databases (it answers ListDatabases). One without them (Milvus
    /// Lite 2.x) ignores the database a request names and acts on its only one, the default.
    pub fn has_databases(&self) -> bool {
        self.info.databases
    }

    /// Whether the server has partitions (it answers ShowPartitions). One without them (Milvus
    /// Lite 2.x) keeps every row in `_default`, which `show_partitions` and `has_partition`
    /// then report.
    pub fn has_partitions(&self) -> bool {
        self.info.partitions
    }

    /// Whether the server has aliases (it answers ListAliases; Milvus Lite 2.x does not).
    pub fn has_aliases(&self) -> bool {
        self.info.aliases
    }

    /// Whether the server is known to refuse nullable fields: Milvus Lite 2.x, which reports no
    /// version. Servers that report one lack them by version (before 2.5), which restore's
    /// `lacks` checks.
    pub fn refuses_nullable(&self) -> bool {
        self.info.refuses_nullable
    }

    /// The refusal of database `db` on a server without databases; `None` where it can be used
    /// (the default database always can). Preview refusals and the guard on every call share it.
    pub fn lacks_database(&self, db: &str) -> Option<MilvusError> {
        (!self.info.databases && !is_default(db)).then(|| MilvusError::NoDatabases {
            instance: self.info.name.clone(),
            version: self.info.version.clone(),
            database: db.to_string(),
        })
    }

    /// The database calls address; "" is the server's default.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// A client for another database on the same connection (sends the `dbname` header and
    /// fills each request's `db_name`).
    pub fn with_database(&self, db: &str) -> Self {
        let mut c = self.clone();
        c.db = db.to_string();
        let value = if db.is_empty() {
            None
        } else {
            // A name that cannot travel as a header cannot be a Milvus database name either;
            // the request's own `db_name` still carries it and the server rejects it by name.
            MetadataValue::try_from(db).ok()
        };
        c.headers.dbname = value;
        c
    }

    fn svc(&self) -> Svc {
        MilvusServiceClient::with_interceptor(self.channel.clone(), self.headers.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn site<'a>(&'a self, rpc: &'static str, collection: Option<&'a str>) -> CallSite<'a> {
        CallSite {
            instance: &self.info.name,
            database: &self.db,
            rpc,
            collection,
        }
    }

    /// One RPC with a per-call timeout, the status check, and retries with backoff on
    /// transient errors (see `Repeat`).
    async fn call<Req, Resp, F, Fut>(
        &self,
        rpc: &'static str,
        collection: Option<&str>,
        repeat: Repeat,
        req: Req,
        f: F,
    ) -> Result<Resp, MilvusError>
    where
        Req: Clone,
        Resp: HasStatus + Send + 'static,
        F: Fn(Svc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
    {
        self.call_waiting(Wait::Deadline, rpc, collection, repeat, req, f)
            .await
    }

    /// `call`, with each attempt waiting for its answer as `wait` says.
    async fn call_waiting<Req, Resp, F, Fut>(
        &self,
        wait: Wait<'_>,
        rpc: &'static str,
        collection: Option<&str>,
        repeat: Repeat,
        req: Req,
        f: F,
    ) -> Result<Resp, MilvusError>
    where
        Req: Clone,
        Resp: HasStatus + Send + 'static,
        F: Fn(Svc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>> + Send + 'static,
    {
        // A server without databases would silently act on its default database instead of the
        // one this client addresses: such a call is never sent.
        if let Some(e) = self.lacks_database(&self.db) {
            return Err(e);
        }
        let site = self.site(rpc, collection);
        let timeout = self.info.timeout;
        let mut attempt = 0;
        let mut pushed_back: Option<Instant> = None;
        let mut unreachable: Option<Instant> = None;
        loop {
            self.info.throttle.acquire(1.0).await;
            let mut r = tonic::Request::new(req.clone());
            let (res, limit) = match wait {
                Wait::Deadline => {
                    r.set_timeout(timeout);
                    // The local timer is a little longer than the gRPC deadline so the server's
                    // own DEADLINE_EXCEEDED wins when it answers in time.
                    let late = timeout + Duration::from_millis(500);
                    let res = tokio::time::timeout(late, f(self.svc(), r)).await.ok();
                    (res, timeout)
                }
                Wait::Patient(stalled) => {
                    let res = self.patiently(rpc, f(self.svc(), r), stalled).await;
                    (res, STALL_LIMIT)
                }
            };
            let left_in_flight = res.is_none() && matches!(wait, Wait::Patient(_));
            let err = match res {
                None => MilvusError::Timeout {
                    instance: self.info.name.clone(),
                    rpc,
                    collection: collection.map(str::to_string),
                    timeout: limit,
                },
                Some(Err(s)) => self.map_grpc(s, site),
                Some(Ok(resp)) => {
                    let resp = resp.into_inner();
                    match check_status(resp.status(), site) {
                        Ok(()) => {
                            self.info.throttle.succeeded();
                            return Ok(resp);
                        }
                        Err(e) => e,
                    }
                }
            };
            let not_applied = matches!(
                err,
                MilvusError::Unreachable { .. } | MilvusError::Status { .. }
            );
            let may_repeat = (repeat == Repeat::Always || not_applied) && !left_in_flight;
            // A rate limit is the server asking for less, not a failure: slow down and ask
            // again, for as long as it keeps pushing back within RATE_LIMIT_PATIENCE.
            if let Some(why) = err.pushed_back()
                && may_repeat
                && pushed_back.get_or_insert_with(Instant::now).elapsed() < RATE_LIMIT_PATIENCE
            {
                tokio::time::sleep(self.info.throttle.slow_down(why)).await;
                continue;
            }
            // A server that went away under an open connection (a restart) is waited for:
            // nothing was applied, and it usually comes back within a minute or two.
            if let MilvusError::Unreachable { reason, .. } = &err
                && self.info.established
                && may_repeat
            {
                let since = *unreachable.get_or_insert_with(Instant::now);
                if let Some(left) = self.info.outage.checked_sub(since.elapsed())
                    && !left.is_zero()
                {
                    self.info.throttle.say_outage(|| {
                        format!(
                            "`{}` cannot be reached ({reason}) since {}; planrun waits up to {} s \
                             for it to come back",
                            self.info.name,
                            crate::checkpoint::format_time(crate::checkpoint::now()),
                            self.info.outage.as_secs()
                        )
                    });
                    tokio::time::sleep(OUTAGE_POLL.min(left)).await;
                    continue;
                }
            }
            if !(err.is_transient() && may_repeat && attempt < self.info.retries) {
                return Err(err);
            }
            tracing::debug!(instance = %self.info.name, rpc, attempt, error = %err, "retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Waits for `call` without ever cancelling it (see `Wait::Patient`): `None` when it has
    /// not answered within [`STALL_LIMIT`]; it then runs on, unwatched, until the server answers
    /// or the process ends. Silence is reported once per per-call timeout, the time after which
    /// any other call would have been cancelled.
    async fn patiently<T: Send + 'static>(
        &self,
        rpc: &str,
        call: impl Future<Output = T> + Send + 'static,
        stalled: &(dyn Fn(String) + Sync),
    ) -> Option<T> {
        let started = Instant::now();
        // A task of its own: dropping our wait (a give-up, Ctrl-C, a failed unit) detaches the
        // call instead of dropping it, which would reset its stream.
        let mut call = tokio::spawn(call);
        loop {
            let left = STALL_LIMIT.saturating_sub(started.elapsed());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(self.info.timeout.min(left), &mut call).await {
                Ok(done) => return Some(done.expect("a gRPC call neither panics nor is aborted")),
                // During an outage, already said, the call waits for the server to come back.
                Err(_) if self.info.throttle.in_outage() => {}
                Err(_) if started.elapsed() < STALL_LIMIT => stalled(format!(
                    "no answer from `{}` to {rpc} for {} s; still waiting, without cancelling \
                     it (the link or the server may be stalled)",
                    self.info.name,
                    started.elapsed().as_secs()
                )),
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(3), Duration::from_millis(1600));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
