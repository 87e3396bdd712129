//! `MilvusClient`: the calls backup and restore make, with auth, timeouts, retries and status checks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::MilvusConfig;
use super::data::{self, Pk};
use super::error::{
    CODE_ALIAS_NOT_FOUND, CODE_COLLECTION_NOT_FOUND, CODE_INDEX_NOT_FOUND, CallSite, MilvusError,
    check_status,
};
use super::pb::common::{
    ClientInfo, ConsistencyLevel, ErrorCode, ImportState, IndexState, KeyValuePair, LoadState,
    SegmentState, Status,
};
use super::pb::milvus as m;
use super::pb::milvus::milvus_service_client::MilvusServiceClient;
use super::pb::schema::{CollectionSchema, FieldData, FieldSchema};

/// Query pages are capped by Milvus: `offset + limit` must lie in [1, 16384].
pub const MAX_QUERY_LIMIT: usize = 16384;

/// The longest pause between two polls of a server-side job (flush, import, index build, load):
/// the state calls are cheap, and every pause is time added to the migration after the job ends.
pub const POLL_MAX: Duration = Duration::from_millis(500);
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

/// What `describe_collection` reports: everything needed to recreate the collection.
#[derive(Clone, Debug)]
pub struct CollectionInfo {
    pub name: String,
    pub collection_id: i64,
    pub schema: CollectionSchema,
    pub shards_num: i32,
    pub consistency_level: ConsistencyLevel,
    pub properties: Vec<(String, String)>,
    pub aliases: Vec<String>,
    pub num_partitions: i64,
    pub virtual_channels: Vec<String>,
    pub created_timestamp: u64,
}

impl CollectionInfo {
    pub fn primary_field(&self) -> Option<&FieldSchema> {
        self.schema.fields.iter().find(|f| f.is_primary_key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// 0 on Milvus Lite, which has no partition ids.
    pub id: i64,
}

/// What one `Flush` reported for one collection.
#[derive(Clone, Debug, Default)]
pub struct FlushResult {
    pub collection: String,
    /// Segments sealed by this flush; `GetFlushState` waits for these.
    pub segment_ids: Vec<i64>,
    /// Segments that were already flushed.
    pub flushed_segment_ids: Vec<i64>,
    pub flush_ts: u64,
}

/// One persisted segment of a collection.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub id: i64,
    pub collection_id: i64,
    pub partition_id: i64,
    pub num_rows: i64,
    pub state: SegmentState,
}

/// One page of a primary-key cursor walk.
#[derive(Clone, Debug, Default)]
pub struct QueryPage {
    /// One column per output field (plus the primary key).
    pub fields: Vec<FieldData>,
    pub num_rows: usize,
    /// The key of the last row; pass it as `after` for the next page. `None` when empty.
    pub last_pk: Option<Pk>,
}

#[derive(Clone, Debug)]
pub struct InsertResult {
    pub insert_count: i64,
    /// The mutation timestamp (0 on Milvus Lite).
    pub timestamp: u64,
}

#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index_name: String,
    pub field_name: String,
    /// `index_type`, `metric_type`, `params` (a JSON string) and whatever else the server echoes.
    pub params: Vec<(String, String)>,
    pub state: i32,
    pub indexed_rows: i64,
    pub total_rows: i64,
    pub pending_index_rows: i64,
    pub fail_reason: String,
}

/// The state of one bulk-import task.
#[derive(Clone, Debug)]
pub struct ImportTask {
    pub id: i64,
    pub state: ImportState,
    pub row_count: i64,
    /// The server's `failed_reason` info, empty unless the task failed.
    pub failed_reason: String,
    /// All infos the server reports (`files`, `collection`, `partition`, `progress_percent`, ...).
    pub infos: Vec<(String, String)>,
    pub collection_id: i64,
    pub segment_ids: Vec<i64>,
    pub create_ts: i64,
}

impl ImportTask {
    fn from_pb(r: m::GetImportStateResponse) -> Self {
        let infos = pairs(r.infos);
        let failed_reason = infos
            .iter()
            .find(|(k, _)| k == "failed_reason")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        ImportTask {
            id: r.id,
            state: ImportState::try_from(r.state).unwrap_or(ImportState::ImportPending),
            row_count: r.row_count,
            failed_reason,
            infos,
            collection_id: r.collection_id,
            segment_ids: r.segment_ids,
            create_ts: r.create_ts,
        }
    }

    pub fn info(&self, key: &str) -> Option<&str> {
        self.infos
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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

fn read_pem(instance: &str, path: &std::path::Path) -> Result<Vec<u8>, MilvusError> {
    std::fs::read(path).map_err(|source| MilvusError::TlsFile {
        instance: instance.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

fn header_value(
    instance: &str,
    uri: &str,
    what: &str,
    v: &str,
) -> Result<MetadataValue<Ascii>, MilvusError> {
    MetadataValue::try_from(v).map_err(|_| MilvusError::InvalidUri {
        instance: instance.to_string(),
        uri: uri.to_string(),
        // Never echo the value: it may be a credential.
        reason: format!("the {what} contains characters that cannot travel in a gRPC header"),
    })
}

impl MilvusClient {
    /// Opens the channel, then calls Connect and GetVersion, so a wrong address, wrong
    /// credentials or a missing database fail here with a message naming the instance.
    pub async fn connect(cfg: &MilvusConfig) -> Result<Self, MilvusError> {
        let name = cfg.name.as_str();
        let invalid = |reason: String| MilvusError::InvalidUri {
            instance: name.to_string(),
            uri: cfg.uri.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(cfg.uri.clone())
            .map_err(|e| invalid(root_cause(&e)))?
            .connect_timeout(cfg.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let scheme = endpoint.uri().scheme_str().unwrap_or_default().to_string();
        match scheme.as_str() {
            "http" => {
                if cfg.ca_cert.is_some() || cfg.client_cert.is_some() {
                    return Err(invalid(
                        "TLS files are set but the uri is http://; use https://".into(),
                    ));
                }
            }
            "https" => {
                let mut tls = ClientTlsConfig::new();
                tls = match &cfg.ca_cert {
                    Some(p) => tls.ca_certificate(Certificate::from_pem(read_pem(name, p)?)),
                    None => tls.with_native_roots(),
                };
                match (&cfg.client_cert, &cfg.client_key) {
                    (Some(c), Some(k)) => {
                        tls =
                            tls.identity(Identity::from_pem(read_pem(name, c)?, read_pem(name, k)?))
                    }
                    (None, None) => {}
                    _ => {
                        return Err(invalid(
                            "mutual TLS needs both `client_cert` and `client_key`".into(),
                        ));
                    }
                }
                if let Some(sn) = &cfg.server_name {
                    tls = tls.domain_name(sn.clone());
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| invalid(root_cause(&e)))?;
            }
            other => {
                return Err(invalid(format!(
                    "the scheme must be http:// or https://, not `{other}`"
                )));
            }
        }

        // Connecting eagerly turns "nothing listens there" into a clear error now, not at the
        // first call. A refused connection is retried like any transient error.
        let mut attempt = 0;
        let channel = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(e) => {
                    if attempt >= cfg.retries {
                        return Err(MilvusError::Unreachable {
                            instance: name.to_string(),
                            uri: cfg.uri.clone(),
                            reason: root_cause(&e),
                        });
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };

        let authorization = if let Some(token) = &cfg.token {
            let v = base64::engine::general_purpose::STANDARD.encode(token.expose());
            Some(header_value(name, &cfg.uri, "token", &v)?)
        } else if let Some(user) = &cfg.user {
            let pw = cfg
                .password
                .as_ref()
                .map(|p| p.expose())
                .unwrap_or_default();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            Some(header_value(name, &cfg.uri, "user name", &v)?)
        } else {
            None
        };
        let db = cfg.database.clone().unwrap_or_default();
        let headers = Headers {
            authorization,
            dbname: None,
        };
        let mut client = MilvusClient {
            channel,
            headers,
            info: Arc::new(Info {
                name: cfg.name.clone(),
                uri: cfg.uri.clone(),
                user: cfg.user.clone(),
                uses_token: cfg.token.is_some(),
                version: String::new(),
                lite: false,
                timeout: cfg.timeout,
                retries: cfg.retries,
            }),
            db: String::new(),
        };
        if !db.is_empty() {
            client = client.with_database(&db);
        }

        let connect = m::ConnectRequest {
            base: None,
            client_info: Some(ClientInfo {
                sdk_type: "Rust".into(),
                sdk_version: concat!("planrun-", env!("CARGO_PKG_VERSION")).into(),
                user: cfg.user.clone().unwrap_or_default(),
                ..Default::default()
            }),
        };
        let mut lite = false;
        match client
            .call(
                "Connect",
                None,
                Repeat::Always,
                connect,
                |mut c, r| async move { c.connect(r).await },
            )
            .await
        {
            Ok(r) => {
                if let Some(si) = r.server_info {
                    lite = si.build_tags.contains("milvus_lite") || si.deploy_mode == "embedded";
                }
            }
            // Servers before 2.3 lack Connect; GetVersion below still proves the connection.
            Err(MilvusError::Unimplemented { .. }) => {}
            Err(e) => return Err(e),
        }
        let version = client
            .call(
                "GetVersion",
                None,
                Repeat::Always,
                m::GetVersionRequest {},
                |mut c, r| async move { c.get_version(r).await },
            )
            .await?
            .version;
        lite = lite || version.starts_with("milvus_lite");
        let mut info = Info::clone(&client.info);
        info.version = version;
        info.lite = lite;
        client.info = Arc::new(info);
        Ok(client)
    }

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

    pub async fn check_health(&self) -> Result<(), MilvusError> {
        let r = self
            .call(
                "CheckHealth",
                None,
                Repeat::Always,
                m::CheckHealthRequest {},
                |mut c, r| async move { c.check_health(r).await },
            )
            .await?;
        if r.is_healthy {
            Ok(())
        } else {
            Err(self.unexpected(
                "CheckHealth",
                None,
                format!("the server is not healthy: {}", r.reasons.join("; ")),
            ))
        }
    }

    pub async fn list_databases(&self) -> Result<Vec<String>, MilvusError> {
        let r = self
            .call(
                "ListDatabases",
                None,
                Repeat::Always,
                m::ListDatabasesRequest { base: None },
                |mut c, r| async move { c.list_databases(r).await },
            )
            .await?;
        Ok(r.db_names)
    }

    pub async fn create_database(&self, db: &str) -> Result<(), MilvusError> {
        let req = m::CreateDatabaseRequest {
            base: None,
            db_name: db.to_string(),
        };
        self.call(
            "CreateDatabase",
            None,
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_database(r).await },
        )
        .await?;
        Ok(())
    }

    /// Drops an empty database; dropping one that does not exist succeeds.
    pub async fn drop_database(&self, db: &str) -> Result<(), MilvusError> {
        let req = m::DropDatabaseRequest {
            base: None,
            db_name: db.to_string(),
        };
        self.call(
            "DropDatabase",
            None,
            Repeat::Always,
            req,
            |mut c, r| async move { c.drop_database(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn show_collections(&self) -> Result<Vec<String>, MilvusError> {
        let req = m::ShowCollectionsRequest {
            db_name: self.db.clone(),
            ..Default::default()
        };
        let r = self
            .call(
                "ShowCollections",
                None,
                Repeat::Always,
                req,
                |mut c, r| async move { c.show_collections(r).await },
            )
            .await?;
        Ok(r.collection_names)
    }

    pub async fn has_collection(&self, collection: &str) -> Result<bool, MilvusError> {
        let req = m::HasCollectionRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "HasCollection",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.has_collection(r).await },
            )
            .await?;
        Ok(r.value)
    }

    pub async fn describe_collection(
        &self,
        collection: &str,
    ) -> Result<CollectionInfo, MilvusError> {
        let req = m::DescribeCollectionRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "DescribeCollection",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_collection(r).await },
            )
            .await?;
        let schema = r.schema.ok_or_else(|| {
            self.unexpected(
                "DescribeCollection",
                Some(collection),
                "no schema in the answer",
            )
        })?;
        Ok(CollectionInfo {
            name: if r.collection_name.is_empty() {
                collection.to_string()
            } else {
                r.collection_name
            },
            collection_id: r.collection_id,
            schema,
            shards_num: r.shards_num,
            consistency_level: ConsistencyLevel::try_from(r.consistency_level)
                .unwrap_or(ConsistencyLevel::Bounded),
            properties: pairs(r.properties),
            aliases: r.aliases,
            num_partitions: r.num_partitions,
            virtual_channels: r.virtual_channel_names,
            created_timestamp: r.created_timestamp,
        })
    }

    /// Creates a collection. `schema.name` is overwritten with `name`, so a schema read from
    /// one collection can create another.
    pub async fn create_collection(
        &self,
        name: &str,
        schema: &CollectionSchema,
        shards_num: i32,
        consistency_level: ConsistencyLevel,
        properties: &[(String, String)],
    ) -> Result<(), MilvusError> {
        self.create_collection_partitioned(
            name,
            schema,
            shards_num,
            consistency_level,
            properties,
            0,
        )
        .await
    }

    /// `create_collection` with the number of partitions a partition-key collection gets
    /// (0 = the server's default).
    pub async fn create_collection_partitioned(
        &self,
        name: &str,
        schema: &CollectionSchema,
        shards_num: i32,
        consistency_level: ConsistencyLevel,
        properties: &[(String, String)],
        num_partitions: i64,
    ) -> Result<(), MilvusError> {
        let mut schema = schema.clone();
        schema.name = name.to_string();
        let req = m::CreateCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: name.to_string(),
            schema: prost::Message::encode_to_vec(&schema),
            shards_num,
            consistency_level: consistency_level as i32,
            properties: kv(properties),
            num_partitions,
        };
        self.call(
            "CreateCollection",
            Some(name),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_collection(r).await },
        )
        .await?;
        Ok(())
    }

    /// Drops a collection; dropping one that does not exist succeeds.
    pub async fn drop_collection(&self, collection: &str) -> Result<(), MilvusError> {
        let req = m::DropCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        self.call(
            "DropCollection",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.drop_collection(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn show_partitions(
        &self,
        collection: &str,
    ) -> Result<Vec<PartitionInfo>, MilvusError> {
        let req = m::ShowPartitionsRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "ShowPartitions",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.show_partitions(r).await },
            )
            .await?;
        Ok(r.partition_names
            .into_iter()
            .enumerate()
            .map(|(i, name)| PartitionInfo {
                name,
                id: r.partition_i_ds.get(i).copied().unwrap_or_default(),
            })
            .collect())
    }

    pub async fn create_partition(
        &self,
        collection: &str,
        partition: &str,
    ) -> Result<(), MilvusError> {
        let req = m::CreatePartitionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.to_string(),
        };
        self.call(
            "CreatePartition",
            Some(collection),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_partition(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn has_partition(
        &self,
        collection: &str,
        partition: &str,
    ) -> Result<bool, MilvusError> {
        let req = m::HasPartitionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.to_string(),
        };
        let r = self
            .call(
                "HasPartition",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.has_partition(r).await },
            )
            .await?;
        Ok(r.value)
    }

    /// Seals the growing segments of `collections`. The data is durable only once
    /// `get_flush_state` says so; `flush_and_wait` does both.
    pub async fn flush(&self, collections: &[String]) -> Result<Vec<FlushResult>, MilvusError> {
        let req = m::FlushRequest {
            base: None,
            db_name: self.db.clone(),
            collection_names: collections.to_vec(),
        };
        let first = collections.first().map(String::as_str);
        let mut r = self
            .call("Flush", first, Repeat::Always, req, |mut c, r| async move {
                c.flush(r).await
            })
            .await?;
        Ok(collections
            .iter()
            .map(|name| FlushResult {
                collection: name.clone(),
                segment_ids: r
                    .coll_seg_i_ds
                    .remove(name)
                    .map(|a| a.data)
                    .unwrap_or_default(),
                flushed_segment_ids: r
                    .flush_coll_seg_i_ds
                    .remove(name)
                    .map(|a| a.data)
                    .unwrap_or_default(),
                flush_ts: r.coll_flush_ts.get(name).copied().unwrap_or_default(),
            })
            .collect())
    }

    pub async fn get_flush_state(
        &self,
        collection: &str,
        segment_ids: &[i64],
        flush_ts: u64,
    ) -> Result<bool, MilvusError> {
        let req = m::GetFlushStateRequest {
            segment_i_ds: segment_ids.to_vec(),
            flush_ts,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let r = self
            .call(
                "GetFlushState",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_flush_state(r).await },
            )
            .await?;
        Ok(r.flushed)
    }

    /// Flush, then poll GetFlushState with the returned segments and flush timestamp until
    /// everything written before the flush is persisted.
    pub async fn flush_and_wait(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<FlushResult, MilvusError> {
        let fr = self
            .flush(&[collection.to_string()])
            .await?
            .pop()
            .unwrap_or_default();
        self.poll_until("Flush", collection, timeout, || async {
            let flushed = self
                .get_flush_state(collection, &fr.segment_ids, fr.flush_ts)
                .await?;
            Ok((!flushed).then(|| format!("{} segments not yet flushed", fr.segment_ids.len())))
        })
        .await?;
        Ok(fr)
    }

    /// The collection's live persisted segments (sealed, flushing, flushed; not dropped).
    pub async fn get_persistent_segment_info(
        &self,
        collection: &str,
    ) -> Result<Vec<SegmentInfo>, MilvusError> {
        let req = m::GetPersistentSegmentInfoRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let r = self
            .call(
                "GetPersistentSegmentInfo",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_persistent_segment_info(r).await },
            )
            .await?;
        Ok(r.infos
            .into_iter()
            .map(|s| SegmentInfo {
                id: s.segment_id,
                collection_id: s.collection_id,
                partition_id: s.partition_id,
                num_rows: s.num_rows,
                state: SegmentState::try_from(s.state).unwrap_or(SegmentState::None),
            })
            .filter(|s| !matches!(s.state, SegmentState::Dropped | SegmentState::NotExist))
            .collect())
    }

    fn query_request(
        &self,
        collection: &str,
        partitions: &[String],
        expr: String,
        output_fields: Vec<String>,
        params: Vec<(String, String)>,
    ) -> m::QueryRequest {
        m::QueryRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            expr,
            output_fields,
            partition_names: partitions.to_vec(),
            // Strong with guarantee_timestamp 0: the server waits until everything written
            // before the call is visible.
            guarantee_timestamp: 0,
            consistency_level: ConsistencyLevel::Strong as i32,
            use_default_consistency: false,
            query_params: kv(&params),
            ..Default::default()
        }
    }

    /// The exact number of rows matching `expr` ("" = all) in `partitions` (empty = all), read
    /// with Strong consistency. GetCollectionStatistics would miss growing segments on 2.3.5.
    pub async fn query_count(
        &self,
        collection: &str,
        partitions: &[String],
        expr: &str,
    ) -> Result<u64, MilvusError> {
        let req = self.query_request(
            collection,
            partitions,
            expr.to_string(),
            vec!["count(*)".into()],
            Vec::new(),
        );
        let r = self
            .call(
                "Query",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.query(r).await },
            )
            .await?;
        let col = r
            .fields_data
            .iter()
            .find(|f| f.field_name == "count(*)")
            .or(r.fields_data.first())
            .ok_or_else(|| {
                self.unexpected("Query", Some(collection), "count(*) returned no column")
            })?;
        match data::pks(col).and_then(|v| v.into_iter().next()) {
            Some(Pk::Int(n)) if n >= 0 => Ok(n as u64),
            _ => Err(self.unexpected("Query", Some(collection), "count(*) is not an Int64 value")),
        }
    }

    /// One page of a primary-key cursor walk: rows with `pk_field > after` (all rows when
    /// `None`) that also match `filter` ("" = no filter), sorted by key, at most `limit`
    /// (clamped to 16384). `iterator=True` makes Milvus Lite sort by key too, and
    /// `reduce_stop_for_best=False` keeps 2.3.5 from returning more than `limit`. The primary
    /// key is always among the returned columns.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_page(
        &self,
        collection: &str,
        partitions: &[String],
        pk_field: &str,
        after: Option<&Pk>,
        filter: &str,
        limit: usize,
        output_fields: &[String],
    ) -> Result<QueryPage, MilvusError> {
        let limit = limit.clamp(1, MAX_QUERY_LIMIT);
        let cursor = after.map(|pk| format!("{pk_field} > {}", pk.to_expr()));
        let filter = filter.trim();
        let expr = match (cursor, filter.is_empty()) {
            (Some(c), true) => c,
            (Some(c), false) => format!("{c} and ({filter})"),
            (None, _) => filter.to_string(),
        };
        let mut fields = output_fields.to_vec();
        if !fields.iter().any(|f| f == pk_field) {
            fields.push(pk_field.to_string());
        }
        let params = vec![
            ("limit".to_string(), limit.to_string()),
            ("iterator".to_string(), "True".to_string()),
            ("reduce_stop_for_best".to_string(), "False".to_string()),
        ];
        let req = self.query_request(collection, partitions, expr, fields, params);
        let r = self
            .call(
                "Query",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.query(r).await },
            )
            .await?;
        let pk_col = r.fields_data.iter().find(|f| f.field_name == pk_field);
        let num_rows = pk_col
            .map(data::column_len)
            .or_else(|| r.fields_data.first().map(data::column_len))
            .unwrap_or(0);
        if num_rows > 0 && pk_col.is_none() {
            return Err(self.unexpected(
                "Query",
                Some(collection),
                format!("the answer has no primary-key column `{pk_field}`"),
            ));
        }
        let last_pk = pk_col.and_then(data::last_pk);
        Ok(QueryPage {
            fields: r.fields_data,
            num_rows,
            last_pk,
        })
    }

    /// Inserts `num_rows` rows given as columns, into `partition` (None = `_default`).
    pub async fn insert(
        &self,
        collection: &str,
        partition: Option<&str>,
        fields: Vec<FieldData>,
        num_rows: u32,
    ) -> Result<InsertResult, MilvusError> {
        let req = m::InsertRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            fields_data: fields,
            hash_keys: Vec::new(),
            num_rows,
        };
        let r = self
            .call(
                "Insert",
                Some(collection),
                Repeat::IfNotApplied,
                req,
                |mut c, r| async move { c.insert(r).await },
            )
            .await?;
        Ok(InsertResult {
            insert_count: r.insert_cnt,
            timestamp: r.timestamp,
        })
    }

    /// Deletes the rows matching `expr` (2.3.5 accepts only primary-key expressions such as
    /// `id in [1, 2]`). Returns the delete count the server reports.
    pub async fn delete(
        &self,
        collection: &str,
        partition: Option<&str>,
        expr: &str,
    ) -> Result<i64, MilvusError> {
        let req = m::DeleteRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            expr: expr.to_string(),
            hash_keys: Vec::new(),
        };
        let r = self
            .call(
                "Delete",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.delete(r).await },
            )
            .await?;
        Ok(r.delete_cnt)
    }

    /// The collection's indexes; empty when it has none (code 700 is not an error here).
    pub async fn describe_index(&self, collection: &str) -> Result<Vec<IndexInfo>, MilvusError> {
        let req = m::DescribeIndexRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = match self
            .call(
                "DescribeIndex",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_index(r).await },
            )
            .await
        {
            Ok(r) => r,
            Err(MilvusError::Status {
                code, error_code, ..
            }) if code == CODE_INDEX_NOT_FOUND || error_code == ErrorCode::IndexNotExist as i32 => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        Ok(r.index_descriptions
            .into_iter()
            .map(|d| IndexInfo {
                index_name: d.index_name,
                field_name: d.field_name,
                params: pairs(d.params),
                state: d.state,
                indexed_rows: d.indexed_rows,
                total_rows: d.total_rows,
                pending_index_rows: d.pending_index_rows,
                fail_reason: d.index_state_fail_reason,
            })
            .collect())
    }

    /// `params` are sent as the request's `extra_params`: `index_type`, `metric_type` and
    /// `params` (a JSON object string such as `{"nlist": 128}`).
    pub async fn create_index(
        &self,
        collection: &str,
        field: &str,
        index_name: &str,
        params: &[(String, String)],
    ) -> Result<(), MilvusError> {
        let req = m::CreateIndexRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            field_name: field.to_string(),
            extra_params: kv(params),
            index_name: index_name.to_string(),
        };
        // Creating the same index twice is accepted by Milvus, so a repeat is harmless.
        self.call(
            "CreateIndex",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.create_index(r).await },
        )
        .await?;
        Ok(())
    }

    /// Starts loading the collection into memory (one replica); `wait_loaded` waits for it.
    pub async fn load_collection(&self, collection: &str) -> Result<(), MilvusError> {
        let req = m::LoadCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            replica_number: 1,
            resource_groups: Vec::new(),
            refresh: false,
        };
        self.call(
            "LoadCollection",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.load_collection(r).await },
        )
        .await?;
        Ok(())
    }

    /// Load progress in percent.
    pub async fn get_loading_progress(&self, collection: &str) -> Result<i64, MilvusError> {
        let req = m::GetLoadingProgressRequest {
            base: None,
            collection_name: collection.to_string(),
            partition_names: Vec::new(),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "GetLoadingProgress",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_loading_progress(r).await },
            )
            .await?;
        Ok(r.progress)
    }

    /// Polls GetLoadingProgress until 100 %.
    pub async fn wait_loaded(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<(), MilvusError> {
        self.poll_until("LoadCollection", collection, timeout, || async {
            let p = self.get_loading_progress(collection).await?;
            Ok((p < 100).then(|| format!("progress {p}%")))
        })
        .await
    }

    /// Polls DescribeIndex until every index of the collection covers all its rows, so that a
    /// load which follows does not wait on index builds it cannot report.
    pub async fn wait_indexed(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<(), MilvusError> {
        self.poll_until("index build", collection, timeout, || async {
            let indexes = self.describe_index(collection).await?;
            if let Some(f) = indexes
                .iter()
                .find(|i| i.state == IndexState::Failed as i32)
            {
                return Err(MilvusError::IndexFailed {
                    instance: self.info.name.clone(),
                    collection: collection.to_string(),
                    index: f.index_name.clone(),
                    reason: f.fail_reason.clone(),
                });
            }
            let built = |i: &IndexInfo| {
                i.indexed_rows >= i.total_rows
                    && i.pending_index_rows == 0
                    && matches!(
                        IndexState::try_from(i.state),
                        Ok(IndexState::Finished | IndexState::None)
                    )
            };
            let (done, all) = indexes
                .iter()
                .fold((0, 0), |(d, a), i| (d + i.indexed_rows, a + i.total_rows));
            Ok((!indexes.iter().all(built)).then(|| format!("{done} of {all} rows indexed")))
        })
        .await
    }

    /// Calls `check` until it answers `None` (done), pausing 200 ms at first and at most
    /// [`POLL_MAX`]; `Some(progress)` means not yet, and says what was seen last if `timeout`
    /// runs out.
    async fn poll_until<F, Fut>(
        &self,
        what: &'static str,
        collection: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<(), MilvusError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<String>, MilvusError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            let Some(last) = check().await? else {
                return Ok(());
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

    /// NotExist for a missing collection (with an OK status); Milvus Lite always says Loaded.
    pub async fn get_load_state(&self, collection: &str) -> Result<LoadState, MilvusError> {
        let req = m::GetLoadStateRequest {
            base: None,
            collection_name: collection.to_string(),
            partition_names: Vec::new(),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "GetLoadState",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_load_state(r).await },
            )
            .await?;
        Ok(LoadState::try_from(r.state).unwrap_or(LoadState::NotExist))
    }

    /// Starts a bulk import of `files` (paths inside the instance's own bucket and root path)
    /// into `partition` (None = `_default`). Returns the task ids.
    pub async fn import(
        &self,
        collection: &str,
        partition: Option<&str>,
        files: Vec<String>,
        options: &[(String, String)],
    ) -> Result<Vec<i64>, MilvusError> {
        let req = m::ImportRequest {
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            channel_names: Vec::new(),
            row_based: false,
            files,
            options: kv(options),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "Import",
                Some(collection),
                Repeat::IfNotApplied,
                req,
                |mut c, r| async move { c.import(r).await },
            )
            .await?;
        if r.tasks.is_empty() {
            return Err(self.unexpected(
                "Import",
                Some(collection),
                "the server returned no task id",
            ));
        }
        Ok(r.tasks)
    }

    pub async fn get_import_state(&self, task: i64) -> Result<ImportTask, MilvusError> {
        let r = self
            .call(
                "GetImportState",
                None,
                Repeat::Always,
                m::GetImportStateRequest { task },
                |mut c, r| async move { c.get_import_state(r).await },
            )
            .await?;
        let mut t = ImportTask::from_pb(r);
        // 2.3.5 leaves `id` empty in this answer; the caller asked by id.
        if t.id == 0 {
            t.id = task;
        }
        Ok(t)
    }

    /// The newest `limit` import tasks of `collection` ("" = all collections; limit 0 = all).
    pub async fn list_import_tasks(
        &self,
        collection: &str,
        limit: i64,
    ) -> Result<Vec<ImportTask>, MilvusError> {
        let req = m::ListImportTasksRequest {
            collection_name: collection.to_string(),
            limit,
            db_name: self.db.clone(),
        };
        let site = (!collection.is_empty()).then_some(collection);
        let r = self
            .call(
                "ListImportTasks",
                site,
                Repeat::Always,
                req,
                |mut c, r| async move { c.list_import_tasks(r).await },
            )
            .await?;
        Ok(r.tasks.into_iter().map(ImportTask::from_pb).collect())
    }

    /// Polls every task until all are `ImportCompleted`; fails with `ImportFailed` (carrying
    /// the server's reason) as soon as one fails.
    pub async fn wait_import(
        &self,
        collection: &str,
        tasks: &[i64],
        timeout: Duration,
    ) -> Result<Vec<ImportTask>, MilvusError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(300);
        loop {
            let mut states = Vec::with_capacity(tasks.len());
            for &t in tasks {
                let s = self.get_import_state(t).await?;
                if matches!(
                    s.state,
                    ImportState::ImportFailed | ImportState::ImportFailedAndCleaned
                ) {
                    return Err(MilvusError::ImportFailed {
                        instance: self.info.name.clone(),
                        collection: collection.to_string(),
                        task: t,
                        reason: if s.failed_reason.is_empty() {
                            format!("state {:?}", s.state)
                        } else {
                            s.failed_reason
                        },
                    });
                }
                states.push(s);
            }
            if states
                .iter()
                .all(|s| s.state == ImportState::ImportCompleted)
            {
                return Ok(states);
            }
            if Instant::now() + delay > deadline {
                let last = states
                    .iter()
                    .map(|s| format!("task {} {:?}", s.id, s.state))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(MilvusError::WaitTimeout {
                    instance: self.info.name.clone(),
                    what: "Import",
                    collection: collection.to_string(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(POLL_MAX);
        }
    }

    pub async fn create_alias(&self, collection: &str, alias: &str) -> Result<(), MilvusError> {
        let req = m::CreateAliasRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            alias: alias.to_string(),
        };
        self.call(
            "CreateAlias",
            Some(collection),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_alias(r).await },
        )
        .await?;
        Ok(())
    }

    /// Points an existing alias at `collection`.
    pub async fn alter_alias(&self, collection: &str, alias: &str) -> Result<(), MilvusError> {
        let req = m::AlterAliasRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            alias: alias.to_string(),
        };
        self.call(
            "AlterAlias",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.alter_alias(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn drop_alias(&self, alias: &str) -> Result<(), MilvusError> {
        let req = m::DropAliasRequest {
            base: None,
            db_name: self.db.clone(),
            alias: alias.to_string(),
        };
        self.call(
            "DropAlias",
            None,
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.drop_alias(r).await },
        )
        .await?;
        Ok(())
    }

    /// The collection an alias points at, or `None` when the alias does not exist.
    pub async fn describe_alias(&self, alias: &str) -> Result<Option<String>, MilvusError> {
        let req = m::DescribeAliasRequest {
            base: None,
            db_name: self.db.clone(),
            alias: alias.to_string(),
        };
        match self
            .call(
                "DescribeAlias",
                None,
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_alias(r).await },
            )
            .await
        {
            Ok(r) => Ok(Some(r.collection)),
            // 2.3.5 says 1600 "alias not found"; Lite says 100.
            Err(MilvusError::Status { code, .. })
                if code == CODE_ALIAS_NOT_FOUND || code == CODE_COLLECTION_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The aliases of `collection` ("" = all aliases of the database).
    pub async fn list_aliases(&self, collection: &str) -> Result<Vec<String>, MilvusError> {
        let req = m::ListAliasesRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let site = (!collection.is_empty()).then_some(collection);
        let r = self
            .call(
                "ListAliases",
                site,
                Repeat::Always,
                req,
                |mut c, r| async move { c.list_aliases(r).await },
            )
            .await?;
        Ok(r.aliases)
    }

    /// Renames a collection, optionally into another database.
    pub async fn rename_collection(
        &self,
        old: &str,
        new: &str,
        new_db: Option<&str>,
    ) -> Result<(), MilvusError> {
        let req = m::RenameCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            old_name: old.to_string(),
            new_name: new.to_string(),
            new_db_name: new_db.unwrap_or_default().to_string(),
        };
        self.call(
            "RenameCollection",
            Some(old),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.rename_collection(r).await },
        )
        .await?;
        Ok(())
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

    #[test]
    fn import_task_reads_failed_reason() {
        let t = ImportTask::from_pb(m::GetImportStateResponse {
            state: ImportState::ImportFailed as i32,
            infos: vec![KeyValuePair {
                key: "failed_reason".into(),
                value: "unsupported file type".into(),
            }],
            ..Default::default()
        });
        assert_eq!(t.state, ImportState::ImportFailed);
        assert_eq!(t.failed_reason, "unsupported file type");
        assert_eq!(t.info("failed_reason"), Some("unsupported file type"));
    }
}
