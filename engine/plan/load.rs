//! Parsing: plan text → `RawPlan` (typed, spanned), collecting every error of the file.
//!
//! `Spanned` does not survive serde's `tag`/`untagged`/`flatten`, so each entry's `type` key is
//! read by hand, checked against the types of its enum (`raw.rs`: [`Tagged`]), and the rest of
//! the table deserialised as that enum, externally tagged: `{ <type> = <rest> }`.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diag::{Diag, did_you_mean, suggest};
use super::raw::{
    Keys, RawBucket, RawInstance, RawSettings, RawStep, Sp, Tagged, Types, settings_keys,
};

/// One `[<section>.<id>]` entry.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub id: String,
    /// The id in the header (`[steps.backup]` → `backup`).
    pub id_span: Range<usize>,
    /// Its `type`, as [`Tagged::types`] spells it.
    pub ty: &'static str,
    pub raw: T,
}

/// The plan file parsed, nothing resolved yet.
#[derive(Debug, Default)]
pub(crate) struct RawPlan {
    pub version: Option<Sp<i64>>,
    pub name: Option<Sp<String>>,
    pub vars: Vec<(String, Range<usize>, Sp<toml::Value>)>,
    pub settings: Option<RawSettings>,
    pub instances: Vec<Entry<RawInstance>>,
    pub buckets: Vec<Entry<RawBucket>>,
    /// In file order.
    pub steps: Vec<Entry<RawStep>>,
    /// Every declared id, including entries that failed to parse (so references to them do
    /// not cause follow-on errors).
    pub instance_ids: Vec<String>,
    pub bucket_ids: Vec<String>,
    pub step_ids: Vec<(String, Range<usize>)>,
}

impl RawPlan {
    /// True when nothing was parsed (a syntax error or an empty file).
    pub fn is_empty(&self) -> bool {
        self.version.is_none() && self.name.is_none() && self.step_ids.is_empty()
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "vars",
    "settings",
    "instances",
    "buckets",
    "steps",
];

/// Parses `text`; on a TOML syntax error only syntax errors are reported.
pub(crate) fn parse(text: &str, diags: &mut Vec<Diag>) -> RawPlan {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // Only the first: the parser's recovery makes later ones echoes of it.
        let first = errors
            .into_iter()
            .min_by_key(|e| e.span().map_or(usize::MAX, |s| s.start));
        if let Some(e) = first {
            let span = e.span().unwrap_or(0..0);
            diags.push(
                Diag::new(
                    span,
                    format!("TOML syntax error: {}", e.message().trim()),
                    "here",
                )
                .help(if e.message().contains("duplicate key") {
                    "each key, and each `[section.id]` table, may appear only once"
                } else {
                    "fix the TOML syntax; see docs/plan-reference.md"
                }),
            );
        }
        return RawPlan::default();
    }
    let mut plan = RawPlan::default();
    let mut entries: Vec<_> = root.into_inner().into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let kspan = key.span();
        match &**key.get_ref() {
            "version" => plan.version = de(value, text, diags),
            "name" => plan.name = de(value, text, diags),
            "vars" => {
                for (k, v) in table_entries(value, "vars", diags) {
                    let span = k.span();
                    if let Some(v) = de::<Sp<toml::Value>>(v, text, diags) {
                        plan.vars.push((k.into_inner().into_owned(), span, v));
                    }
                }
            }
            "settings" => {
                let span = value.span();
                if let Some(t) = as_table(value, "settings", diags)
                    && let Some(t) =
                        check_keys(t, "settings", settings_keys(), "`settings`", &kspan, diags)
                {
                    plan.settings = de(Spanned::new(span, DeValue::Table(t)), text, diags);
                }
            }
            "instances" => {
                for (k, v) in table_entries(value, "instances", diags) {
                    plan.instance_ids.push(k.get_ref().to_string());
                    plan.instances.extend(entry(k, v, "instances", text, diags));
                }
            }
            "buckets" => {
                for (k, v) in table_entries(value, "buckets", diags) {
                    plan.bucket_ids.push(k.get_ref().to_string());
                    plan.buckets.extend(entry(k, v, "buckets", text, diags));
                }
            }
            "steps" => {
                for (k, v) in table_entries(value, "steps", diags) {
                    plan.step_ids.push((k.get_ref().to_string(), k.span()));
                    plan.steps.extend(entry(k, v, "steps", text, diags));
                }
            }
            other => diags.push(
                Diag::new(
                    kspan,
                    format!("unknown top-level key `{other}`"),
                    "not a plan key",
                )
                .help(suggest(other, "top-level keys", TOP_KEYS.iter().copied())),
            ),
        }
    }
    plan
}

/// One `[<section>.<id>]` entry of a tagged type: `type` read by hand, the rest as that type.
fn entry<'i, T: Tagged>(
    key: Spanned<toml::de::DeString<'i>>,
    v: Spanned<DeValue<'i>>,
    section: &str,
    text: &str,
    diags: &mut Vec<Diag>,
) -> Option<Entry<T>> {
    let (id, id_span) = (key.get_ref().to_string(), key.span());
    let place = format!("`{section}.{id}`");
    let (ty, v) = typed(v, &place, &id_span, T::types(), diags)?;
    let raw = de_as(v, text, diags, |v| {
        // Externally tagged: a one-key table, so the fields keep their spans.
        let span = v.span();
        let mut t = DeTable::new();
        t.insert(Spanned::new(span.clone(), ty.into()), v);
        T::deserialize(ValueDeserializer::from(Spanned::new(
            span,
            DeValue::Table(t),
        )))
    })?;
    Some(Entry {
        id,
        id_span,
        ty,
        raw,
    })
}

/// Deserialises one value; a type error becomes a located diagnostic. For a table, the key
/// at fault is dropped and the rest tried again, so every wrong key of an entry is reported.
fn de<'i, T: Deserialize<'i>>(
    v: Spanned<DeValue<'i>>,
    text: &str,
    diags: &mut Vec<Diag>,
) -> Option<T> {
    de_as(v, text, diags, |v| {
        T::deserialize(ValueDeserializer::from(v))
    })
}

/// [`de`] with the deserialisation given.
fn de_as<'i, T>(
    v: Spanned<DeValue<'i>>,
    text: &str,
    diags: &mut Vec<Diag>,
    deserialize: impl Fn(Spanned<DeValue<'i>>) -> Result<T, toml::de::Error>,
) -> Option<T> {
    let whole = v.span();
    let mut v = v;
    // Bounded by the number of keys: each round removes one.
    loop {
        let retry = v.clone();
        match deserialize(v) {
            Ok(t) => return Some(t),
            Err(e) => {
                let span = e.span().unwrap_or(whole.clone());
                diags.extend(type_diag(&e, span.clone(), text));
                let (vspan, DeValue::Table(mut t)) = (retry.span(), retry.into_inner()) else {
                    return None;
                };
                let culprit = t
                    .iter()
                    .find(|(k, val)| {
                        let vs = val.span();
                        vs.start <= span.start && span.end <= vs.end && !vs.is_empty()
                            || k.span() == span
                    })
                    .map(|(k, _)| k.get_ref().to_string());
                let key = culprit?;
                t.remove(key.as_str());
                v = Spanned::new(vspan, DeValue::Table(t));
            }
        }
    }
}

fn type_diag(e: &toml::de::Error, span: Range<usize>, text: &str) -> Option<Diag> {
    let mut msg = humane(e.message().trim());
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        msg = match key_before(text, span.start) {
            Some(key) => format!("`{key}` expects {expected}, found {found}"),
            None => format!("expected {expected}, found {found}"),
        };
    }
    let help = enum_help(&msg)
        .unwrap_or_else(|| "see docs/plan-reference.md for the type each key takes".to_string());
    if let Some(rest) = msg.strip_prefix("unknown variant ")
        && let Some(key) = key_before(text, span.start)
    {
        msg = format!("`{key}`: unknown value {rest}");
    }
    if msg.starts_with("missing field") {
        // A required key whose value was wrong (and already reported).
        return None;
    }
    Some(Diag::new(span, msg, "wrong value").help(help))
}

/// The key of `key = value` when `at` is inside the value on the same line.
fn key_before(text: &str, at: usize) -> Option<&str> {
    let line_start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[line_start..at].split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains([' ', '[', '{', ','])).then_some(key)
}

/// serde's type names in the words of a plan author.
fn humane(msg: &str) -> String {
    msg.replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected i64", "expected a whole number")
        .replace(
            "expected a sequence",
            "expected a list like `[\"a\", \"b\"]`",
        )
        .replace("expected a boolean", "expected `true` or `false`")
        .replace("expected a map", "expected a table like `{ a = \"b\" }`")
}

/// serde's "unknown variant `x`, expected `a` or `b`" becomes "did you mean".
fn enum_help(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown variant `")?;
    let (word, expected) = rest.split_once('`')?;
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    Some(match did_you_mean(word, choices.iter().copied()) {
        Some(d) => format!("{d} (one of: {})", choices.join(", ")),
        None => format!("use one of: {}", choices.join(", ")),
    })
}

fn as_table<'i>(
    v: Spanned<DeValue<'i>>,
    place: &str,
    diags: &mut Vec<Diag>,
) -> Option<DeTable<'i>> {
    let span = v.span();
    match v.into_inner() {
        DeValue::Table(t) => Some(t),
        other => {
            diags.push(
                Diag::new(
                    span,
                    format!("`{place}` must be a table, found {}", other.type_str()),
                    "not a table",
                )
                .help(format!("write it as a `[{place}]` section")),
            );
            None
        }
    }
}

type Pair<'i> = (Spanned<toml::de::DeString<'i>>, Spanned<DeValue<'i>>);

/// The entries of a section table, in file order.
fn table_entries<'i>(v: Spanned<DeValue<'i>>, place: &str, diags: &mut Vec<Diag>) -> Vec<Pair<'i>> {
    let mut out: Vec<Pair<'i>> = as_table(v, place, diags)
        .map(|t| t.into_iter().collect())
        .unwrap_or_default();
    out.sort_by_key(|(k, _)| k.span().start);
    out
}

/// Reads and removes `type`, checks the remaining keys; returns the type and the rest.
fn typed<'i>(
    v: Spanned<DeValue<'i>>,
    place: &str,
    id_span: &Range<usize>,
    types: &'static Types,
    diags: &mut Vec<Diag>,
) -> Option<(&'static str, Spanned<DeValue<'i>>)> {
    let list = || types.names().collect::<Vec<_>>().join(", ");
    let span = v.span();
    let mut t = as_table(v, place.trim_matches('`'), diags)?;
    let Some(ty) = t.remove("type") else {
        diags.push(
            Diag::new(
                id_span.clone(),
                format!("{place} has no `type`"),
                "needs a `type` key",
            )
            .help(format!(
                "add `type = \"{}\"` (one of: {})",
                types.names().next().unwrap_or_default(),
                list()
            )),
        );
        return None;
    };
    let ty_span = ty.span();
    let ty = match ty.into_inner() {
        DeValue::String(s) => s.into_owned(),
        other => {
            diags.push(
                Diag::new(
                    ty_span,
                    format!("`type` must be a string, found {}", other.type_str()),
                    "not a string",
                )
                .help(format!("one of: {}", list())),
            );
            return None;
        }
    };
    let Some((ty, keys)) = types.get(&ty) else {
        diags.push(
            Diag::new(
                ty_span,
                format!("unknown type `{ty}` in {place}"),
                "unknown type",
            )
            .help(suggest(&ty, "types", types.names())),
        );
        return None;
    };
    let t = check_keys(t, ty, keys, place, id_span, diags)?;
    Some((ty, Spanned::new(span, DeValue::Table(t))))
}

/// Reports unknown keys (all of them, with "did you mean") and missing required keys.
/// Unknown keys are removed so the rest can still be checked; `None` when a required key is
/// missing.
fn check_keys<'i>(
    mut t: DeTable<'i>,
    kind: &str,
    k: &Keys,
    place: &str,
    header: &Range<usize>,
    diags: &mut Vec<Diag>,
) -> Option<DeTable<'i>> {
    let what = if place == "`settings`" {
        "`settings`".to_string()
    } else {
        format!("a `{kind}` entry")
    };
    let unknown: Vec<(String, Range<usize>)> = t
        .keys()
        .filter(|key| !k.all.iter().any(|a| a == &**key.get_ref()))
        .map(|key| (key.get_ref().to_string(), key.span()))
        .collect();
    for (name, span) in &unknown {
        let help = match did_you_mean(name, k.all.iter().map(String::as_str)) {
            Some(d) => format!("{d} (valid keys for {what}: {})", k.all.join(", ")),
            None => format!("valid keys for {what}: {}", k.all.join(", ")),
        };
        diags.push(
            Diag::new(
                span.clone(),
                format!("unknown key `{name}` in {place}"),
                "unknown key",
            )
            .help(help),
        );
        t.remove(name.as_str());
    }
    let missing: Vec<&String> = k
        .required
        .iter()
        .filter(|r| !t.keys().any(|key| &**key.get_ref() == r.as_str()))
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        diags.push(
            Diag::new(
                header.clone(),
                format!("{place} is missing {list}"),
                "required keys missing",
            )
            .help(format!(
                "{what} needs: {}",
                k.required
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        return None;
    }
    Some(t)
}
