//! `plan`: what apply would do, found by looking and never by touching.
//!
//! Read-only by construction: only list, head, get, describe, show and count calls are made, and
//! the state dir is read through a private snapshot copy. The JSON shape is versioned
//! (`format_version`) and documented in docs/plan-output.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::checkpoint::{RunRecord, Store, Tasks};
use crate::plan::{Compiled, Location};
use crate::steps::{
    self,
    ctx::{Resources, StepError},
    preview::{Look, Produced, StepPreview},
};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Preview {
    pub format_version: u32,
    pub plan: String,
    pub path: String,
    /// The unfinished run that apply would resume.
    pub resumes: Option<RunSummary>,
    pub steps: Vec<StepPreview>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub tasks_done: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub steps_to_run: usize,
    pub steps_done: usize,
    pub conflicts: usize,
}

/// What apply would do with this plan. Never fails on an unreachable server or a missing bucket:
/// those are conflicts in the preview.
/// `state`: the plan's state dir, opened read-only ([`Store::open_snapshot`]) by the caller, who
/// may have read it already (apply checks for a changed plan first); `None` when it has none.
pub async fn preview(
    compiled: &Compiled,
    state: Option<&Store>,
) -> Result<Preview, crate::checkpoint::CheckpointError> {
    let plan = Arc::new(compiled.plan.clone());
    let res = Resources::new(plan.clone());
    let file = crate::exec::run::plan_file(&plan.path);
    let mut finished = None;
    let (run, tasks): (Option<RunRecord>, Option<Tasks>) = match state {
        Some(store) => match store.unfinished_run(&file)? {
            Some(r) if r.fingerprint == plan.fingerprint() => {
                let t = store.tasks(&r.id)?.veiled(plan.veil());
                (Some(r), Some(t))
            }
            Some(_) => (None, None),
            None => {
                finished = store.last_done_run(&file, &plan.fingerprint())?;
                (None, None)
            }
        },
        None => (None, None),
    };
    let mut out = Preview {
        format_version: FORMAT_VERSION,
        plan: plan.name.clone(),
        path: plan.path.display().to_string(),
        ..Default::default()
    };
    if let (Some(r), Some(t)) = (&run, &tasks) {
        out.resumes = Some(RunSummary {
            id: r.id.clone(),
            tasks_done: t.count("")?.0,
        });
    }
    // What each location will hold once earlier steps ran: backup contents by location.
    let mut produced: BTreeMap<Location, Produced> = BTreeMap::new();
    // Buckets and instances that could not be used, by "bucket `b`" or "instance `a`": the
    // step that reported it and why, in short ("instance `a` is unreachable").
    let mut unusable: BTreeMap<String, (String, String)> = BTreeMap::new();
    for id in compiled.dag.order() {
        let step = plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .expect("dag ids are steps");
        let mut p = StepPreview {
            id: id.to_string(),
            kind: step.type_name.to_string(),
            action: "run".into(),
            ..Default::default()
        };
        if let Some(done) = &finished {
            // Applied completely before: apply would do nothing, so there is nothing to inspect.
            p.action = "done".into();
            p.description = format!(
                "{} (done by run {})",
                plan.describe_step(step),
                crate::text::short(&done.id)
            );
            out.summary.steps_done += 1;
            out.steps.push(p);
            continue;
        }
        if let Some(t) = &tasks {
            if t.done::<String>(&crate::steps::done_key(id))?.is_some() {
                p.action = "done".into();
            } else if t.count(&format!("{id}/"))?.1 > 0 {
                // Any record, an intent included: the target may exist because this run made it.
                p.action = "resume".into();
            }
        }
        p.description = plan.describe_step(step);
        // A bucket or instance the step cannot use stops it before it does anything: say so
        // first, once for the whole plan (at the first step that uses it). The step is not
        // looked at further, since every check would meet the same problem again, and what it
        // writes is marked blocked, so later steps say why they cannot be checked instead of
        // finding their input missing.
        let mut buckets: Vec<&str> = step
            .kind
            .reads()
            .into_iter()
            .chain(step.kind.writes())
            .map(|l| l.bucket.as_str())
            .collect();
        buckets.sort();
        buckets.dedup();
        let uses = buckets
            .into_iter()
            .map(Use::Bucket)
            .chain(steps::instances(&step.kind).into_iter().map(Use::Instance));
        let mut cannot_use = None;
        for u in uses {
            let what = u.to_string();
            let why = match unusable.get(&what) {
                Some((first, why)) => {
                    p.changes
                        .push(format!("? not checked: {why} (see step `{first}`)"));
                    why.clone()
                }
                None => match u.problem(&res).await {
                    Some(e) => first_report(&mut unusable, &mut p, what, e),
                    None => continue,
                },
            };
            cannot_use.get_or_insert(why);
        }
        if let Some(why) = cannot_use {
            for loc in step.kind.writes() {
                produced.insert(loc.clone(), Produced::blocked(id, Some(why.clone())));
            }
        } else {
            let mut look = Look {
                res: &res,
                produced: &mut produced,
                tasks: tasks.as_ref(),
            };
            steps::preview(&mut look, &step.kind, &mut p).await;
            // The order apply keeps: which collections this step takes before the steps it
            // needs have ended.
            let feeders: Vec<String> = compiled
                .dag
                .dependencies(id)
                .into_iter()
                .filter(|d| {
                    plan.steps
                        .iter()
                        .any(|s| s.id == *d && steps::publishes(&s.kind))
                })
                .map(|d| format!("`{d}`"))
                .collect();
            if plan.settings.pipeline
                && steps::pipelines(&step.kind)
                && !feeders.is_empty()
                && p.action != "done"
            {
                p.changes.push(format!(
                    "~ pipelined: starts on each collection as soon as {} finished it, and on \
                     each file of a rows backup as it is written (binlog backups read where they \
                     are written; settings.pipeline = false waits for the whole step)",
                    feeders.join(" and ")
                ));
            }
        }
        // One cause seen by two checks (a missing bucket, also met by the existing-backup
        // check) is one conflict.
        let mut seen = std::collections::HashSet::new();
        p.conflicts.retain(|c| seen.insert(c.clone()));
        out.summary.conflicts += p.conflicts.len();
        if p.action == "done" {
            out.summary.steps_done += 1;
        } else {
            out.summary.steps_to_run += 1;
        }
        out.steps.push(p);
    }
    Ok(out)
}

/// Reports a bucket or instance the walk found unusable as a conflict of step `p`, and
/// remembers it for the steps after. Returns why, in short.
fn first_report(
    unusable: &mut BTreeMap<String, (String, String)>,
    p: &mut StepPreview,
    what: String,
    e: StepError,
) -> String {
    let why = if e.is_unreachable() {
        format!("{what} is unreachable")
    } else {
        format!("{what} cannot be used")
    };
    p.conflict(&e);
    // A finished step's conflicts do not stop apply (it does not run again), so a later step
    // that uses the same must report it as its own.
    if p.action != "done" {
        unusable.insert(what, (p.id.clone(), why.clone()));
    }
    why
}

/// A bucket or an instance a step uses.
enum Use<'a> {
    Bucket(&'a str),
    Instance(&'a str),
}

impl std::fmt::Display for Use<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Use::Bucket(id) => write!(f, "bucket `{id}`"),
            Use::Instance(id) => write!(f, "instance `{id}`"),
        }
    }
}

impl Use<'_> {
    /// Why a step cannot use it, if it cannot: a bucket is opened and checked, an instance
    /// connected to (the connection is kept for the step's own look).
    async fn problem(&self, res: &Resources) -> Option<StepError> {
        match self {
            Use::Bucket(id) => match res.storage(id).await {
                Err(e) => Some(e),
                Ok(s) => s.check().await.err().map(StepError::from),
            },
            Use::Instance(id) => res.milvus(id).await.err(),
        }
    }
}
