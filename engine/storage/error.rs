//! `StorageError`: what went wrong with which bucket and key, what to check, and whether a retry can help.

use std::fmt;
use std::sync::Arc;

/// Where a store lives, for messages: the plan's bucket id, a human description of the backing
/// location, and the plan setting that names that location (so a message can say what to fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The plan's bucket id, e.g. `bucket_a`.
    pub id: String,
    /// e.g. "s3 bucket `bucket-a` at http://127.0.0.1:9000" or "local directory `/data/backup`".
    pub location: String,
    /// The setting under `buckets.<id>` that points at the location: `bucket` or `path`.
    pub setting: &'static str,
    /// The setting under `buckets.<id>` that says how to reach the server, if any (`endpoint`).
    pub endpoint_setting: Option<&'static str>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bucket `{}` ({})", self.id, self.location)
    }
}

/// Every failure of a storage operation. Messages name the bucket id, its location and the key, and
/// say what to check; none of them contains a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("{place} does not exist: create it or fix `buckets.{id}.{setting}`", id = .place.id, setting = .place.setting)]
    BucketNotFound { place: Arc<Place> },

    #[error("object `{key}` not found in {place}")]
    NotFound { place: Arc<Place>, key: String },

    #[error(
        "access denied: cannot {target} in {place} ({detail}); check the credentials in \
         `buckets.{id}` and the bucket's policy",
        target = target(.op, .key), id = .place.id
    )]
    AccessDenied {
        place: Arc<Place>,
        op: &'static str,
        key: String,
        detail: String,
    },

    #[error("cannot reach {place}: {reason}; check that the server is running and {hint}", hint = endpoint_hint(.place))]
    Unreachable {
        place: Arc<Place>,
        reason: String,
        transient: bool,
    },

    /// The server took too long to answer a request it received.
    #[error(
        "cannot {target} in {place}: {what}; check that the server is not overloaded and {hint}",
        target = target(.op, .key), hint = endpoint_hint(.place)
    )]
    Timeout {
        place: Arc<Place>,
        op: &'static str,
        key: String,
        /// Which wait ran out, and after how long: "no answer within 120s".
        what: String,
    },

    #[error("cannot {target} in {place}: {code}: {message}", target = target(.op, .key))]
    Service {
        place: Arc<Place>,
        op: &'static str,
        key: String,
        code: String,
        message: String,
        status: Option<u16>,
        transient: bool,
    },

    #[error("cannot {target} in {place}: {reason}", target = target(.op, .key))]
    Request {
        place: Arc<Place>,
        op: &'static str,
        key: String,
        reason: String,
        transient: bool,
    },

    #[error("cannot {target} in {place}: {source}", target = target(.op, .key))]
    Io {
        place: Arc<Place>,
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid key `{key}` for {place}: {reason}")]
    InvalidKey {
        place: Arc<Place>,
        key: String,
        reason: &'static str,
    },

    #[error(
        "copy of `{src_key}` from bucket `{src}` to `{dst_key}` in bucket `{dst}` failed verification: \
         {detail}; the destination object was removed, run the copy again"
    )]
    Verify {
        src: String,
        src_key: String,
        dst: String,
        dst_key: String,
        detail: String,
    },

    #[error("upload of `{key}` to {place} failed verification: {detail}; run it again")]
    Corrupt {
        place: Arc<Place>,
        key: String,
        detail: String,
    },

    #[error(
        "no usable credentials for {place}: {reason}; set `buckets.{id}.access_key_id` and \
         `buckets.{id}.secret_access_key`, or give the default AWS chain some (AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, a profile, or an instance role)",
        id = .place.id
    )]
    Credentials { place: Arc<Place>, reason: String },

    #[error("{place} is misconfigured: {reason}")]
    Config { place: Arc<Place>, reason: String },
}

/// "get `a/b`", or just the operation for bucket-level ones (empty key).
fn target(op: &str, key: &str) -> String {
    if key.is_empty() {
        op.to_string()
    } else {
        format!("{op} `{key}`")
    }
}

fn endpoint_hint(place: &Place) -> String {
    match place.endpoint_setting {
        Some(setting) => format!("`buckets.{}.{setting}` is right", place.id),
        None => "the network allows the connection".to_string(),
    }
}

impl StorageError {
    /// Whether trying the same operation again later can succeed: timeouts, 5xx answers,
    /// throttling, dropped connections. Missing buckets or keys, denied access and bad
    /// configuration are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Unreachable { transient, .. }
            | StorageError::Service { transient, .. }
            | StorageError::Request { transient, .. } => *transient,
            StorageError::Timeout { .. } => true,
            StorageError::Io { source, .. } => io_kind_is_transient(source.kind()),
            // A copy or upload that arrived damaged is worth repeating: the next transfer is independent.
            StorageError::Verify { .. } | StorageError::Corrupt { .. } => true,
            StorageError::BucketNotFound { .. }
            | StorageError::NotFound { .. }
            | StorageError::AccessDenied { .. }
            | StorageError::InvalidKey { .. }
            | StorageError::Credentials { .. }
            | StorageError::Config { .. } => false,
        }
    }

    /// The object `key` does not exist in the store at `place`.
    pub(crate) fn not_found(place: &Place, key: &str) -> Self {
        StorageError::NotFound {
            place: Arc::new(place.clone()),
            key: key.to_string(),
        }
    }

    /// Whether the object (not the bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Whether the credentials were refused; server-side copy falls back to streaming on this.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, StorageError::AccessDenied { .. })
    }
}

pub(crate) fn io_kind_is_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        TimedOut
            | ConnectionReset
            | ConnectionAborted
            | BrokenPipe
            | Interrupted
            | UnexpectedEof
            | WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_place() -> Arc<Place> {
        Arc::new(Place {
            id: "bucket_b".into(),
            location: "s3 bucket `bucket-b` at http://127.0.0.1:9000".into(),
            setting: "bucket",
            endpoint_setting: Some("endpoint"),
        })
    }

    #[test]
    fn missing_bucket_says_what_to_fix() {
        let e = StorageError::BucketNotFound { place: s3_place() };
        assert_eq!(
            e.to_string(),
            "bucket `bucket_b` (s3 bucket `bucket-b` at http://127.0.0.1:9000) does not exist: \
             create it or fix `buckets.bucket_b.bucket`"
        );
        assert!(!e.is_transient());
        assert!(!e.is_not_found());
    }

    #[test]
    fn unreachable_names_the_endpoint_setting() {
        let e = StorageError::Unreachable {
            place: s3_place(),
            reason: "connection refused".into(),
            transient: false,
        };
        assert_eq!(
            e.to_string(),
            "cannot reach bucket `bucket_b` (s3 bucket `bucket-b` at http://127.0.0.1:9000): connection refused; \
             check that the server is running and `buckets.bucket_b.endpoint` is right"
        );
    }

    #[test]
    fn transient_classification() {
        let io = |kind| StorageError::Io {
            place: s3_place(),
            op: "read",
            key: "k".into(),
            source: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::ConnectionReset).is_transient());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());
        let nf = StorageError::NotFound {
            place: s3_place(),
            key: "a/b".into(),
        };
        assert!(nf.is_not_found() && !nf.is_transient());
        assert_eq!(
            nf.to_string(),
            "object `a/b` not found in bucket `bucket_b` (s3 bucket `bucket-b` at http://127.0.0.1:9000)"
        );
    }
}
