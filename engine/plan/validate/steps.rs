//! `[steps.<id>]`: `needs`, references to instances, and the backup, copy and restore steps.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::plan::diag::{Diag, suggest};
use crate::plan::load::{Entry, RawPlan};
use crate::plan::model::{
    BackupStep, CopyStep, Instance, Keys, Method, Mode, Naming, OnConflict, RestoreStep, Step,
    StepKind,
};
use crate::plan::raw::{
    RawAutoId, RawBackup, RawCopy, RawMethod, RawMode, RawOnConflict, RawRestore, RawStep, Sp,
};

use super::context::{Ctx, Known, Spans};
use super::cutover;
use super::names::{NameRule, check_name, milvus_name};

/// Per step, where to point the errors the whole-plan checks find.
#[derive(Debug, Default)]
pub(super) struct StepSpans {
    /// The step's `to`.
    pub to: BTreeMap<String, Range<usize>>,
    /// What names a restore's collections: `suffix`, the first `rename`, else `instance`.
    pub naming: BTreeMap<String, Range<usize>>,
}

/// Every step that resolved, in file order.
pub(super) fn steps(
    cx: &mut Ctx,
    raw: &RawPlan,
    instances: &BTreeMap<String, Instance>,
    spans: &mut Spans,
) -> (Vec<Step>, StepSpans) {
    let known = Known {
        raw,
        step_ids: raw.step_ids.iter().map(|(s, _)| s.as_str()).collect(),
        instance_ids: raw.instance_ids.iter().map(String::as_str).collect(),
        instances,
    };
    let mut out = Vec::new();
    let mut at = StepSpans::default();
    for (id, span) in &raw.step_ids {
        spans.step_ids.entry(id.clone()).or_insert(span.clone());
    }
    for e in &raw.steps {
        let mut needs = needs(cx, &known, e, spans);
        let kind = match &e.raw {
            RawStep::Backup(b) => backup(cx, &known, e, b, &mut at),
            RawStep::Copy(c) => copy(cx, &e.id, c, &mut at),
            RawStep::Restore(r) => restore(cx, &known, &e.id, r, &mut at),
            RawStep::Verify(v) => cutover::verify(cx, &known, e, v, &mut needs, spans),
            RawStep::Alias(a) => cutover::alias(cx, &known, e, a, &needs),
        };
        if let Some(kind) = kind {
            out.push(Step {
                id: e.id.clone(),
                type_name: e.ty,
                needs,
                kind,
            });
        }
    }
    (out, at)
}

/// The step's `needs`, each known step once; records each entry's span in `spans`.
fn needs(cx: &mut Ctx, known: &Known, e: &Entry<RawStep>, spans: &mut Spans) -> Vec<String> {
    let mut needs = Vec::new();
    let mut at = BTreeMap::new();
    for n in e.raw.needs().iter().flatten() {
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
        } else if !known.step_ids.contains(&target.as_str()) {
            cx.diags.push(
                Diag::new(
                    n.span(),
                    format!("unknown step `{target}` in `steps.{}.needs`", e.id),
                    "no step with this id",
                )
                .help(suggest(target, "steps", known.step_ids.iter().copied())),
            );
        } else if !needs.contains(target) {
            needs.push(target.clone());
            at.insert(target.clone(), n.span());
        }
    }
    spans.needs.insert(e.id.clone(), at);
    needs
}

/// A `collections` list, rendered. Bad patterns are reported and kept, so the checks after
/// this one still see every entry.
fn collections(cx: &mut Ctx, step: &str, list: &[Sp<String>], key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in list {
        let Some(v) = cx.text(c) else {
            continue;
        };
        if let Err(msg) = check_name(&v, NameRule::Pattern) {
            cx.diags.push(
                Diag::new(
                    c.span(),
                    format!(
                        "bad collection `{}` in `steps.{step}.{key}`: {msg}",
                        cx.masks.mask(&v)
                    ),
                    "bad name",
                )
                .help("write `name`, `db.name` or a glob such as `db.*` or `logs_*`"),
            );
        }
        out.push(v);
    }
    out
}

fn backup(
    cx: &mut Ctx,
    known: &Known,
    e: &Entry<RawStep>,
    b: &RawBackup,
    at: &mut StepSpans,
) -> Option<StepKind> {
    let instance = known.instance(cx, &e.id, &b.instance);
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
    let collections = collections(cx, &e.id, &b.collections, "collections");
    let to = cx.location(&b.to);
    at.to.insert(e.id.clone(), b.to.span());
    let mode = mode(cx, known, instance.as_deref(), &b.mode);
    Some(StepKind::Backup(BackupStep {
        instance: instance?,
        collections,
        to: to?,
        mode,
    }))
}

/// `mode`, defaulting to binlog when the instance has `data` (the fast way) and rows otherwise.
fn mode(cx: &mut Ctx, known: &Known, instance: Option<&str>, mode: &Option<Sp<RawMode>>) -> Mode {
    let inst = instance.and_then(|i| known.instances.get(i));
    let has_data = inst.is_some_and(|i| i.data.is_some());
    match mode.as_ref().map(|m| (*m.get(), m.span())) {
        Some((RawMode::Binlog, span)) => {
            if let Some(i) = inst.filter(|_| !has_data) {
                let i = &i.id;
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
    }
}

fn copy(cx: &mut Ctx, id: &str, c: &RawCopy, at: &mut StepSpans) -> Option<StepKind> {
    let from = cx.location(&c.from);
    let to = cx.location(&c.to);
    at.to.insert(id.to_string(), c.to.span());
    let (from, to) = (from?, to?);
    if from.overlaps(&to) {
        cx.diags.push(
            Diag::new(
                c.to.span(),
                format!("copy step `{id}` copies `{from}` into itself"),
                "overlaps `from`",
            )
            .help("copy to a location outside the source, e.g. another bucket"),
        );
    }
    Some(StepKind::Copy(CopyStep { from, to }))
}

fn restore(
    cx: &mut Ctx,
    known: &Known,
    id: &str,
    r: &RawRestore,
    at: &mut StepSpans,
) -> Option<StepKind> {
    let instance = known.instance(cx, id, &r.instance);
    let from = cx.location(&r.from);
    let filter = r
        .collections
        .as_ref()
        .map(|l| collections(cx, id, l, "collections"));
    let naming = naming(cx, id, r, at);
    at.naming.entry(id.to_string()).or_insert(r.instance.span());
    let on_conflict = match r.on_conflict.as_ref().map(|o| *o.get()) {
        None | Some(RawOnConflict::Fail) => OnConflict::Fail,
        Some(RawOnConflict::Skip) => OnConflict::Skip,
        Some(RawOnConflict::Drop) => OnConflict::Drop,
    };
    let database = cx.opt_text(&r.database);
    if let (Some(sp), Some(db)) = (&r.database, &database)
        && let Err(msg) = milvus_name(db, "database name")
    {
        cx.diags.push(
            Diag::new(sp.span(), format!("bad `database`: {msg}"), "bad name")
                .help("a database name like `staging`"),
        );
    }
    Some(StepKind::Restore(RestoreStep {
        instance: instance?,
        from: from?,
        collections: filter,
        naming,
        database,
        on_conflict,
        indexes: r.indexes.as_ref().is_none_or(|v| *v.get()),
        aliases: r.aliases.as_ref().is_none_or(|v| *v.get()),
        load: r.load.as_ref().map(|v| *v.get()),
        keys: match r.auto_id.as_ref().map(|v| *v.get()) {
            None | Some(RawAutoId::KeepKeys) => Keys::Keep,
            Some(RawAutoId::NewKeys) => Keys::New,
        },
        method: r.method.as_ref().map(|v| match v.get() {
            RawMethod::Import => Method::Import,
            RawMethod::Insert => Method::Insert,
        }),
    }))
}

/// `suffix` or `rename` (not both): how restored collections are named.
fn naming(cx: &mut Ctx, id: &str, r: &RawRestore, at: &mut StepSpans) -> Naming {
    match (&r.suffix, &r.rename) {
        (Some(s), Some(_)) => {
            cx.diags.push(
                Diag::new(s.span(), "`suffix` and `rename` together", "choose one").help(
                    "use `suffix` to rename every collection, or `rename` for explicit names",
                ),
            );
            Naming::Keep
        }
        (Some(s), None) => {
            at.naming.insert(id.to_string(), s.span());
            match cx.text(s) {
                Some(v) if v.is_empty() => {
                    cx.diags.push(
                        Diag::new(s.span(), "empty `suffix`", "empty")
                            .help("remove `suffix` to keep the names, or give one like `_bak`"),
                    );
                    Naming::Keep
                }
                Some(v) => {
                    // Whatever it is appended to, a character Milvus refuses stays refused.
                    if let Err(msg) = milvus_name(&format!("c{v}"), "collection name") {
                        cx.diags.push(
                            Diag::new(s.span(), format!("bad `suffix`: {msg}"), "bad suffix")
                                .help("a suffix like `_bak` or `_2024`"),
                        );
                    }
                    Naming::Suffix(v)
                }
                None => Naming::Keep,
            }
        }
        (None, Some(map)) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                at.naming.entry(id.to_string()).or_insert(v.span());
                let Some(new) = cx.text(v) else {
                    continue;
                };
                if let Err(msg) = check_name(
                    &new,
                    NameRule::Plain("a new name is a plain collection name"),
                )
                .map(|_| ())
                .and_then(|()| milvus_name(&new, "collection name"))
                {
                    cx.diags.push(
                        Diag::new(
                            v.span(),
                            format!("bad new name `{}` for `{k}`: {msg}", cx.masks.mask(&new)),
                            "bad name",
                        )
                        .help("use letters, digits and `_`; set the database with `database`"),
                    );
                }
                out.insert(k.clone(), new);
            }
            Naming::Rename(out)
        }
        (None, None) => Naming::Keep,
    }
}
