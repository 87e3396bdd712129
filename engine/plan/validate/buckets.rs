//! `[buckets.<id>]`: S3 buckets and local directories.

use std::collections::BTreeMap;

use crate::plan::diag::Diag;
use crate::plan::load::RawPlan;
use crate::plan::model::Bucket;
use crate::plan::raw::{RawBucket, RawS3, Sp};
use crate::storage::{LocalConfig, S3Config, StorageConfig};

use super::context::Ctx;
use super::settings::in_range;

/// What a bucket takes at most from planrun when the plan says nothing: well under what one
/// S3 prefix serves (thousands of requests a second on AWS), so a copy of many small binlogs
/// leaves room for the cluster's own traffic.
const DEFAULT_BUCKET_REQUESTS_PER_SECOND: u64 = 1000;
use super::names::check_http_url;

pub(super) fn buckets(cx: &mut Ctx, raw: &RawPlan) -> BTreeMap<String, Bucket> {
    let mut out = BTreeMap::new();
    for e in &raw.buckets {
        let config = match &e.raw {
            RawBucket::S3(s) => StorageConfig::S3(s3(cx, &e.id, s)),
            RawBucket::Local(l) => StorageConfig::Local(LocalConfig {
                name: e.id.clone(),
                path: cx.path(&Some(l.path.clone())).unwrap_or_default(),
            }),
        };
        out.insert(
            e.id.clone(),
            Bucket {
                id: e.id.clone(),
                config,
            },
        );
    }
    out
}

fn s3(cx: &mut Ctx, id: &str, s: &RawS3) -> S3Config {
    let endpoint = cx.opt_text(&s.endpoint);
    if let (Some(ep), Some(sp)) = (&endpoint, &s.endpoint) {
        check_http_url(
            cx,
            sp,
            ep,
            "endpoint",
            "endpoint = \"http://127.0.0.1:9000\"",
        );
    }
    let bucket = cx.text(&s.bucket).unwrap_or_default();
    // A name from `env` is not shown, so it is not judged here either: S3 will say.
    if !is_s3_bucket_name(&bucket) && !cx.masks.tainted.contains(&bucket) {
        cx.diags.push(
            Diag::new(
                s.bucket.span(),
                format!("`{bucket}` is not a valid S3 bucket name"),
                "invalid bucket name",
            )
            .help("3 to 63 characters: lowercase letters, digits, `-` and `.`"),
        );
    }
    let access_key_id = cx.secret(&s.access_key_id);
    let secret_access_key = cx.secret(&s.secret_access_key);
    check_key_pair(cx.diags, &s.access_key_id, &s.secret_access_key);
    let instance_metadata = s
        .instance_metadata
        .as_ref()
        .map_or(endpoint.is_none(), |p| *p.get());
    S3Config {
        name: id.to_string(),
        path_style: s
            .path_style
            .as_ref()
            .map_or(endpoint.is_some(), |p| *p.get()),
        endpoint,
        bucket,
        region: cx.opt_text(&s.region),
        access_key_id,
        secret_access_key,
        session_token: cx.secret(&s.session_token),
        instance_metadata,
        requests_per_second: in_range(
            cx.diags,
            &s.requests_per_second,
            1..=1_000_000,
            "requests_per_second",
            "between 1 and 1000000",
            DEFAULT_BUCKET_REQUESTS_PER_SECOND,
        )
        .unwrap_or(DEFAULT_BUCKET_REQUESTS_PER_SECOND),
        bytes_per_second: in_range(
            cx.diags,
            &s.bytes_per_second,
            1..=u64::MAX,
            "bytes_per_second",
            "at least 1",
            "no cap (leave it out)",
        ),
    }
}

fn is_s3_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Static keys come in pairs; with neither, the AWS credential chain is used.
fn check_key_pair(diags: &mut Vec<Diag>, id: &Option<Sp<String>>, secret: &Option<Sp<String>>) {
    let (alone, [given, absent]) = match (id, secret) {
        (Some(a), None) => (a, ["access_key_id", "secret_access_key"]),
        (None, Some(k)) => (k, ["secret_access_key", "access_key_id"]),
        _ => return,
    };
    diags.push(
        Diag::new(
            alone.span(),
            format!("`{given}` without `{absent}`"),
            "alone",
        )
        .help("give both keys, or neither to use the AWS credential chain"),
    );
}
