//! `S3Config` and `TransferLimits`, and how `S3Storage::connect` turns them into a client: endpoint, region, credentials, timeouts.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};

use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;

use super::{MAX_PART, MIB, MIN_PART, S3Storage};
use crate::secret::Secret;
use crate::storage::{Place, StorageError};
use crate::throttle::Throttle;

/// One S3 bucket as a plan declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The plan's bucket id, e.g. `bucket_a`.
    pub name: String,
    /// The server, e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The S3 bucket name, e.g. `bucket-a`.
    pub bucket: String,
    /// `None`: `us-east-1` with an endpoint, else the AWS default chain's region.
    pub region: Option<String>,
    /// Static credentials; with none, the default AWS chain (environment, profile, ...) applies.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Address buckets as `endpoint/bucket/key` (MinIO, moto) instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Without keys, whether the credential chain may ask the EC2 instance metadata service (a
    /// link-local address off this machine).
    pub instance_metadata: bool,
    /// The most requests per second sent to the bucket.
    pub requests_per_second: u64,
    /// The most bytes per second moved through planrun to or from the bucket (`None`: no cap).
    pub bytes_per_second: Option<u64>,
}

/// How long connecting to the S3 server may take: quick, or not happening.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may go without a byte from the server. Whole transfers may take long, so
/// there is no operation timeout, but a stalled read fails instead of hanging.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Sizes that decide how objects move. All part sizes are at least 5 MiB (S3's minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Uploads larger than this go multipart, in parts of this size; a put holds at most
    /// `PARTS_IN_FLIGHT + 1` parts in memory. Every 1,000 parts the part size doubles, so unknown-length streams still fit in
    /// S3's 10,000 parts.
    pub part_size: u64,
    /// Server-side copies of objects larger than this use UploadPartCopy instead of CopyObject.
    pub copy_threshold: u64,
    /// Part size of UploadPartCopy (no bytes pass through planrun, so it can be large).
    pub copy_part_size: u64,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            part_size: 8 * MIB,
            copy_threshold: 512 * MIB,
            copy_part_size: 256 * MIB,
        }
    }
}

impl S3Storage {
    /// Builds the client. No request is sent; [`Storage::check`](crate::storage::Storage::check) verifies the bucket.
    pub async fn connect(config: &S3Config) -> Result<Self, StorageError> {
        let endpoint = config
            .endpoint
            .as_ref()
            .map(|e| e.trim_end_matches('/').to_string());
        let mut place = Place {
            id: config.name.clone(),
            location: match &endpoint {
                Some(e) => format!("s3 bucket `{}` at {e}", config.bucket),
                None => format!("s3 bucket `{}` on AWS", config.bucket),
            },
            setting: "bucket",
            endpoint_setting: Some("endpoint"),
        };
        let misconfigured = |place: &Place, reason: String| StorageError::Config {
            place: Arc::new(place.clone()),
            reason,
        };
        if config.bucket.is_empty() {
            return Err(misconfigured(
                &place,
                format!(
                    "the bucket name is empty: set `buckets.{}.bucket`",
                    config.name
                ),
            ));
        }
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(misconfigured(
                &place,
                format!(
                    "the endpoint must start with http:// or https://: fix `buckets.{}.endpoint`",
                    config.name
                ),
            ));
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // A streamed copy stops reading its download while it uploads a part, which stalled
            // stream protection mistakes for a dead connection; the read timeout below covers those.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            // Adaptive, not standard: a throttling answer (SlowDown, 503) also slows the
            // client's own sending rate down, so a busy store is asked less, not only later.
            // Attempts stay at the standard three.
            .retry_config(RetryConfig::adaptive())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            );
        match (&config.region, &endpoint) {
            (Some(r), _) => loader = loader.region(Region::new(r.clone())),
            // With a custom endpoint the region only feeds the signature; skip the default
            // chain, which would ask the instance metadata service.
            (None, Some(_)) => loader = loader.region(Region::new("us-east-1")),
            (None, None) => {}
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                let creds = Credentials::new(
                    id.expose(),
                    secret.expose(),
                    config
                        .session_token
                        .as_ref()
                        .map(|t| t.expose().to_string()),
                    None,
                    "planrun-plan",
                );
                loader = loader.credentials_provider(creds);
            }
            // The default chain without IMDS: an S3-compatible server cannot take an EC2 role's
            // keys, and asking for them would send a request off the machine and wait for it.
            (None, None) if !config.instance_metadata => {
                loader = loader.credentials_provider(
                    CredentialsProviderChain::first_try(
                        "Environment",
                        EnvironmentVariableCredentialsProvider::new(),
                    )
                    .or_else("Profile", ProfileFileCredentialsProvider::builder().build())
                    .or_else(
                        "WebIdentityToken",
                        WebIdentityTokenCredentialsProvider::builder().build(),
                    )
                    .or_else("EcsContainer", EcsCredentialsProvider::builder().build()),
                );
            }
            (None, None) => {}
            _ => {
                return Err(misconfigured(
                    &place,
                    format!(
                        "set both `buckets.{0}.access_key_id` and `buckets.{0}.secret_access_key`, or neither \
                         to use the default AWS credentials",
                        config.name
                    ),
                ));
            }
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Only what the operation requires: other S3-compatible servers reject some flexible
            // checksums, and we verify content ourselves with MD5.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &endpoint {
            builder = builder.endpoint_url(e);
        }
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if endpoint.is_none() {
            let region = config
                .region
                .clone()
                .or_else(|| shared.region().map(|r| r.to_string()))
                .unwrap_or_else(|| "us-east-1".into());
            place.location = format!("s3 bucket `{}` on AWS, region `{region}`", config.bucket);
        }
        Ok(S3Storage {
            place: Arc::new(place),
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            endpoint,
            limits: TransferLimits::default(),
            requests: Throttle::new(
                format!("bucket `{}`", config.name),
                "requests",
                Some(config.requests_per_second as f64),
            ),
            bytes: Throttle::new(
                format!("bucket `{}`", config.name),
                "bytes",
                config.bytes_per_second.map(|b| b as f64),
            ),
        })
    }

    /// Replaces the transfer sizes (tests lower them to exercise multipart paths on small objects).
    pub fn with_limits(mut self, limits: TransferLimits) -> Result<Self, StorageError> {
        for (name, v) in [
            ("part_size", limits.part_size),
            ("copy_part_size", limits.copy_part_size),
        ] {
            if !(MIN_PART..=MAX_PART).contains(&v) {
                return Err(StorageError::Config {
                    place: self.place.clone(),
                    reason: format!("{name} {v} is outside S3's part size limits (5 MiB to 5 GiB)"),
                });
            }
        }
        if limits.copy_threshold > MAX_PART {
            return Err(StorageError::Config {
                place: self.place.clone(),
                reason: format!(
                    "copy_threshold {} is above CopyObject's 5 GiB limit",
                    limits.copy_threshold
                ),
            });
        }
        self.limits = limits;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_errors_name_the_setting_and_hide_secrets() {
        let mut config = S3Config {
            name: "bucket_a".into(),
            endpoint: Some("127.0.0.1:9000".into()),
            bucket: "bucket-a".into(),
            region: None,
            access_key_id: Some(Secret::new("AKIDSECRETVALUE")),
            secret_access_key: Some(Secret::new("topsecretkey")),
            session_token: None,
            path_style: true,
            instance_metadata: false,
            requests_per_second: 1000,
            bytes_per_second: None,
        };
        let err = S3Storage::connect(&config).await.unwrap_err();
        assert!(
            err.to_string().contains("fix `buckets.bucket_a.endpoint`"),
            "{err}"
        );
        config.endpoint = Some("http://127.0.0.1:9000/".into());
        config.secret_access_key = None;
        let err = S3Storage::connect(&config).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("`buckets.bucket_a.secret_access_key`"),
            "{err}"
        );
        config.secret_access_key = Some(Secret::new("topsecretkey"));
        let s = S3Storage::connect(&config).await.unwrap();
        assert_eq!(s.endpoint(), Some("http://127.0.0.1:9000"));
        let shown = format!("{s:?} {config:?}");
        assert!(
            !shown.contains("topsecretkey") && !shown.contains("AKIDSECRETVALUE"),
            "{shown}"
        );
        let err = s
            .with_limits(TransferLimits {
                part_size: 1024,
                ..TransferLimits::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("part_size 1024"), "{err}");
    }
}
