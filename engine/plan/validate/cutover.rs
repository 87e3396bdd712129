//! The cutover steps: `verify` (prove a copy equal to its source) and `alias` (point at it).

use crate::plan::diag::{Diag, suggest};
use crate::plan::load::Entry;
use crate::plan::model::{AliasStep, CollectionRef, StepKind, VerifyStep};
use crate::plan::pattern::Pattern;
use crate::plan::raw::{RawAlias, RawCollectionRef, RawStep, RawVerify, Sp};

use super::context::{Ctx, Known, Spans};
use super::names::{NameRule, check_name};

pub(super) fn verify(
    cx: &mut Ctx,
    known: &Known,
    e: &Entry<RawStep>,
    v: &RawVerify,
    needs: &mut Vec<String>,
    spans: &mut Spans,
) -> Option<StepKind> {
    match (&v.source, &v.target, &v.restore) {
        (Some(src), Some(dst), None) => {
            let source = collection_ref(cx, known, &e.id, src);
            let target = collection_ref(cx, known, &e.id, dst);
            let (source, target) = (source?, target?);
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
        (None, None, Some(r)) => verify_restore(cx, known, &e.id, r, needs, spans),
        _ => {
            cx.diags.push(
                Diag::new(
                    e.id_span.clone(),
                    format!(
                        "verify step `{}` needs either `source` and `target`, or `restore`",
                        e.id
                    ),
                    "what to compare?",
                )
                .help(
                    "write `source = { instance = \"a\", collection = \"c\" }` and \
                     `target = { ... }`, or `restore = \"<restore step id>\"`",
                ),
            );
            None
        }
    }
}

/// `source` or `target` of a verify step: one collection, maybe written `db.name`.
fn collection_ref(
    cx: &mut Ctx,
    known: &Known,
    step: &str,
    c: &RawCollectionRef,
) -> Option<CollectionRef> {
    let instance = known.instance(cx, step, &c.instance);
    let collection = cx.text(&c.collection)?;
    if let Err(msg) = check_name(&collection, NameRule::One) {
        cx.diags.push(
            Diag::new(
                c.collection.span(),
                format!(
                    "bad collection `{}` in `steps.{step}`: {msg}",
                    cx.masks.mask(&collection)
                ),
                "bad name",
            )
            .help("write `name` or `db.name`"),
        );
    }
    let Pattern { db, coll } = Pattern::parse(&collection);
    // `database` wins over a database written in the name.
    let database = cx.opt_text(&c.database).or(db);
    Some(CollectionRef {
        instance: instance?,
        collection: coll,
        database,
    })
}

/// `restore = "<id>"`: verify what that restore step restored, after it.
fn verify_restore(
    cx: &mut Ctx,
    known: &Known,
    step: &str,
    r: &Sp<String>,
    needs: &mut Vec<String>,
    spans: &mut Spans,
) -> Option<StepKind> {
    let is_restore = |s: &RawStep| matches!(s, RawStep::Restore(_));
    let target = r.get();
    if !known
        .raw
        .steps
        .iter()
        .any(|s| &s.id == target && is_restore(&s.raw))
    {
        cx.diags.push(
            Diag::new(
                r.span(),
                format!("`{target}` in `steps.{step}.restore` is not a restore step"),
                "no restore step with this id",
            )
            .help(suggest(target, "restore steps", known.ids_of(is_restore))),
        );
        return None;
    }
    if !needs.contains(target) {
        needs.push(target.clone());
        if let Some(n) = spans.needs.get_mut(step) {
            n.insert(target.clone(), r.span());
        }
    }
    Some(StepKind::Verify(VerifyStep::Restore(target.clone())))
}

pub(super) fn alias(
    cx: &mut Ctx,
    known: &Known,
    e: &Entry<RawStep>,
    a: &RawAlias,
    needs: &[String],
) -> Option<StepKind> {
    let instance = known.instance(cx, &e.id, &a.instance);
    let alias = cx.text(&a.alias);
    let collection = cx.text(&a.collection);
    for (sp, v) in [(&a.alias, &alias), (&a.collection, &collection)] {
        let Some(v) = v else {
            continue;
        };
        let plain =
            NameRule::Plain("a plain name is needed here; set the database with `database`");
        if let Err(msg) = check_name(v, plain) {
            cx.diags.push(
                Diag::new(
                    sp.span(),
                    format!("bad name `{}` in `steps.{}`: {msg}", cx.masks.mask(v), e.id),
                    "bad name",
                )
                .help("use letters, digits and `_`"),
            );
        }
    }
    check_verified(cx, known, e, needs);
    Some(StepKind::Alias(AliasStep {
        instance: instance?,
        alias: alias?,
        collection: collection?,
        database: cx.opt_text(&a.database),
    }))
}

/// A cutover is only safe once the copy is proven equal to its source: an alias step must need
/// a verify step.
fn check_verified(cx: &mut Ctx, known: &Known, e: &Entry<RawStep>, needs: &[String]) {
    let is_verify = |s: &RawStep| matches!(s, RawStep::Verify(_));
    let verifies = known.ids_of(is_verify);
    if needs.iter().any(|n| verifies.contains(&n.as_str())) {
        return;
    }
    let help = if verifies.is_empty() {
        "add a `type = \"verify\"` step that compares the collection with its source, and list \
         it in `needs`"
            .to_string()
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
