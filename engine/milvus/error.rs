//! `MilvusError`: what went wrong talking to one Milvus instance, and whether a retry can help.

use std::path::PathBuf;
use std::time::Duration;

use super::pb::common::{ErrorCode, Status};

/// Status `code` 2.3.5 uses for "collection not found".
pub(crate) const CODE_COLLECTION_NOT_FOUND: i32 = 100;
/// Status `code` 2.3.5 uses for "database not found".
pub(crate) const CODE_DATABASE_NOT_FOUND: i32 = 800;
/// Status `code` for "index not found" (both 2.3.5 and Milvus Lite).
pub(crate) const CODE_INDEX_NOT_FOUND: i32 = 700;
/// Status `code` 2.3.5 uses for "alias not found".
pub(crate) const CODE_ALIAS_NOT_FOUND: i32 = 1600;

/// An error from one Milvus instance. Every message names the instance (its plan id) and, where
/// one is involved, the collection. No variant ever holds a password or token.
#[derive(Debug, thiserror::Error)]
pub enum MilvusError {
    #[error("`{instance}` has an invalid uri `{uri}`: {reason}")]
    InvalidUri {
        instance: String,
        uri: String,
        reason: String,
    },

    /// A TLS file the plan names that cannot serve: it names the file and the plan key.
    #[error("cannot use the TLS file `{}` (`instances.{instance}.{key}`): {reason}", path.display())]
    TlsFile {
        instance: String,
        /// The plan key under `instances.<id>`: `ca_cert`, `client_cert` or `client_key`.
        key: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// TLS settings that do not fit together; `reason` says which and what to set.
    #[error("cannot set up TLS for instance `{instance}`: {reason}")]
    TlsConfig { instance: String, reason: String },

    /// No connection could be made, so nothing was sent: safe to repeat any call.
    #[error("cannot connect to instance `{instance}` at {uri}: {reason}; {hint}")]
    Unreachable {
        instance: String,
        uri: String,
        reason: String,
        /// What to check for this cause (the uri, TLS settings, ...).
        hint: String,
    },

    /// The connection broke while a call was under way: the server may have acted on it.
    #[error(
        "the connection to instance `{instance}` at {uri} broke during {rpc}{}: {reason}; check \
         that Milvus is still running there",
        on(collection)
    )]
    ConnectionLost {
        instance: String,
        uri: String,
        rpc: &'static str,
        collection: Option<String>,
        reason: String,
    },

    #[error("`{instance}` rejected {who}: {hint}")]
    Unauthenticated {
        instance: String,
        /// "the credentials of user `root`", "the token" or "a request without credentials".
        who: String,
        hint: String,
    },

    #[error("`{instance}` does not implement {rpc}{}", lite_hint(rpc))]
    Unimplemented { instance: String, rpc: &'static str },

    #[error(
        "collection `{collection}` does not exist on `{instance}`{}: check the name",
        in_db(database)
    )]
    CollectionNotFound {
        instance: String,
        database: String,
        collection: String,
    },

    #[error(
        "database `{database}` does not exist on `{instance}`: check the name or create it first"
    )]
    DatabaseNotFound { instance: String, database: String },

    /// A database other than the default on a server without database RPCs (Milvus Lite 2.x),
    /// which would ignore the name and use its default database.
    #[error(
        "`{instance}` has no databases (it answers UNIMPLEMENTED for ListDatabases; {version}), \
         so database `{database}` cannot be used there: only the default database"
    )]
    NoDatabases {
        instance: String,
        version: String,
        database: String,
    },

    #[error(
        "{rpc} on `{instance}`{} failed: {reason} (code {code}, error_code {error_code})",
        on(collection)
    )]
    Status {
        instance: String,
        rpc: &'static str,
        collection: Option<String>,
        code: i32,
        error_code: i32,
        reason: String,
        /// The server's own hint, or a known rate-limit/not-ready code.
        retriable: bool,
    },

    #[error(
        "{rpc} on `{instance}`{} did not answer within {timeout:?}; check that the instance is \
         not overloaded or stalled, or raise `instances.{instance}.timeout`",
        on(collection)
    )]
    Timeout {
        instance: String,
        rpc: &'static str,
        collection: Option<String>,
        timeout: Duration,
    },

    #[error(
        "{rpc} on `{instance}`{} failed: {message} (gRPC {code:?})",
        on(collection)
    )]
    Rpc {
        instance: String,
        rpc: &'static str,
        collection: Option<String>,
        code: tonic::Code,
        message: String,
    },

    #[error(
        "{what} on `{instance}` for collection `{collection}` did not finish within {timeout:?}{}",
        last_seen(last)
    )]
    WaitTimeout {
        instance: String,
        what: &'static str,
        collection: String,
        timeout: Duration,
        /// The last progress seen, e.g. "progress 33%".
        last: String,
    },

    #[error("import task {task} on `{instance}` into collection `{collection}` failed: {reason}")]
    ImportFailed {
        instance: String,
        collection: String,
        task: i64,
        reason: String,
    },

    #[error(
        "building index `{index}` of collection `{collection}` on `{instance}` failed: {reason}"
    )]
    IndexFailed {
        instance: String,
        collection: String,
        index: String,
        reason: String,
    },

    #[error(
        "{rpc} on `{instance}`{} returned an unexpected answer: {reason}",
        on(collection)
    )]
    Unexpected {
        instance: String,
        rpc: &'static str,
        collection: Option<String>,
        reason: String,
    },

    #[error("garbage-collection control at {url} failed: {reason}")]
    Gc { url: String, reason: String },

    #[error(
        "{url} has no garbage-collection pause endpoint (HTTP {status}): Milvus before 2.4 \
         (such as 2.3.5) cannot pause GC; keep the backup short or stop compaction another way"
    )]
    GcUnsupported { url: String, status: u16 },
}

fn lite_hint(rpc: &str) -> String {
    format!(" (the server answered UNIMPLEMENTED for {rpc}; Milvus Lite lacks it)")
}

fn on(collection: &Option<String>) -> String {
    match collection {
        Some(c) => format!(" for collection `{c}`"),
        None => String::new(),
    }
}

fn in_db(db: &str) -> String {
    if db.is_empty() || db == "default" {
        String::new()
    } else {
        format!(" in database `{db}`")
    }
}

fn last_seen(last: &str) -> String {
    if last.is_empty() {
        String::new()
    } else {
        format!(" (last seen: {last})")
    }
}

impl MilvusError {
    /// True when the same call may succeed if repeated later: the server was unreachable, too
    /// busy, rate-limited or slow. Errors about the request itself (bad schema, missing
    /// collection, wrong password) are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            MilvusError::Unreachable { .. }
            | MilvusError::ConnectionLost { .. }
            | MilvusError::Timeout { .. } => true,
            MilvusError::Status { retriable, .. } => *retriable,
            MilvusError::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
            ),
            _ => false,
        }
    }

    /// The server's words when it refused the call for a rate limit, a quota or being busy
    /// (RateLimit, `rate limit exceeded`, `all DataNodes are busy`, RESOURCE_EXHAUSTED): it
    /// asks for fewer calls, or later ones, not for none.
    pub fn pushed_back(&self) -> Option<&str> {
        match self {
            MilvusError::Status {
                error_code, reason, ..
            } if *error_code == ErrorCode::RateLimit as i32
                || reason.to_ascii_lowercase().contains("rate limit")
                || reason.to_ascii_lowercase().contains("busy") =>
            {
                Some(reason)
            }
            MilvusError::Rpc {
                code: tonic::Code::ResourceExhausted,
                message,
                ..
            } => Some(message),
            _ => None,
        }
    }

    /// The server's status `code` when the error came from a status check.
    pub fn status_code(&self) -> Option<i32> {
        match self {
            MilvusError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where a call was made, for the messages of the errors it may produce.
#[derive(Clone, Copy)]
pub(crate) struct CallSite<'a> {
    pub instance: &'a str,
    pub database: &'a str,
    pub rpc: &'static str,
    pub collection: Option<&'a str>,
}

/// The status check every call goes through: the newer `code` and the legacy `error_code` are
/// both meaningful on 2.3.5, and each alone misses some failures, so either non-zero fails.
pub(crate) fn check_status(status: Option<&Status>, site: CallSite<'_>) -> Result<(), MilvusError> {
    let Some(s) = status else { return Ok(()) };
    if s.code == 0 && s.error_code == 0 {
        return Ok(());
    }
    if s.code == CODE_COLLECTION_NOT_FOUND
        && let Some(c) = site.collection
        && s.reason.to_ascii_lowercase().contains("collection")
    {
        return Err(MilvusError::CollectionNotFound {
            instance: site.instance.to_string(),
            database: site.database.to_string(),
            collection: c.to_string(),
        });
    }
    if s.code == CODE_DATABASE_NOT_FOUND && !site.database.is_empty() {
        return Err(MilvusError::DatabaseNotFound {
            instance: site.instance.to_string(),
            database: site.database.to_string(),
        });
    }
    let reason = if s.reason.is_empty() {
        s.detail.clone()
    } else {
        s.reason.clone()
    };
    let lower = reason.to_ascii_lowercase();
    // Rate limits and "not ready" are the server asking us to come back later.
    let busy = s.error_code == ErrorCode::RateLimit as i32
        || s.error_code == ErrorCode::NotReadyServe as i32
        || s.error_code == ErrorCode::NotReadyCoordActivating as i32
        || s.error_code == ErrorCode::MemoryQuotaExhausted as i32
        || lower.contains("rate limit")
        || lower.contains("not ready");
    Err(MilvusError::Status {
        instance: site.instance.to_string(),
        rpc: site.rpc,
        collection: site.collection.map(str::to_string),
        code: s.code,
        error_code: s.error_code,
        reason,
        retriable: s.retriable || busy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> CallSite<'static> {
        CallSite {
            instance: "milvus_a",
            database: "default",
            rpc: "DescribeCollection",
            collection: Some("books"),
        }
    }

    fn status(code: i32, error_code: i32, reason: &str) -> Status {
        Status {
            code,
            error_code,
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_ok_only_when_both_codes_are_zero() {
        assert!(check_status(None, site()).is_ok());
        assert!(check_status(Some(&status(0, 0, "")), site()).is_ok());
        // Each code alone must fail the call: 2.3.5 and Lite fill them inconsistently.
        let e = check_status(Some(&status(0, 5, "bad arg")), site()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DescribeCollection on `milvus_a` for collection `books` failed: bad arg \
             (code 0, error_code 5)"
        );
        let e = check_status(Some(&status(1100, 0, "invalid schema")), site()).unwrap_err();
        assert_eq!(e.status_code(), Some(1100));
        assert!(!e.is_transient());
    }

    #[test]
    fn missing_collection_is_named() {
        let e = check_status(
            Some(&status(
                100,
                1,
                "can't find collection[database=default][collection=books]",
            )),
            site(),
        )
        .unwrap_err();
        assert!(matches!(e, MilvusError::CollectionNotFound { .. }));
        assert_eq!(
            e.to_string(),
            "collection `books` does not exist on `milvus_a`: check the name"
        );
    }

    #[test]
    fn rate_limit_is_transient() {
        let e = check_status(Some(&status(8, 49, "rate limit exceeded")), site()).unwrap_err();
        assert!(e.is_transient());
        let e = check_status(Some(&status(65535, 1, "whatever")), site()).unwrap_err();
        assert!(!e.is_transient());
    }

    #[test]
    fn unimplemented_says_lite() {
        let e = MilvusError::Unimplemented {
            instance: "lite".into(),
            rpc: "Import",
        };
        assert!(e.to_string().contains("`lite` does not implement Import"));
        assert!(e.to_string().contains("Milvus Lite"));
    }
}
