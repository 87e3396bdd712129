//! `plan`: what apply would do, found by looking and never by touching.
//!
//! Read-only by construction: only list, head, get, describe, show and count calls are made, and
//! the state dir is read through a private snapshot copy. The JSON shape is versioned
//! (`format_version`) and documented in docs/plan-output.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::checkpoint::{RunRecord, Store, Tasks};
use crate::plan::Compiled;
use crate::steps::{
    self,
    ctx::{Look, Produced, Resources, StepPreview},
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
                let t = store.tasks(&r.id)?;
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
    let mut produced: BTreeMap<String, Produced> = BTreeMap::new();
    for id in compiled.dag.order() {
        let step = plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .expect("dag ids are steps");
        let mut p = StepPreview {
            id: id.to_string(),
            kind: step.kind.type_name().to_string(),
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
            if t.done::<String>(&format!("{id}/@done"))?.is_some() {
                p.action = "done".into();
            } else if t.count(&format!("{id}/"))?.1 > 0 {
                // Any record, an intent included: the target may exist because this run made it.
                p.action = "resume".into();
            }
        }
        // A missing or unreachable bucket stops a step before it does anything: say so first.
        let mut buckets: Vec<&str> = step
            .kind
            .reads()
            .into_iter()
            .chain(step.kind.writes())
            .map(|l| l.bucket.as_str())
            .collect();
        buckets.sort();
        buckets.dedup();
        for b in buckets {
            if let Some(problem) = bucket_problem(&res, b).await {
                p.conflict(problem);
            }
        }
        let mut look = Look {
            res: &res,
            produced: &mut produced,
            tasks: tasks.as_ref(),
        };
        steps::preview(&mut look, &step.kind, &mut p).await;
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

async fn bucket_problem(res: &Resources, id: &str) -> Option<String> {
    match res.storage(id).await {
        Err(e) => Some(e.to_string()),
        Ok(s) => s.check().await.err().map(|e| e.to_string()),
    }
}
