//! Connecting: endpoint and TLS, the authorization header, the handshake; the health check.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::failure::unreachable;
use super::{Headers, Info, MilvusClient, Repeat, STALL_LIMIT, backoff};
use crate::milvus::pb::common::ClientInfo;
use crate::milvus::pb::milvus as m;
use crate::milvus::{MilvusConfig, MilvusError};
use crate::net;

/// The version recorded for a server that answers UNIMPLEMENTED for GetVersion: only Milvus Lite
/// 2.x (the C++ core of Milvus 2.x run as `milvus_lite/lib/milvus`) lacks it. A space, not the
/// `-` of a reported "milvus_lite-3.2.2": checks of Lite 3 by its version must not match it.
const LITE2_VERSION: &str = "milvus_lite 2.x (no GetVersion)";

/// One of an instance's TLS files, by the plan key that names it.
#[derive(Clone, Copy)]
enum TlsKey {
    CaCert,
    ClientCert,
    ClientKey,
}

impl TlsKey {
    fn key(self) -> &'static str {
        match self {
            TlsKey::CaCert => "ca_cert",
            TlsKey::ClientCert => "client_cert",
            TlsKey::ClientKey => "client_key",
        }
    }
}

/// Reads a TLS file and checks that it holds what its key needs, so that a wrong file is refused
/// naming itself and its plan key. tonic skips whatever is not PEM, so a file without a single
/// certificate would pass it and only fail the handshake, naming nothing; and its parse errors
/// ("Error parsing TLS private key") do not say which file. The content is never shown: a key
/// is a secret.
fn read_pem(
    instance: &str,
    key: TlsKey,
    path: &std::path::Path,
    parses: impl Fn(Vec<u8>) -> bool,
) -> Result<Vec<u8>, MilvusError> {
    let refuse = |reason: &str| MilvusError::TlsFile {
        instance: instance.to_string(),
        key: key.key(),
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let bytes = std::fs::read(path).map_err(|e| refuse(&format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    // The labels of the PEM blocks: `CERTIFICATE`, `PRIVATE KEY`, `RSA PRIVATE KEY`, ...
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    let problem = match key {
        TlsKey::CaCert | TlsKey::ClientCert if !labels.contains(&"CERTIFICATE") => Some(
            "it holds no PEM certificate (no `-----BEGIN CERTIFICATE-----` line); give the \
             certificate in PEM form",
        ),
        TlsKey::ClientKey if labels.iter().any(|l| l.contains("ENCRYPTED")) => Some(
            "the key is encrypted, and planrun cannot ask for its passphrase; give it \
             unencrypted (`openssl pkey -in KEY -out KEY.plain.pem`)",
        ),
        TlsKey::ClientKey if !labels.iter().any(|l| l.ends_with("PRIVATE KEY")) => Some(
            "it holds no PEM private key (no `-----BEGIN PRIVATE KEY-----` line); give the \
             client certificate's key in PEM form",
        ),
        _ if !parses(bytes.clone()) => Some(
            "its PEM block is damaged (the base64 inside does not decode to a certificate or \
             key); export the file again",
        ),
        _ => None,
    };
    match problem {
        Some(p) => Err(refuse(p)),
        None => Ok(bytes),
    }
}

/// Whether tonic accepts a TLS configuration: asked with one file at a time, so a refusal names
/// that file.
fn tonic_accepts(tls: ClientTlsConfig) -> bool {
    Endpoint::from_static("https://localhost")
        .tls_config(tls)
        .is_ok()
}

/// The TLS configuration of an `https://` instance, each file checked on its own.
fn tls_config(cfg: &MilvusConfig) -> Result<ClientTlsConfig, MilvusError> {
    let name = cfg.name.as_str();
    // A client certificate goes through the same parser as a CA's; a key only in a pair.
    let cert_parses =
        |pem| tonic_accepts(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
    let mut tls = ClientTlsConfig::new();
    tls = match &cfg.ca_cert {
        Some(p) => tls.ca_certificate(Certificate::from_pem(read_pem(
            name,
            TlsKey::CaCert,
            p,
            cert_parses,
        )?)),
        None => tls.with_native_roots(),
    };
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => {
            let cert = read_pem(name, TlsKey::ClientCert, c, cert_parses)?;
            let key = read_pem(name, TlsKey::ClientKey, k, |pem| {
                tonic_accepts(
                    ClientTlsConfig::new().identity(Identity::from_pem(cert.clone(), pem)),
                )
            })?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(MilvusError::TlsConfig {
                instance: name.to_string(),
                reason: format!(
                    "mutual TLS needs both `client_cert` and `client_key`: set \
                     `instances.{name}.client_cert` and `instances.{name}.client_key` together, \
                     or neither"
                ),
            });
        }
    }
    if let Some(sn) = &cfg.server_name {
        tls = tls.domain_name(sn.clone());
    }
    Ok(tls)
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
    /// credentials or a missing database fail here with a message naming the instance; then
    /// finds out what the server is and has (`detect`).
    pub async fn connect(cfg: &MilvusConfig) -> Result<Self, MilvusError> {
        let name = cfg.name.as_str();
        let invalid = |reason: String| MilvusError::InvalidUri {
            instance: name.to_string(),
            uri: cfg.uri.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(cfg.uri.clone())
            .map_err(|e| invalid(net::innermost(&e)))?
            .connect_timeout(cfg.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            // hyper's default of 20 s closes the connection 50 s into a stall, and a closed
            // connection cancels every call on it, the status polls planrun waits through
            // without cancelling included: a ping may go unanswered as long as they may.
            .keep_alive_timeout(STALL_LIMIT)
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
                endpoint =
                    endpoint
                        .tls_config(tls_config(cfg)?)
                        .map_err(|e| MilvusError::TlsConfig {
                            instance: name.to_string(),
                            reason: format!(
                                "{}; check `instances.{name}.ca_cert`, `client_cert` and \
                                 `client_key`",
                                net::innermost(&e)
                            ),
                        })?;
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
                        return Err(unreachable(name, &cfg.uri, cfg.timeout, &e));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };

        let authorization = if let Some(token) = &cfg.token {
            let v = base64::engine::general_purpose::STANDARD.encode(token.expose());
            // Trace-level HTTP/2 logs may show headers: the encoded form is a secret too.
            crate::secret::never_print([v.as_str()]);
            Some(header_value(name, &cfg.uri, "token", &v)?)
        } else if let Some(user) = &cfg.user {
            let pw = cfg
                .password
                .as_ref()
                .map(|p| p.expose())
                .unwrap_or_default();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            crate::secret::never_print([v.as_str()]);
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
                // Until `detect` knows better: the database guard of every call then lets
                // the handshake through.
                databases: true,
                partitions: true,
                aliases: true,
                refuses_nullable: false,
                timeout: cfg.timeout,
                retries: cfg.retries,
                throttle: cfg.throttle.clone(),
                established: false,
                outage: cfg.outage,
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
        client.info = Arc::new(client.detect(lite).await?);
        tracing::debug!(
            instance = name,
            version = client.server_version(),
            lite = client.is_lite(),
            databases = client.has_databases(),
            "connected"
        );
        // A server without databases ignores the name, so the instance's database would be
        // its default one in disguise.
        if let Some(e) = client.lacks_database(&db) {
            return Err(e);
        }
        Ok(client)
    }

    /// What the server is and has, from what it answers rather than from version strings, which
    /// not every server reports. `lite`: what Connect's server info said.
    async fn detect(&self, lite: bool) -> Result<Info, MilvusError> {
        let mut info = Info::clone(&self.info);
        info.established = true;
        let lite2 = match self
            .call(
                "GetVersion",
                None,
                Repeat::Always,
                m::GetVersionRequest {},
                |mut c, r| async move { c.get_version(r).await },
            )
            .await
        {
            Ok(r) => {
                info.version = r.version;
                false
            }
            // Only Milvus Lite 2.x (the C++ core, such as milvus-lite 2.5.1) lacks GetVersion:
            // a server of its own kind, not a failure.
            Err(MilvusError::Unimplemented { .. }) => {
                info.version = LITE2_VERSION.to_string();
                true
            }
            Err(e) => return Err(e),
        };
        info.lite = lite || info.version.starts_with("milvus_lite");
        // It says "MilvusLite doesn't support nullable" at CreateCollection.
        info.refuses_nullable = lite2;
        info.databases = match self.list_databases().await {
            Ok(_) => true,
            Err(MilvusError::Unimplemented { .. }) => false,
            // The server routes the RPC, so it has databases; whatever stopped this call (a
            // missing privilege, a hiccup) is for a call that needs the list to report.
            Err(_) => true,
        };
        // Asked about no collection: a server with the RPC refuses the empty name, one
        // without answers UNIMPLEMENTED before looking at it.
        let probe = m::ShowPartitionsRequest::default();
        info.partitions = !matches!(
            self.call(
                "ShowPartitions",
                None,
                Repeat::Always,
                probe,
                |mut c, r| async move { c.show_partitions(r).await },
            )
            .await,
            Err(MilvusError::Unimplemented { .. })
        );
        info.aliases = !matches!(
            self.list_aliases("").await,
            Err(MilvusError::Unimplemented { .. })
        );
        Ok(info)
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
}
