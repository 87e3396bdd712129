//! How a failed call becomes a `MilvusError`: gRPC statuses, broken transport, no connection.

use std::time::Duration;

use super::MilvusClient;
use crate::milvus::error::{CallSite, MilvusError};
use crate::net;

/// `Unreachable` for a connection that could not be made: the socket's cause and what to check
/// for it. `timeout` is the connect timeout, named when it is what ran out.
pub(super) fn unreachable(
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

impl MilvusClient {
    pub(super) fn map_grpc(&self, s: tonic::Status, site: CallSite<'_>) -> MilvusError {
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

    pub(super) fn unexpected(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
