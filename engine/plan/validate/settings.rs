//! The top of the file: `version`, `name`, `[vars]` and `[settings]`.

use std::ops::Range;

use minijinja::Value;

use crate::plan::diag::Diag;
use crate::plan::load::RawPlan;
use crate::plan::model::{DEFAULT_FILE_BYTES, DEFAULT_READERS, Settings};
use crate::plan::raw::{RawSettings, Sp};

use super::context::Ctx;

pub(super) fn check_version(version: &Option<Sp<i64>>, diags: &mut Vec<Diag>) {
    match version {
        Some(v) if *v.get() == 1 => {}
        Some(v) => diags.push(
            Diag::new(
                v.span(),
                format!("unsupported plan version {}", v.get()),
                "unsupported",
            )
            .help("this planrun reads `version = 1`"),
        ),
        None => diags.push(
            Diag::new(0..0, "the plan has no `version`", "missing").help("add `version = 1`"),
        ),
    }
}

/// The plan's `name`, rendered; `None` when missing, empty or broken.
pub(super) fn plan_name(cx: &mut Ctx, name: &Option<Sp<String>>) -> Option<String> {
    match name {
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
    }
}

/// Renders each var's strings (they may use `env`, not other vars), then hands the var to the
/// renderer so later strings can use it.
pub(super) fn set_vars(cx: &mut Ctx, raw: &RawPlan) {
    for (key, kspan, v) in &raw.vars {
        if let Some((value, tainted)) = var_value(cx, key, kspan, v) {
            cx.r.set_var(key, Value::from_serialize(&value), tainted);
        }
    }
}

/// One var rendered, and whether it used `env`; `None` when it cannot be used.
fn var_value(
    cx: &mut Ctx,
    key: &str,
    kspan: &Range<usize>,
    v: &Sp<toml::Value>,
) -> Option<(toml::Value, bool)> {
    let mut tainted = false;
    let mut ok = true;
    let mut render = |s: &str, cx: &mut Ctx| -> toml::Value {
        match cx.r.render_var(s) {
            Ok(r) => {
                tainted |= r.tainted;
                cx.masks.env_values.extend(r.env_values);
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
        toml::Value::String(s) => render(s, cx),
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => render(s, cx),
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
            return None;
        }
        other => other.clone(),
    };
    ok.then_some((value, tainted))
}

/// `[settings]` with defaults for what it leaves out.
pub(super) fn settings(cx: &mut Ctx, raw: &Option<RawSettings>) -> Settings {
    let mut settings = Settings {
        concurrency: 4,
        collections: 4,
        imports: 4,
        copies: 32,
        retries: 5,
        pipeline: true,
        state_dir: cx.dir.join(".planrun"),
        readers: DEFAULT_READERS,
        file_bytes: DEFAULT_FILE_BYTES,
    };
    let Some(s) = raw else {
        return settings;
    };
    if let Some(c) = in_range(
        cx.diags,
        &s.concurrency,
        1..=1024,
        "concurrency",
        "between 1 and 1024",
        4,
    ) {
        settings.concurrency = c as usize;
    }
    for (value, key, default, slot) in [
        (&s.collections, "collections", 4, &mut settings.collections),
        (&s.imports, "imports", 4, &mut settings.imports),
        (&s.copies, "copies", 32, &mut settings.copies),
    ] {
        if let Some(c) = in_range(
            cx.diags,
            value,
            1..=1024,
            key,
            "between 1 and 1024",
            default,
        ) {
            *slot = c as usize;
        }
    }
    if let Some(r) = in_range(
        cx.diags,
        &s.readers,
        1..=64,
        "readers",
        "between 1 and 64",
        DEFAULT_READERS,
    ) {
        settings.readers = r as usize;
    }
    if let Some(b) = in_range(
        cx.diags,
        &s.file_bytes,
        1..=(1 << 40),
        "file_bytes",
        "between 1 and 1099511627776 (1 TiB)",
        DEFAULT_FILE_BYTES,
    ) {
        settings.file_bytes = b;
    }
    if let Some(r) = in_range(cx.diags, &s.retries, 0..=100, "retries", "at most 100", 5) {
        settings.retries = r as u32;
    }
    if let Some(p) = &s.pipeline {
        settings.pipeline = *p.get();
    }
    if let Some(d) = cx.path(&s.state_dir) {
        settings.state_dir = d;
    }
    settings
}

/// The value of a numeric setting when it is in `range`; else an error and `None`.
pub(super) fn in_range(
    diags: &mut Vec<Diag>,
    value: &Option<Sp<u64>>,
    range: std::ops::RangeInclusive<u64>,
    key: &str,
    bounds: &str,
    default: impl std::fmt::Display,
) -> Option<u64> {
    let v = value.as_ref()?;
    if range.contains(v.get()) {
        return Some(*v.get());
    }
    diags.push(
        Diag::new(
            v.span(),
            format!("`{key}` must be {bounds}"),
            "out of range",
        )
        .help(format!("the default is {default}")),
    );
    None
}
