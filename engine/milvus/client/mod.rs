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

pub use collection::{CollectionInfo, PartitionInfo};
pub use import::ImportTask;
pub use index::IndexInfo;
pub use rows::{InsertResult, QueryPage};
pub use segment::{FlushResult, SegmentInfo};

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

/// A readable cause from a transport error chain: "connection refused" rather than hyper's
/// nested "transport error: error trying to connect: tcp connect error: ...".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused => "connection refused".into(),
                ConnectionReset => "connection reset".into(),
                TimedOut => "connection timed out".into(),
                HostUnreachable => "host unreachable".into(),
                NetworkUnreachable => "network unreachable".into(),
                _ => io.to_string(),
            };
        }
        last = e.to_string();
        cur = e.source();
    }
    last
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

    /// As reported by GetVersion: "v2.3.5" style for Milvus, "milvus_lite-3.2.2" for Lite.
    pub fn server_version(&self) -> &str {
        &self.info.version
    }

    /// Milvus Lite: no segments, no bulk import, no real load states.
    pub fn is_lite(&self) -> bool {
        self.info.lite
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
            tonic::Code::Unavailable if std::error::Error::source(&s).is_some() => {
                MilvusError::Unreachable {
                    instance,
                    uri: self.info.uri.clone(),
                    reason: root_cause(&s),
                }
            }
            code => MilvusError::Rpc {
                instance,
                rpc: site.rpc,
                collection: site.collection.map(str::to_string),
                code,
                message: s.message().to_string(),
            },
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
        Resp: HasStatus,
        F: Fn(Svc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let site = self.site(rpc, collection);
        let timeout = self.info.timeout;
        let mut attempt = 0;
        loop {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(timeout);
            // The local timer is a little longer than the gRPC deadline so the server's own
            // DEADLINE_EXCEEDED wins when it answers in time.
            let res =
                tokio::time::timeout(timeout + Duration::from_millis(500), f(self.svc(), r)).await;
            let err = match res {
                Err(_) => MilvusError::Timeout {
                    instance: self.info.name.clone(),
                    rpc,
                    collection: collection.map(str::to_string),
                    timeout,
                },
                Ok(Err(s)) => self.map_grpc(s, site),
                Ok(Ok(resp)) => {
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
            let may_repeat = repeat == Repeat::Always || not_applied;
            if !(err.is_transient() && may_repeat && attempt < self.info.retries) {
                return Err(err);
            }
            tracing::debug!(instance = %self.info.name, rpc, attempt, error = %err, "retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
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
    fn refused_connection_reads_plainly() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(root_cause(&io), "connection refused");
    }
}
