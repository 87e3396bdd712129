//! Whole-plan checks of what steps produce: where they write, and which collections restores create.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::diag::Diag;
use crate::plan::location::Location;
use crate::plan::mask::Masks;
use crate::plan::model::{DEFAULT_DATABASE, Instance, Step, StepKind};
use crate::plan::pattern::Pattern;

use super::steps::StepSpans;

/// Writes never go to a bucket's root, into an instance's live data, or where another step
/// writes.
pub(super) fn check_writes(
    steps: &[Step],
    data: &[(String, Location)],
    at: &StepSpans,
    masks: &Masks,
    diags: &mut Vec<Diag>,
) {
    for (i, s) in steps.iter().enumerate() {
        for w in s.kind.writes() {
            let span = at.to.get(&s.id).cloned().unwrap_or(0..0);
            if w.path.is_empty() {
                diags.push(
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
            for (inst, data) in data {
                if data.overlaps(w) {
                    diags.push(
                        Diag::new(
                            span.clone(),
                            format!(
                                "step `{}` writes inside the data of instance `{inst}` ({data})",
                                s.id
                            ),
                            "Milvus data",
                        )
                        .help(
                            "write backups outside the instance's rootPath, e.g. \
                             `<bucket>:backup/<name>`",
                        ),
                    );
                }
            }
            for earlier in &steps[..i] {
                if let Some(o) = earlier.kind.writes().into_iter().find(|o| o.overlaps(w)) {
                    diags.push(
                        Diag::new(
                            span.clone(),
                            format!(
                                "steps `{}` and `{}` both write to `{}`",
                                earlier.id,
                                s.id,
                                masks.mask_location(o)
                            ),
                            "written twice",
                        )
                        .help("give each step its own location"),
                    );
                }
            }
        }
    }
}

/// No two restores (and no restore twice) create the same collection in the same database of
/// the same instance. Only named collections are checked: what a glob selects is known only
/// when the plan runs.
pub(super) fn check_restore_targets(
    steps: &[Step],
    instances: &BTreeMap<String, Instance>,
    at: &StepSpans,
    diags: &mut Vec<Diag>,
) {
    // (instance, database, collection) → the restore that creates it first.
    let mut targets: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for s in steps {
        let StepKind::Restore(r) = &s.kind else {
            continue;
        };
        let names = match &r.collections {
            Some(list) => list.clone(),
            None => backup_sources(steps, &r.from, steps.len()),
        };
        let default_db = instances
            .get(&r.instance)
            .and_then(|i| i.database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.into());
        let span = at.naming.get(&s.id).cloned().unwrap_or(0..0);
        let mut mine: BTreeSet<(String, String, String)> = BTreeSet::new();
        for p in names
            .iter()
            .map(|n| Pattern::parse(n))
            .filter(Pattern::is_single)
        {
            let db = r.database.clone().or(p.db).unwrap_or(default_db.clone());
            let key = (r.instance.clone(), db.clone(), r.naming.target(&p.coll));
            if !mine.insert(key.clone()) {
                diags.push(
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
                diags.push(
                    Diag::new(
                        span.clone(),
                        format!(
                            "restores `{other}` and `{}` both create collection `{}` in database \
                             `{db}` of `{}`",
                            s.id, key.2, r.instance
                        ),
                        "names collide",
                    )
                    .help("use a different `suffix`, `rename` or `database` for one of them"),
                );
            }
        }
        for key in mine {
            targets.entry(key).or_insert_with(|| s.id.clone());
        }
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
