//! Turning aws-sdk-s3 failures into `StorageError`s that name the bucket, the operation and the key, and say whether a retry can help.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Storage;
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
            // The SDK's own timeouts, and a connect or read timeout under it.
            _ if matches!(&err, SdkError::TimeoutError(_))
                || matches!(&err, SdkError::DispatchFailure(d) if d.is_timeout()) =>
            {
                StorageError::Timeout {
                    place,
                    op,
                    key: key.to_string(),
                    reason: innermost(&err),
                }
            }
            SdkError::DispatchFailure(d) if d.is_io() => match find_io(&err) {
                Some(io) => StorageError::Unreachable {
                    place,
                    reason: describe_io(io),
                    transient: io_kind_is_transient(io.kind()),
                },
                None => StorageError::Unreachable {
                    place,
                    reason: innermost(&err),
                    transient: true,
                },
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

/// The first `std::io::Error` in an error's source chain (connection refused, reset, ...).
fn find_io<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

fn describe_io(io: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match io.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "connection timed out".into(),
        _ => io.to_string(),
    }
}

/// Every message of an error chain joined with `: ` (the SDK's Display shows one level, and
/// `aws_sdk_s3::error::DisplayErrorContext` appends a Debug dump that is no use to a person).
pub(super) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The innermost message of an error chain: the SDK's outer layers say little ("dispatch failure").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
