//! `[instances.<id>]`: Milvus servers, their credentials, TLS and data location.

use std::collections::BTreeMap;

use crate::plan::diag::Diag;
use crate::plan::load::RawPlan;
use crate::plan::location::Location;
use crate::plan::model::{DEFAULT_REQUESTS_PER_SECOND, Instance, Tls};
use crate::plan::raw::{RawInstance, RawMilvus};

use super::context::Ctx;
use super::names::{check_http_url, uri_host};
use super::settings::in_range;

/// The instances, and each one's `data` location in file order (no step may write there).
pub(super) fn instances(
    cx: &mut Ctx,
    raw: &RawPlan,
) -> (BTreeMap<String, Instance>, Vec<(String, Location)>) {
    let mut out = BTreeMap::new();
    let mut data = Vec::new();
    for e in &raw.instances {
        let RawInstance::Milvus(m) = &e.raw;
        let i = milvus(cx, &e.id, m);
        if let Some(d) = &i.data {
            data.push((e.id.clone(), d.clone()));
        }
        out.insert(e.id.clone(), i);
    }
    (out, data)
}

fn milvus(cx: &mut Ctx, id: &str, m: &RawMilvus) -> Instance {
    let uri = cx.text(&m.uri).unwrap_or_default();
    let host = match uri_host(&uri) {
        Ok(h) => Some(h),
        Err(msg) => {
            cx.diags.push(
                Diag::new(
                    m.uri.span(),
                    format!("bad uri for instance `{id}`: {msg}"),
                    "not an http(s) URI",
                )
                .help("e.g. `uri = \"http://127.0.0.1:19530\"`"),
            );
            None
        }
    };
    let user = cx.opt_text(&m.user);
    let password = cx.secret(&m.password);
    let token = cx.secret(&m.token);
    check_credentials(cx.diags, id, m);
    let tls = tls(cx, m);
    let data = m.data.as_ref().and_then(|d| cx.location(d));
    let management = match &m.management {
        Some(sp) => {
            let v = cx.text(sp);
            if let Some(v) = &v {
                check_http_url(
                    cx,
                    sp,
                    v,
                    "management address",
                    "management = \"http://127.0.0.1:9091\"",
                );
            }
            v
        }
        // Milvus serves its management API on 9091 of the same host when its proxy is on the
        // default 19530. For any other port (a second instance on the host) 9091 may be another
        // instance's, whose GC a backup would pause instead: no guess, the preview says so.
        None => {
            let port = uri
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
            host.filter(|_| port.is_none_or(|p| p == 19530))
                .map(|h| format!("http://{h}:9091"))
        }
    };
    Instance {
        id: id.to_string(),
        uri,
        user,
        password,
        token,
        database: cx.opt_text(&m.database),
        tls,
        data,
        management,
        timeout: m.timeout.as_ref().map(|t| *t.get()),
        requests_per_second: in_range(
            cx.diags,
            &m.requests_per_second,
            1..=1_000_000,
            "requests_per_second",
            "between 1 and 1000000",
            DEFAULT_REQUESTS_PER_SECOND,
        )
        .unwrap_or(DEFAULT_REQUESTS_PER_SECOND),
    }
}

/// Either a token or a user with an optional password.
fn check_credentials(diags: &mut Vec<Diag>, id: &str, m: &RawMilvus) {
    if let (Some(t), true) = (&m.token, m.user.is_some() || m.password.is_some()) {
        diags.push(
            Diag::new(
                t.span(),
                "`token` together with `user`/`password`",
                "choose one",
            )
            .help("use either `token` or `user` + `password`"),
        );
    }
    if let (Some(p), None) = (&m.password, &m.user) {
        diags.push(
            Diag::new(
                p.span(),
                format!("instance `{id}` has a `password` but no `user`"),
                "password without user",
            )
            .help("add `user = \"root\"` (or the user this password belongs to)"),
        );
    }
}

/// TLS settings, when any is given; a client certificate needs its key.
fn tls(cx: &mut Ctx, m: &RawMilvus) -> Option<Tls> {
    if m.ca_cert.is_none()
        && m.client_cert.is_none()
        && m.client_key.is_none()
        && m.server_name.is_none()
    {
        return None;
    }
    if let (Some(sp), None) | (None, Some(sp)) = (&m.client_cert, &m.client_key) {
        cx.diags.push(
            Diag::new(
                sp.span(),
                "`client_cert` and `client_key` go together",
                "half of a pair",
            )
            .help("mutual TLS needs both the certificate and its key"),
        );
    }
    Some(Tls {
        ca_cert: cx.path(&m.ca_cert),
        client_cert: cx.path(&m.client_cert),
        client_key: cx.path(&m.client_key),
        server_name: cx.opt_text(&m.server_name),
    })
}
