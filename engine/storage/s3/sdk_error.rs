//! Turning aws-sdk-s3 failures into `StorageError`s that name the bucket, the operation and the key, and say whether a retry can help.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Storage;
use super::connect::{CONNECT_TIMEOUT, READ_TIMEOUT};
use crate::net;
use crate::storage::StorageError;
use crate::storage::error::io_kind_is_transient;

impl S3Storage {
    /// The error for an S3 error code / HTTP status from a service answer.
    pub(super) fn error_for_code(
        &self,
        op: &'static str,
        key: &str,
        code: Option<&str>,
        status: Option<u16>,
        message: &str,
    ) -> StorageError {
        let place = self.place.clone();
        let key = key.to_string();
        let code_text = code.unwrap_or("").to_string();
        match (code.unwrap_or(""), status) {
            ("NoSuchBucket", _) => StorageError::BucketNotFound { place },
            ("NoSuchKey", _) => StorageError::NotFound { place, key },
            (
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AllAccessDisabled"
                | "InvalidToken"
                | "ExpiredToken"
                | "AccountProblem",
                _,
            )
            | (_, Some(401 | 403)) => {
                let detail = match (code, message) {
                    (Some(c), "") => c.to_string(),
                    (Some(c), m) => format!("{c}: {m}"),
                    (None, _) => format!("HTTP {}", status.unwrap_or(403)),
                };
                StorageError::AccessDenied {
                    place,
                    op,
                    key,
                    detail,
                }
            }
            (c, s) => {
                let transient = matches!(
                    c,
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestTimeTooSkewed"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "OperationAborted"
                ) || matches!(s, Some(408 | 429 | 500..=599));
                StorageError::Service {
                    place,
                    op,
                    key,
                    code: if code_text.is_empty() {
                        format!("HTTP {}", s.unwrap_or(0))
                    } else {
                        code_text
                    },
                    message: message.to_string(),
                    status: s,
                    transient,
                }
            }
        }
    }

    /// Turns an SDK failure into a `StorageError` naming this bucket, the operation and the key.
    pub(super) fn classify<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let place = self.place.clone();
        let chain = chain_text(&err);
        match &err {
            // The SDK resolves credentials while dispatching; its error type is not public, so
            // recognise the failure by its message.
            SdkError::DispatchFailure(_) if chain.contains("loading credentials") => {
                let marker = "loading credentials: ";
                let reason = match chain.find(marker) {
                    Some(i) => &chain[i + marker.len()..],
                    None => &chain,
                };
                StorageError::Credentials {
                    place,
                    reason: reason.trim_end_matches('.').to_string(),
                }
            }
            // planrun's own chain (a bucket with an `endpoint`) says it found nothing.
            SdkError::DispatchFailure(_) if chain.contains("no credentials found in chain") => {
                StorageError::Credentials {
                    place,
                    reason: "none in the environment, an AWS profile, a web identity token or \
                             container credentials (with an `endpoint`, the EC2 instance metadata \
                             service is not asked unless `instance_metadata = true`)"
                        .into(),
                }
            }
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                self.error_for_code(
                    op,
                    key,
                    ctx.err().code(),
                    Some(status),
                    ctx.err().message().unwrap_or(""),
                )
            }
            // A connect timeout: the server was never reached. The SDK's timeout error type is
            // private, and its text ("HTTP connect timeout occurred after 10s") is all that
            // tells a connect timeout from a read timeout.
            SdkError::DispatchFailure(d) if d.is_timeout() && chain.contains("connect timeout") => {
                StorageError::Unreachable {
                    place,
                    reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
                    transient: true,
                }
            }
            SdkError::DispatchFailure(d) if d.is_timeout() => StorageError::Timeout {
                place,
                op,
                key: key.to_string(),
                what: format!("no answer within {READ_TIMEOUT:?}"),
            },
            // An operation or attempt timeout; planrun sets none, but the environment may.
            SdkError::TimeoutError(_) => StorageError::Timeout {
                place,
                op,
                key: key.to_string(),
                what: "the request took longer than its timeout".into(),
            },
            SdkError::DispatchFailure(d) if d.is_io() => StorageError::Unreachable {
                place,
                reason: net::cause(&err),
                transient: net::io_error(&err).is_none_or(|io| io_kind_is_transient(io.kind())),
            },
            SdkError::DispatchFailure(_) => self.request_error(op, key, chain, false),
            // A malformed or cut-off answer: usually a proxy or a dropped connection.
            SdkError::ResponseError(_) => self.request_error(op, key, chain, true),
            // Includes "no credentials found" from the default chain.
            _ => self.request_error(op, key, chain, false),
        }
    }
}

/// Whether the server answered 404: for a HEAD, which has no body to carry an error code, the
/// only sign of a missing key (or bucket).
pub(super) fn answered_404<E>(err: &SdkError<E, HttpResponse>) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 404)
}

/// Every message of an error chain joined with `: ` (the SDK's Display shows one level, and
/// `aws_sdk_s3::error::DisplayErrorContext` appends a Debug dump that is no use to a person).
pub(super) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in net::chain(err) {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::{ConnectorError, SdkError};
    use aws_sdk_s3::operation::head_object::HeadObjectError;

    use super::*;
    use crate::storage::S3Config;

    /// What the SDK's HTTP client says when one of its timeouts runs out (its own error type is
    /// private; the text is the same).
    #[derive(Debug)]
    struct HttpTimeout(&'static str);
    impl std::fmt::Display for HttpTimeout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for HttpTimeout {}

    async fn store() -> S3Storage {
        S3Storage::connect(&S3Config {
            name: "bucket_a".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "bucket-a".into(),
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            path_style: true,
            instance_metadata: false,
            requests_per_second: 1000,
            bytes_per_second: None,
        })
        .await
        .unwrap()
    }

    fn timed_out(text: &'static str) -> SdkError<HeadObjectError, HttpResponse> {
        SdkError::dispatch_failure(ConnectorError::timeout(Box::new(HttpTimeout(text))))
    }

    #[tokio::test]
    async fn timeouts_say_which_wait_ran_out_and_for_how_long() {
        let s = store().await;
        let e = s.classify(
            "head",
            "k",
            timed_out("HTTP connect timeout occurred after 10s"),
        );
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "cannot reach bucket `bucket_a` (s3 bucket `bucket-a` at http://127.0.0.1:9000): no \
             connection within 10s; check that the server is running and \
             `buckets.bucket_a.endpoint` is right"
        );
        let e = s.classify(
            "head",
            "k",
            timed_out("HTTP read timeout occurred after 120s"),
        );
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "cannot head `k` in bucket `bucket_a` (s3 bucket `bucket-a` at \
             http://127.0.0.1:9000): no answer within 120s; check that the server is not \
             overloaded and `buckets.bucket_a.endpoint` is right"
        );
    }
}
