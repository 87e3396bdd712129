//! Connecting: endpoint and TLS, the authorization header, the handshake; the health check.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{Headers, Info, MilvusClient, Repeat, backoff, root_cause};
use crate::milvus::pb::common::ClientInfo;
use crate::milvus::pb::milvus as m;
use crate::milvus::{MilvusConfig, MilvusError};

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
