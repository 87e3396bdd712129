//! Resolution and checks: `RawPlan` → `Plan` (templates rendered, references and rules checked).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use minijinja::Value;

use super::diag::{Diag, suggest};
use super::load::{RawBucket, RawInstance, RawPlan, RawStep};
use super::model::*;
use super::raw::{RawCollectionRef, RawMode, RawOnConflict, Sp};
use super::template::{Renderer, TemplateError};
use crate::secret::Secret;

/// Where each resolved value came from, for errors found after resolution (cycles, overlaps).
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub step_ids: BTreeMap<String, Range<usize>>,
    /// Per step: span of each `needs` entry by target id.
    pub needs: BTreeMap<String, BTreeMap<String, Range<usize>>>,
}

struct Ctx<'a> {
    r: Renderer,
    text: &'a str,
    diags: &'a mut Vec<Diag>,
    tainted: BTreeSet<String>,
    /// Values of env vars used by non-secret strings: masked in every message.
    env_values: BTreeSet<String>,
    dir: PathBuf,
    bucket_ids: Vec<String>,
}

impl Ctx<'_> {
    fn text(&mut self, sp: &Sp<String>) -> Option<String> {
        match self.r.render(sp.get()) {
            Ok(r) => {
                if r.tainted {
                    self.tainted.insert(r.value.clone());
                }
                self.env_values.extend(r.env_values);
                Some(r.value)
            }
            Err(e) => {
                let span = self.inner_span(sp, &e);
                self.diags.push(
                    Diag::new(span, format!("template error: {e}"), e.label()).help(
                        "templates can use `vars.NAME` and `env.NAME`; give a fallback with \
                         `| default('value')`",
                    ),
                );
                None
            }
        }
    }

    /// The part of the string the error is about, when the string is written without escapes
    /// (so template offsets equal file offsets); else the whole string.
    fn inner_span(&self, sp: &Sp<String>, e: &TemplateError) -> Range<usize> {
        let span = sp.span();
        let written = self.text.get(span.clone()).unwrap_or("");
        let plain = written.len() == sp.get().len() + 2
            && (written.starts_with('"') || written.starts_with('\''))
            && &written[1..written.len() - 1] == sp.get();
        match (&e.at, plain) {
            (Some(at), true) if at.end <= sp.get().len() => {
                span.start + 1 + at.start..span.start + 1 + at.end.max(at.start + 1)
            }
            _ => span,
        }
    }

    fn opt_text(&mut self, sp: &Option<Sp<String>>) -> Option<String> {
        sp.as_ref().and_then(|s| self.text(s))
    }

    /// Renders a secret; it is never recorded anywhere displayable.
    fn secret(&mut self, sp: &Option<Sp<String>>) -> Option<Secret> {
        let sp = sp.as_ref()?;
        match self.r.render(sp.get()) {
            Ok(r) => Some(Secret::new(r.value)),
            Err(e) => {
                let span = self.inner_span(sp, &e);
                self.diags.push(
                    Diag::new(span, format!("template error: {e}"), e.label())
                        .help("give a fallback with `| default('value')` or set the variable"),
                );
                None
            }
        }
    }

    fn path(&mut self, sp: &Option<Sp<String>>) -> Option<PathBuf> {
        self.opt_text(sp).map(|p| self.dir.join(p))
    }

    fn location(&mut self, sp: &Sp<String>) -> Option<Location> {
        let text = self.text(sp)?;
        let Some((bucket, path)) = text.split_once(':') else {
            self.diags.push(
                Diag::new(
                    sp.span(),
                    format!("`{}` is not a location", mask_if(&self.tainted, &text)),
                    "expected `<bucket id>:<path>`",
                )
                .help(format!(
                    "write a bucket id, a colon and a path, e.g. `{}:backup/x`",
                    self.bucket_ids.first().map_or("bucket_a", String::as_str)
                )),
            );
            return None;
        };
        if !self.bucket_ids.iter().any(|b| b == bucket) {
            self.diags.push(
                Diag::new(
                    sp.span(),
                    format!("unknown bucket `{bucket}` in location"),
                    "no bucket with this id",
                )
                .help(suggest(
                    bucket,
                    "buckets",
                    self.bucket_ids.iter().map(String::as_str),
                )),
            );
            return None;
        }
        match Location::new(bucket, path) {
            Ok(loc) => {
                if self.tainted.contains(&text) {
                    self.tainted.insert(loc.to_string());
                    self.tainted.insert(loc.path.clone());
                }
                Some(loc)
            }
            Err(e) => {
                self.diags.push(
                    Diag::new(sp.span(), format!("bad location: {e}"), "bad path").help(
                        "paths are `/`-separated names under the bucket, without `.` or `..`",
                    ),
                );
                None
            }
        }
    }
}

fn mask_if<'a>(tainted: &BTreeSet<String>, v: &'a str) -> &'a str {
    if tainted.contains(v) { "***" } else { v }
}

/// Is this a collection pattern we accept: `name`, `db.name`, globs with `*`, `?`, `[...]`.
fn check_collection(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        return Err("at most one `.` (between database and collection)".into());
    }
    for p in parts {
        if p.is_empty() {
            return Err("empty database or collection name".into());
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-*?[]!".contains(*c)))
        {
            return Err(format!("`{c}` cannot appear in a collection name"));
        }
    }
    Ok(())
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The host of an `http(s)://host:port/...` uri, or an error message.
fn uri_host(uri: &str) -> Result<String, String> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .ok_or_else(|| "the uri must start with `http://` or `https://`".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        format!("[{}]", v6.split(']').next().unwrap_or(""))
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() || host == "[]" {
        return Err("the uri has no host".into());
    }
    Ok(host)
}

pub(crate) fn resolve(
    raw: RawPlan,
    text: &str,
    path: &Path,
    process_env: &BTreeMap<String, String>,
    diags: &mut Vec<Diag>,
) -> (Option<Plan>, Spans) {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .canonicalize()
        .unwrap_or_else(|_| {
            let p = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::env::current_dir().unwrap_or_default().join(p)
        });
    let errors_before = diags.len();
    let mut cx = Ctx {
        r: Renderer::new(process_env),
        text,
        diags,
        tainted: BTreeSet::new(),
        env_values: BTreeSet::new(),
        dir,
        bucket_ids: raw.bucket_ids.clone(),
    };
    let mut spans = Spans::default();

    // Top level.
    match &raw.version {
        Some(v) if *v.get() == 1 => {}
        Some(v) => cx.diags.push(
            Diag::new(
                v.span(),
                format!("unsupported plan version {}", v.get()),
                "unsupported",
            )
            .help("this planrun reads `version = 1`"),
        ),
        None => cx.diags.push(
            Diag::new(0..0, "the plan has no `version`", "missing").help("add `version = 1`"),
        ),
    }
    let name = match &raw.name {
        Some(n) if n.get().trim().is_empty() => {
            cx.diags.push(
                Diag::new(n.span(), "the plan name is empty", "empty")
                    .help("give the plan a short name, e.g. `name = \"migrate-coll\"`"),
            );
            None
        }
        Some(n) => cx.text(n),
        None => {
            cx.diags.push(
                Diag::new(0..0, "the plan has no `name`", "missing")
                    .help("add `name = \"...\"`: it names the plan's runs"),
            );
            None
        }
    };

    // Vars: render their strings (they may use env), then expose them to templates.
    for (key, kspan, v) in &raw.vars {
        let mut tainted = false;
        let mut ok = true;
        let mut render = |s: &str, cx: &mut Ctx| -> toml::Value {
            match cx.r.render_var(s) {
                Ok(r) => {
                    tainted |= r.tainted;
                    cx.env_values.extend(r.env_values);
                    toml::Value::String(r.value)
                }
                Err(e) => {
                    ok = false;
                    cx.diags.push(
                        Diag::new(
                            v.span(),
                            format!("template error in var `{key}`: {e}"),
                            "here",
                        )
                        .help("vars may use `env.NAME` (with `| default('x')`), not other vars"),
                    );
                    toml::Value::String(String::new())
                }
            }
        };
        let value = match v.get() {
            toml::Value::String(s) => render(s, &mut cx),
            toml::Value::Array(items) => toml::Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => render(s, &mut cx),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            toml::Value::Table(_) | toml::Value::Datetime(_) => {
                cx.diags.push(
                    Diag::new(
                        kspan.clone(),
                        format!("var `{key}` must be a string, number, boolean or list"),
                        "unsupported value",
                    )
                    .help("flatten it into several vars"),
                );
                continue;
            }
            other => other.clone(),
        };
        if ok {
            cx.r.set_var(key, Value::from_serialize(&value), tainted);
        }
    }

    // Settings.
    let mut settings = Settings {
        concurrency: 4,
        retries: 5,
        state_dir: cx.dir.join(".planrun"),
    };
    if let Some(s) = &raw.settings {
        if let Some(c) = &s.concurrency {
            if *c.get() == 0 || *c.get() > 1024 {
                cx.diags.push(
                    Diag::new(
                        c.span(),
                        "`concurrency` must be between 1 and 1024",
                        "out of range",
                    )
                    .help("the default is 4"),
                );
            } else {
                settings.concurrency = *c.get() as usize;
            }
        }
        if let Some(r) = &s.retries {
            if *r.get() > 100 {
                cx.diags.push(
                    Diag::new(r.span(), "`retries` must be at most 100", "out of range")
                        .help("the default is 5"),
                );
            } else {
                settings.retries = *r.get() as u32;
            }
        }
        if let Some(d) = cx.path(&s.state_dir) {
            settings.state_dir = d;
        }
    }

    // Buckets.
    let mut buckets = BTreeMap::new();
    for e in &raw.buckets {
        let kind = match &e.raw {
            RawBucket::S3(s) => {
                let endpoint = cx.opt_text(&s.endpoint);
                if let (Some(ep), Some(sp)) = (&endpoint, &s.endpoint)
                    && let Err(msg) = uri_host(ep)
                {
                    cx.diags.push(
                        Diag::new(
                            sp.span(),
                            format!("bad endpoint: {msg}"),
                            "not an http(s) URL",
                        )
                        .help("e.g. `endpoint = \"http://127.0.0.1:9000\"`"),
                    );
                }
                let bucket = cx.text(&s.bucket).unwrap_or_default();
                let valid = (3..=63).contains(&bucket.len())
                    && bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    });
                if !valid && !cx.tainted.contains(&bucket) {
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
                match (&s.access_key_id, &s.secret_access_key) {
                    (Some(a), None) => cx.diags.push(
                        Diag::new(
                            a.span(),
                            "`access_key_id` without `secret_access_key`",
                            "alone",
                        )
                        .help("give both keys, or neither to use the AWS credential chain"),
                    ),
                    (None, Some(k)) => cx.diags.push(
                        Diag::new(
                            k.span(),
                            "`secret_access_key` without `access_key_id`",
                            "alone",
                        )
                        .help("give both keys, or neither to use the AWS credential chain"),
                    ),
                    _ => {}
                }
                BucketKind::S3 {
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
                }
            }
            RawBucket::Local(l) => BucketKind::Local {
                path: cx.path(&Some(l.path.clone())).unwrap_or_default(),
            },
        };
        buckets.insert(
            e.id.clone(),
            Bucket {
                id: e.id.clone(),
                kind,
            },
        );
    }

    // Instances.
    let mut instances = BTreeMap::new();
    let mut data_spans: Vec<(String, Location)> = Vec::new();
    for e in &raw.instances {
        let RawInstance::Milvus(m) = &e.raw;
        let uri = cx.text(&m.uri).unwrap_or_default();
        let host = match uri_host(&uri) {
            Ok(h) => Some(h),
            Err(msg) => {
                cx.diags.push(
                    Diag::new(
                        m.uri.span(),
                        format!("bad uri for instance `{}`: {msg}", e.id),
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
        if let (Some(t), true) = (&m.token, m.user.is_some() || m.password.is_some()) {
            cx.diags.push(
                Diag::new(
                    t.span(),
                    "`token` together with `user`/`password`",
                    "choose one",
                )
                .help("use either `token` or `user` + `password`"),
            );
        }
        if let (Some(p), None) = (&m.password, &m.user) {
            cx.diags.push(
                Diag::new(
                    p.span(),
                    format!("instance `{}` has a `password` but no `user`", e.id),
                    "password without user",
                )
                .help("add `user = \"root\"` (or the user this password belongs to)"),
            );
        }
        let tls = if m.ca_cert.is_some()
            || m.client_cert.is_some()
            || m.client_key.is_some()
            || m.server_name.is_some()
        {
            if m.client_cert.is_some() != m.client_key.is_some() {
                let sp = m
                    .client_cert
                    .as_ref()
                    .or(m.client_key.as_ref())
                    .expect("one is set");
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
        } else {
            None
        };
        let data = m.data.as_ref().and_then(|d| cx.location(d));
        if let Some(d) = &data {
            data_spans.push((e.id.clone(), d.clone()));
        }
        let management = match &m.management {
            Some(sp) => {
                let v = cx.text(sp);
                if let Some(v) = &v
                    && let Err(msg) = uri_host(v)
                {
                    cx.diags.push(
                        Diag::new(
                            sp.span(),
                            format!("bad management address: {msg}"),
                            "not an http(s) URL",
                        )
                        .help("e.g. `management = \"http://127.0.0.1:9091\"`"),
                    );
                }
                v
            }
            None => host.map(|h| format!("http://{h}:9091")),
        };
        instances.insert(
            e.id.clone(),
            Instance {
                id: e.id.clone(),
                uri,
                user,
                password,
                token,
                database: cx.opt_text(&m.database),
                tls,
                data,
                management,
                timeout: m.timeout.as_ref().map(|t| *t.get()),
            },
        );
    }

    // Steps.
    let step_ids: Vec<&str> = raw.step_ids.iter().map(|(s, _)| s.as_str()).collect();
    let instance_ids: Vec<&str> = raw.instance_ids.iter().map(String::as_str).collect();
    let mut steps = Vec::new();
    // Per step: span of its `to` (for write checks) and of its naming (for collisions).
    let mut to_spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
    let mut naming_spans: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for (id, span) in &raw.step_ids {
        spans.step_ids.entry(id.clone()).or_insert(span.clone());
    }
    for e in &raw.steps {
        let needs_raw = match &e.raw {
            RawStep::Backup(b) => &b.needs,
            RawStep::Copy(c) => &c.needs,
            RawStep::Restore(r) => &r.needs,
            RawStep::Verify(v) => &v.needs,
            RawStep::Alias(a) => &a.needs,
        };
        let mut needs = Vec::new();
        let mut need_spans = BTreeMap::new();
        for n in needs_raw.iter().flatten() {
            let target = n.get();
            if target == &e.id {
                cx.diags.push(
                    Diag::new(
                        n.span(),
                        format!("step `{}` needs itself", e.id),
                        "self-dependency",
                    )
                    .help("remove it from `needs`"),
                );
            } else if !step_ids.contains(&target.as_str()) {
                cx.diags.push(
                    Diag::new(
                        n.span(),
                        format!("unknown step `{target}` in `steps.{}.needs`", e.id),
                        "no step with this id",
                    )
                    .help(suggest(target, "steps", step_ids.iter().copied())),
                );
            } else if !needs.contains(target) {
                needs.push(target.clone());
                need_spans.insert(target.clone(), n.span());
            }
        }
        spans.needs.insert(e.id.clone(), need_spans);
        let instance_ref = |cx: &mut Ctx, sp: &Sp<String>| -> Option<String> {
            if instance_ids.contains(&sp.get().as_str()) {
                Some(sp.get().clone())
            } else {
                cx.diags.push(
                    Diag::new(
                        sp.span(),
                        format!(
                            "unknown instance `{}` in `steps.{}.instance`",
                            sp.get(),
                            e.id
                        ),
                        "no instance with this id",
                    )
                    .help(suggest(
                        sp.get(),
                        "instances",
                        instance_ids.iter().copied(),
                    )),
                );
                None
            }
        };
        let collections = |cx: &mut Ctx, list: &[Sp<String>], key: &str| -> Vec<String> {
            let mut out = Vec::new();
            for c in list {
                if let Some(v) = cx.text(c) {
                    if let Err(msg) = check_collection(&v) {
                        cx.diags.push(
                            Diag::new(
                                c.span(),
                                format!(
                                    "bad collection `{}` in `steps.{}.{key}`: {msg}",
                                    mask_if(&cx.tainted, &v),
                                    e.id
                                ),
                                "bad name",
                            )
                            .help("write `name`, `db.name` or a glob such as `db.*` or `logs_*`"),
                        );
                    }
                    out.push(v);
                }
            }
            out
        };
        let kind = match &e.raw {
            RawStep::Backup(b) => {
                let instance = instance_ref(&mut cx, &b.instance);
                if b.collections.is_empty() {
                    cx.diags.push(
                        Diag::new(
                            e.id_span.clone(),
                            format!("backup step `{}` lists no collections", e.id),
                            "empty `collections`",
                        )
                        .help("list at least one collection, or `*` for all of them"),
                    );
                }
                let colls = collections(&mut cx, &b.collections, "collections");
                let to = cx.location(&b.to);
                to_spans.insert(e.id.clone(), b.to.span());
                let has_data = instance
                    .as_ref()
                    .and_then(|i| instances.get(i))
                    .is_some_and(|i: &Instance| i.data.is_some());
                let mode = match b.mode.as_ref().map(|m| (*m.get(), m.span())) {
                    Some((RawMode::Binlog, span)) => {
                        if let Some(i) = &instance
                            && instances.contains_key(i)
                            && !has_data
                        {
                            cx.diags.push(
                                Diag::new(span, format!("binlog mode needs `data` on instance `{i}`"), "binlog mode")
                                    .help(format!("add `data = \"<bucket id>:<rootPath>\"` to `[instances.{i}]`, or use `mode = \"rows\"`")),
                            );
                        }
                        Mode::Binlog
                    }
                    Some((RawMode::Rows, _)) => Mode::Rows,
                    None if has_data => Mode::Binlog,
                    None => Mode::Rows,
                };
                match (instance, to) {
                    (Some(instance), Some(to)) => Some(StepKind::Backup(BackupStep {
                        instance,
                        collections: colls,
                        to,
                        mode,
                    })),
                    _ => None,
                }
            }
            RawStep::Copy(c) => {
                let from = cx.location(&c.from);
                let to = cx.location(&c.to);
                to_spans.insert(e.id.clone(), c.to.span());
                match (from, to) {
                    (Some(from), Some(to)) => {
                        if from.overlaps(&to) {
                            cx.diags.push(
                                Diag::new(
                                    c.to.span(),
                                    format!("copy step `{}` copies `{}` into itself", e.id, from),
                                    "overlaps `from`",
                                )
                                .help("copy to a location outside the source, e.g. another bucket"),
                            );
                        }
                        Some(StepKind::Copy(CopyStep { from, to }))
                    }
                    _ => None,
                }
            }
            RawStep::Restore(r) => {
                let instance = instance_ref(&mut cx, &r.instance);
                let from = cx.location(&r.from);
                let filter = r
                    .collections
                    .as_ref()
                    .map(|l| collections(&mut cx, l, "collections"));
                let naming = match (&r.suffix, &r.rename) {
                    (Some(s), Some(_)) => {
                        cx.diags.push(
                            Diag::new(s.span(), "`suffix` and `rename` together", "choose one")
                                .help("use `suffix` to rename every collection, or `rename` for explicit names"),
                        );
                        Naming::Keep
                    }
                    (Some(s), None) => {
                        naming_spans.insert(e.id.clone(), s.span());
                        match cx.text(s) {
                            Some(v) if v.is_empty() => {
                                cx.diags
                                    .push(Diag::new(s.span(), "empty `suffix`", "empty").help(
                                    "remove `suffix` to keep the names, or give one like `_bak`",
                                ));
                                Naming::Keep
                            }
                            Some(v) => Naming::Suffix(v),
                            None => Naming::Keep,
                        }
                    }
                    (None, Some(map)) => {
                        let mut out = BTreeMap::new();
                        for (k, v) in map {
                            naming_spans.entry(e.id.clone()).or_insert(v.span());
                            if let Some(new) = cx.text(v) {
                                if let Err(msg) = check_collection(&new).and_then(|_| {
                                    if is_glob(&new) || new.contains('.') {
                                        Err("a new name is a plain collection name".into())
                                    } else {
                                        Ok(())
                                    }
                                }) {
                                    cx.diags.push(
                                        Diag::new(v.span(), format!("bad new name `{new}` for `{k}`: {msg}"), "bad name")
                                            .help("use letters, digits and `_`; set the database with `database`"),
                                    );
                                }
                                out.insert(k.clone(), new);
                            }
                        }
                        Naming::Rename(out)
                    }
                    (None, None) => Naming::Keep,
                };
                naming_spans
                    .entry(e.id.clone())
                    .or_insert(r.instance.span());
                let on_conflict = match r.on_conflict.as_ref().map(|o| *o.get()) {
                    None | Some(RawOnConflict::Fail) => OnConflict::Fail,
                    Some(RawOnConflict::Skip) => OnConflict::Skip,
                    Some(RawOnConflict::Drop) => OnConflict::Drop,
                };
                let database = cx.opt_text(&r.database);
                match (instance, from) {
                    (Some(instance), Some(from)) => Some(StepKind::Restore(RestoreStep {
                        instance,
                        from,
                        collections: filter,
                        naming,
                        database,
                        on_conflict,
                        indexes: r.indexes.as_ref().is_none_or(|v| *v.get()),
                        load: r.load.as_ref().is_none_or(|v| *v.get()),
                    })),
                    _ => None,
                }
            }
            RawStep::Verify(v) => {
                let cref = |cx: &mut Ctx, c: &RawCollectionRef| -> Option<CollectionRef> {
                    let instance = instance_ref(cx, &c.instance);
                    let collection = cx.text(&c.collection)?;
                    if let Err(msg) = check_collection(&collection).and_then(|_| {
                        if is_glob(&collection) {
                            Err("verify compares one named collection, not a pattern".into())
                        } else {
                            Ok(())
                        }
                    }) {
                        cx.diags.push(
                            Diag::new(
                                c.collection.span(),
                                format!(
                                    "bad collection `{}` in `steps.{}`: {msg}",
                                    mask_if(&cx.tainted, &collection),
                                    e.id
                                ),
                                "bad name",
                            )
                            .help("write `name` or `db.name`"),
                        );
                    }
                    let (db, coll) = match collection.split_once('.') {
                        Some((d, c)) => (Some(d.to_string()), c.to_string()),
                        None => (None, collection),
                    };
                    let database = cx.opt_text(&c.database).or(db);
                    Some(CollectionRef {
                        instance: instance?,
                        collection: coll,
                        database,
                    })
                };
                match (&v.source, &v.target, &v.restore) {
                    (Some(src), Some(dst), None) => {
                        let source = cref(&mut cx, src);
                        let target = cref(&mut cx, dst);
                        match (source, target) {
                            (Some(source), Some(target)) => {
                                if source == target {
                                    cx.diags.push(
                                        Diag::new(
                                            dst.collection.span(),
                                            format!("verify step `{}` compares a collection with itself", e.id),
                                            "same as `source`",
                                        )
                                        .help("`target` is the copy to check, e.g. the restored collection"),
                                    );
                                }
                                Some(StepKind::Verify(VerifyStep::Pair { source, target }))
                            }
                            _ => None,
                        }
                    }
                    (None, None, Some(r)) => {
                        let target = r.get();
                        let is_restore = raw
                            .steps
                            .iter()
                            .any(|s| &s.id == target && matches!(s.raw, RawStep::Restore(_)));
                        if !is_restore {
                            let restores: Vec<&str> = raw
                                .steps
                                .iter()
                                .filter(|s| matches!(s.raw, RawStep::Restore(_)))
                                .map(|s| s.id.as_str())
                                .collect();
                            cx.diags.push(
                                Diag::new(
                                    r.span(),
                                    format!(
                                        "`{target}` in `steps.{}.restore` is not a restore step",
                                        e.id
                                    ),
                                    "no restore step with this id",
                                )
                                .help(suggest(
                                    target,
                                    "restore steps",
                                    restores.iter().copied(),
                                )),
                            );
                            None
                        } else {
                            // The verify runs after the restore it checks.
                            if !needs.contains(target) {
                                needs.push(target.clone());
                                if let Some(n) = spans.needs.get_mut(&e.id) {
                                    n.insert(target.clone(), r.span());
                                }
                            }
                            Some(StepKind::Verify(VerifyStep::Restore(target.clone())))
                        }
                    }
                    _ => {
                        cx.diags.push(
                            Diag::new(
                                e.id_span.clone(),
                                format!("verify step `{}` needs either `source` and `target`, or `restore`", e.id),
                                "what to compare?",
                            )
                            .help("write `source = { instance = \"a\", collection = \"c\" }` and `target = { ... }`, or `restore = \"<restore step id>\"`"),
                        );
                        None
                    }
                }
            }
            RawStep::Alias(a) => {
                let instance = instance_ref(&mut cx, &a.instance);
                let alias = cx.text(&a.alias);
                let collection = cx.text(&a.collection);
                for (sp, v) in [(&a.alias, &alias), (&a.collection, &collection)] {
                    if let Some(v) = v
                        && let Err(msg) = check_collection(v).and_then(|_| {
                            if is_glob(v) || v.contains('.') {
                                Err(
                                    "a plain name is needed here; set the database with `database`"
                                        .into(),
                                )
                            } else {
                                Ok(())
                            }
                        })
                    {
                        cx.diags.push(
                            Diag::new(
                                sp.span(),
                                format!(
                                    "bad name `{}` in `steps.{}`: {msg}",
                                    mask_if(&cx.tainted, v),
                                    e.id
                                ),
                                "bad name",
                            )
                            .help("use letters, digits and `_`"),
                        );
                    }
                }
                // A cutover is only safe once the copy is proven equal to its source.
                let verified = needs.iter().any(|n| {
                    raw.steps
                        .iter()
                        .any(|s| &s.id == n && matches!(s.raw, RawStep::Verify(_)))
                });
                if !verified {
                    let verifies: Vec<&str> = raw
                        .steps
                        .iter()
                        .filter(|s| matches!(s.raw, RawStep::Verify(_)))
                        .map(|s| s.id.as_str())
                        .collect();
                    let help = if verifies.is_empty() {
                        "add a `type = \"verify\"` step that compares the collection with its source, and list it in `needs`".to_string()
                    } else {
                        format!("add `needs = [\"{}\"]`", verifies.join("\", \""))
                    };
                    cx.diags.push(
                        Diag::new(
                            e.id_span.clone(),
                            format!("alias step `{}` does not need a verify step", e.id),
                            "moves an alias without a verified copy",
                        )
                        .help(help),
                    );
                }
                match (instance, alias, collection) {
                    (Some(instance), Some(alias), Some(collection)) => {
                        Some(StepKind::Alias(AliasStep {
                            instance,
                            alias,
                            collection,
                            database: cx.opt_text(&a.database),
                        }))
                    }
                    _ => None,
                }
            }
        };
        if let Some(kind) = kind {
            steps.push(Step {
                id: e.id.clone(),
                needs,
                kind,
            });
        }
    }

    // Writes: never into an instance's live data, never two steps into the same place.
    for (i, s) in steps.iter().enumerate() {
        for w in s.kind.writes() {
            let span = to_spans.get(&s.id).cloned().unwrap_or(0..0);
            if w.path.is_empty() {
                cx.diags.push(
                    Diag::new(
                        span.clone(),
                        format!(
                            "step `{}` writes to the root of bucket `{}`",
                            s.id, w.bucket
                        ),
                        "whole bucket",
                    )
                    .help("write under a path, e.g. `bucket:backup/name`"),
                );
            }
            for (inst, data) in &data_spans {
                if data.overlaps(w) {
                    cx.diags.push(
                        Diag::new(span.clone(), format!("step `{}` writes inside the data of instance `{inst}` ({data})", s.id), "Milvus data")
                            .help("write backups outside the instance's rootPath, e.g. `<bucket>:backup/<name>`"),
                    );
                }
            }
            for earlier in &steps[..i] {
                if let Some(o) = earlier.kind.writes().into_iter().find(|o| o.overlaps(w)) {
                    cx.diags.push(
                        Diag::new(
                            span.clone(),
                            format!(
                                "steps `{}` and `{}` both write to `{}`",
                                earlier.id,
                                s.id,
                                cx_show(&cx.tainted, o)
                            ),
                            "written twice",
                        )
                        .help("give each step its own location"),
                    );
                }
            }
        }
    }

    // Restores whose target names collide.
    let mut targets: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for s in &steps {
        let StepKind::Restore(r) = &s.kind else {
            continue;
        };
        let names = match &r.collections {
            Some(list) => list.clone(),
            None => backup_sources(&steps, &r.from, steps.len()),
        };
        let default_db = instances
            .get(&r.instance)
            .and_then(|i| i.database.clone())
            .unwrap_or_else(|| "default".into());
        let mut mine: BTreeSet<(String, String, String)> = BTreeSet::new();
        for n in names.iter().filter(|n| !is_glob(n)) {
            let (db, coll) = match n.split_once('.') {
                Some((d, c)) => (d.to_string(), c.to_string()),
                None => (default_db.clone(), n.clone()),
            };
            let db = r.database.clone().unwrap_or(db);
            let key = (r.instance.clone(), db.clone(), r.naming.apply(&coll));
            let span = naming_spans.get(&s.id).cloned().unwrap_or(0..0);
            if !mine.insert(key.clone()) {
                cx.diags.push(
                    Diag::new(
                        span.clone(),
                        format!(
                            "restore `{}` creates collection `{}` in database `{db}` of `{}` twice",
                            s.id, key.2, r.instance
                        ),
                        "names collide",
                    )
                    .help("give each collection its own new name"),
                );
            } else if let Some(other) = targets.get(&key) {
                cx.diags.push(
                    Diag::new(span, format!("restores `{other}` and `{}` both create collection `{}` in database `{db}` of `{}`", s.id, key.2, r.instance), "names collide")
                        .help("use a different `suffix`, `rename` or `database` for one of them"),
                );
            }
        }
        for key in mine {
            targets.entry(key).or_insert_with(|| s.id.clone());
        }
    }

    let ok = cx.diags.len() == errors_before;
    // Safety net: no message may carry a value that came from the environment.
    for d in cx.diags[errors_before..].iter_mut() {
        d.message = redact(&cx.env_values, &d.message);
        d.label = redact(&cx.env_values, &d.label);
        d.help = d.help.as_ref().map(|h| redact(&cx.env_values, h));
    }
    let tainted = cx.tainted;
    let env_values = cx.env_values;
    let plan = ok.then(|| Plan {
        name: name.unwrap_or_default(),
        path: path.to_path_buf(),
        settings,
        instances,
        buckets,
        steps,
        tainted,
        env_values,
    });
    (plan, spans)
}

/// `text` with every occurrence of the given values replaced by `***`.
pub(crate) fn redact(values: &BTreeSet<String>, text: &str) -> String {
    let mut out = text.to_string();
    // Longest first, so a value containing another is masked whole.
    let mut v: Vec<&String> = values.iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for value in v {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), "***");
        }
    }
    out
}

fn cx_show(tainted: &BTreeSet<String>, loc: &Location) -> String {
    if tainted.contains(&loc.to_string()) {
        format!("{}:***", loc.bucket)
    } else {
        loc.to_string()
    }
}

/// The collections (as written in backup steps) that end up at `loc`, following copies.
fn backup_sources(steps: &[Step], loc: &Location, depth: usize) -> Vec<String> {
    if depth == 0 {
        return vec![];
    }
    let mut out = Vec::new();
    for s in steps {
        match &s.kind {
            StepKind::Backup(b) if b.to.overlaps(loc) => out.extend(b.collections.iter().cloned()),
            StepKind::Copy(c) if c.to.overlaps(loc) => {
                out.extend(backup_sources(steps, &c.from, depth - 1))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_hosts() {
        assert_eq!(uri_host("http://127.0.0.1:19530").unwrap(), "127.0.0.1");
        assert_eq!(
            uri_host("https://u:p@milvus.example/x").unwrap(),
            "milvus.example"
        );
        assert_eq!(uri_host("http://[::1]:19530").unwrap(), "[::1]");
        assert!(uri_host("tcp://x:1").is_err());
        assert!(uri_host("http://").is_err());
    }

    #[test]
    fn collection_patterns() {
        assert!(check_collection("coll").is_ok());
        assert!(check_collection("db.*").is_ok());
        assert!(check_collection("logs_[0-9]*").is_ok());
        assert!(check_collection("a.b.c").is_err());
        assert!(check_collection("my coll").is_err());
        assert!(check_collection(".x").is_err());
    }
}
