//! `MilvusClient` and what every call shares: headers, retries, status checks, polling.

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
use crate::net;

pub use collection::{CollectionInfo, PartitionInfo};
pub use import::ImportTask;
pub use index::IndexInfo;
pub use rows::{InsertResult, QueryPage};
pub use segment::{FlushResult, SegmentInfo};

/// The version recorded for a server that answers UNIMPLEMENTED for GetVersion: only Milvus Lite
/// 2.x (the C++ core of Milvus 2.x run as `milvus_lite/lib/milvus`) lacks it. A space, not the
/// `-` of a reported "milvus_lite-3.2.2": checks of Lite 3 by its version must not match it.
const LITE2_VERSION: &str = "milvus_lite 2.x (no GetVersion)";

/// Milvus's own name for the database a request without one addresses.
const DEFAULT_DATABASE: &str = "default";

/// The partition every collection has, and the only one on a server without partitions.
const DEFAULT_PARTITION: &str = "_default";

fn is_default(db: &str) -> bool {
    db.is_empty() || db == DEFAULT_DATABASE
}

/// Query pages are capped by Milvus: `offset + limit` must lie in [1, 16384].
pub const MAX_QUERY_LIMIT: usize = 16384;

/// The longest pause between two polls of a server-side job (flush, import, index build, load):
/// the state calls are cheap, and every pause is time added to the migration after the job ends.
pub const POLL_MAX: Duration = Duration::from_millis(500);
/// The first such pause for flush, load and index waits: short for the same reason, since a
/// small job is often done by the second poll.
const POLL_FIRST: Duration = Duration::from_millis(200);
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

/// `Unreachable` for a connection that could not be made: the socket's cause and what to check
/// for it. `timeout` is the connect timeout, named when it is what ran out.
fn unreachable(
    instance: &str,
    uri: &str,
    timeout: Duration,
    err: &(dyn std::error::Error + 'static),
) -> MilvusError {
    let timed_out = net::chain(err).any(|e| e.is::<tonic::TimeoutExpired>())
        || net::io_error(err).is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    let text = net::chain(err)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    let check_uri =
        format!("check that Milvus is running there and that `instances.{instance}.uri` is right");
    let (reason, hint) = if timed_out {
        (format!("no connection within {timeout:?}"), check_uri)
    } else if text.contains("InvalidContentType") {
        // rustls met a plain answer where the server's TLS handshake was due.
        (
            "the server answered without TLS".to_string(),
            format!("use `http://` in `instances.{instance}.uri`, or enable TLS on the server"),
        )
    } else if text.contains("invalid peer certificate") {
        (
            net::cause(err),
            format!(
                "set `instances.{instance}.ca_cert` to the CA that signed the server's \
                 certificate, and `instances.{instance}.server_name` if the certificate names \
                 another host"
            ),
        )
    } else {
        (net::cause(err), check_uri)
    };
    MilvusError::Unreachable {
        instance: instance.to_string(),
        uri: uri.to_string(),
        reason,
        hint,
    }
}

/// What one look at a server-side job (flush, import, index build, load) saw.
enum Polled<T> {
    /// Finished; carries what the wait returns.
    Done(T),
    /// Not yet; says what was seen, for the timeout message.
    Pending(String),
}

impl MilvusClient {
    /// The plan's id for this instance.
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

    /// The databases calls can address: the server's list, or the default alone on a server
    /// without databases.
    pub async fn databases(&self) -> Result<Vec<String>, MilvusError> {
        if self.info.databases {
            self.list_databases().await
        } else {
            Ok(vec![DEFAULT_DATABASE.to_string()])
        }
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

    fn map_grpc(&self, s: tonic::Status, site: CallSite<'_>) -> MilvusError {
        // A status with a source was made by tonic from a failure on this side of the wire: the
        // server never answered, so the code (Unknown, Cancelled, Unavailable) says nothing and
        // the source chain says what happened.
        if let Some(src) = std::error::Error::source(&s) {
            return self.transport_failure(src, site);
        }
        let instance = self.info.name.clone();
        match s.code() {
            tonic::Code::Unimplemented => MilvusError::Unimplemented {
                instance,
                rpc: site.rpc,
            },
            tonic::Code::Unauthenticated => {
                let msg = s.message().to_ascii_lowercase();
                let (who, hint) = if msg.contains("missing authorization") {
                    (
                        "a request without credentials".to_string(),
                        format!(
                            "set `instances.{instance}.user` and `instances.{instance}.password` \
                             (or `token`)"
                        ),
                    )
                } else if self.info.uses_token {
                    (
                        "the token".to_string(),
                        format!("check `instances.{instance}.token`"),
                    )
                } else {
                    (
                        format!(
                            "the credentials of user `{}`",
                            self.info.user.as_deref().unwrap_or_default()
                        ),
                        format!("check `instances.{instance}.password`"),
                    )
                };
                MilvusError::Unauthenticated {
                    instance,
                    who,
                    hint,
                }
            }
            tonic::Code::DeadlineExceeded => MilvusError::Timeout {
                instance,
                rpc: site.rpc,
                collection: site.collection.map(str::to_string),
                timeout: self.info.timeout,
            },
            code => MilvusError::Rpc {
                instance,
                rpc: site.rpc,
                collection: site.collection.map(str::to_string),
                code,
                message: s.message().to_string(),
            },
        }
    }

    /// A call that failed below gRPC. Whether the server may have acted on it decides the error:
    /// a connection that was never made (`Unreachable`) is safe to repeat, one that broke under
    /// the call (`ConnectionLost`) may have carried it.
    fn transport_failure(
        &self,
        err: &(dyn std::error::Error + 'static),
        site: CallSite<'_>,
    ) -> MilvusError {
        let info = &self.info;
        if net::chain(err).any(|e| e.is::<tonic::TimeoutExpired>()) {
            MilvusError::Timeout {
                instance: info.name.clone(),
                rpc: site.rpc,
                collection: site.collection.map(str::to_string),
                timeout: info.timeout,
            }
        } else if net::chain(err).any(|e| e.is::<tonic::ConnectError>()) {
            // Reconnecting after the connection was lost failed: the call was never sent.
            unreachable(&info.name, &info.uri, info.timeout, err)
        } else {
            MilvusError::ConnectionLost {
                instance: info.name.clone(),
                uri: info.uri.clone(),
                rpc: site.rpc,
                collection: site.collection.map(str::to_string),
                reason: net::cause(err),
            }
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
        loop {
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
                        Ok(()) => return Ok(resp),
                        Err(e) => e,
                    }
                }
            };
            let not_applied = matches!(
                err,
                MilvusError::Unreachable { .. } | MilvusError::Status { .. }
            );
            let may_repeat = (repeat == Repeat::Always || not_applied) && !left_in_flight;
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

    fn unexpected(
        &self,
        rpc: &'static str,
        collection: Option<&str>,
        reason: impl Into<String>,
    ) -> MilvusError {
        MilvusError::Unexpected {
            instance: self.info.name.clone(),
            rpc,
            collection: collection.map(str::to_string),
            reason: reason.into(),
        }
    }

    /// Calls `check` until it reports `Done`, pausing `first_pause` at first, then twice as long
    /// each time up to [`POLL_MAX`]. A `Pending` report says what was seen, so the timeout
    /// error can name the last state rather than just "too slow".
    async fn poll_until<T, F, Fut>(
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

    #[test]
    fn refused_connection_names_the_uri_setting() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = unreachable("a", "http://127.0.0.1:1", Duration::from_secs(30), &io);
        assert_eq!(
            e.to_string(),
            "cannot connect to instance `a` at http://127.0.0.1:1: connection refused; check \
             that Milvus is running there and that `instances.a.uri` is right"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn a_connect_timeout_says_how_long() {
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let e = unreachable("a", "http://10.0.0.1:19530", Duration::from_secs(3), &io);
        assert!(
            e.to_string().starts_with(
                "cannot connect to instance `a` at http://10.0.0.1:19530: no connection within 3s;"
            ),
            "{e}"
        );
    }
}
