//! `apply`: find or start the run of a plan, schedule its steps along the DAG, record the outcome.
//!
//! Steps whose dependencies are done run in parallel, up to `settings.concurrency`. A failure
//! stops new scheduling while running steps finish; steps that depend on a failed one are
//! reported as not run. Ctrl-C trips the cancellation token: running tasks stop at their next
//! checkpoint and the run is recorded as interrupted, to be resumed by the next apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, CheckpointError, RunLock, RunRecord, RunStatus, Store, TaskState};
use crate::events::{Event, Events, Outcome};
use crate::plan::Compiled;
use crate::steps::{
    self,
    ctx::{Resources, StepCtx, StepError},
    feed::{Ended, Feed},
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "the plan changed since run {run} started ({started}), which is not finished:\n{diff}\n\
         apply it as it was to finish that run, or pass --restart to abandon it and start anew"
    )]
    PlanChanged {
        run: String,
        started: String,
        diff: String,
    },
    /// The run cannot record anything any more: it stops, and exits 1 like any failed run.
    #[error(
        "the state dir `{dir}` was deleted or moved away during run {run}: the history of this \
         run (and of any earlier run kept there) is lost; planrun stopped at its next record.\n\
         The next `planrun apply {plan}` starts without records and reconciles against the \
         servers as after a crash: copies found present are verified, not made again; a backup \
         or collection this run created shows as a conflict and is not touched."
    )]
    StateLost {
        dir: String,
        run: String,
        plan: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Abandon an unfinished run of a changed plan and start a new one.
    pub restart: bool,
}

pub struct Applied {
    pub run: String,
    pub outcome: Outcome,
    /// True when the plan had already been applied completely and nothing ran.
    pub nothing_to_do: bool,
    pub resumed: bool,
}

/// Applies the plan, sending events to `events`. Returns when every step has ended.
pub async fn apply(
    compiled: &Compiled,
    opts: &ApplyOptions,
    events: Events,
    cancel: CancellationToken,
) -> Result<Applied, ApplyError> {
    let plan = Arc::new(compiled.plan.clone());
    let state_dir = plan.settings.state_dir.clone();
    let _lock = RunLock::acquire(&state_dir)?;
    let store = Store::open(&state_dir)?;
    let fingerprint = plan.fingerprint();
    let description = plan.describe_json();

    let mut resumed = false;
    if !opts.restart {
        check_unchanged(&store, &plan)?;
    }
    let run = match store.unfinished_run(&plan_file(&plan.path))? {
        Some(r) if r.fingerprint == fingerprint => {
            resumed = true;
            r
        }
        other => {
            if let Some(mut old) = other {
                old.status = RunStatus::Failed;
                old.error = Some("abandoned by `apply --restart`".into());
                store.put_run(&old).await?;
            }
            if let Some(done) = store.last_done_run(&plan_file(&plan.path), &fingerprint)?
                && !opts.restart
            {
                events.send(Event::RunFinished {
                    run: done.id.clone(),
                    outcome: Outcome::Done,
                });
                return Ok(Applied {
                    run: done.id,
                    outcome: Outcome::Done,
                    nothing_to_do: true,
                    resumed: false,
                });
            }
            let now = checkpoint::now();
            RunRecord {
                id: new_run_id(&fingerprint),
                plan_name: plan.name.clone(),
                plan_path: plan_file(&plan.path),
                fingerprint: fingerprint.clone(),
                plan: description,
                started_at: now,
                updated_at: now,
                status: RunStatus::Running,
                error: None,
            }
        }
    };
    let mut run = run;
    run.status = RunStatus::Running;
    run.updated_at = checkpoint::now();
    store
        .put_run(&run)
        .await
        .map_err(|e| state_lost(e, &run.id, &plan))?;
    let tasks = store.tasks(&run.id)?.veiled(plan.veil());
    let (done, total) = tasks.count("")?;
    events.send(Event::RunStarted {
        run: run.id.clone(),
        resumed,
        done,
        total,
    });

    let res = Arc::new(Resources::new(plan.clone()));
    let order: Vec<String> = compiled.dag.order().into_iter().map(String::from).collect();
    let deps: HashMap<String, Vec<String>> = order
        .iter()
        .map(|id| {
            (
                id.clone(),
                compiled
                    .dag
                    .dependencies(id)
                    .into_iter()
                    .map(String::from)
                    .collect(),
            )
        })
        .collect();
    let steps: BTreeMap<String, crate::plan::Step> = plan
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.clone()))
        .collect();

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum St {
        Pending,
        Running,
        Done,
        Failed,
        Skipped,
        /// Finished for some collections, failed for others (or ran on such a step's output):
        /// what depends on it goes on with what it finished; it runs again with the next apply.
        Partial,
    }
    let mut state: HashMap<String, St> = order.iter().map(|id| (id.clone(), St::Pending)).collect();
    // Every step publishes the collections it finishes here, for steps that start before it ends.
    let feeds: HashMap<String, Arc<Feed>> = order
        .iter()
        .map(|id| (id.clone(), Arc::new(Feed::default())))
        .collect();
    let pipeline = plan.settings.pipeline;
    let mut set: JoinSet<(String, Result<String, StepError>, bool)> = JoinSet::new();
    let mut stop = false;
    let mut interrupted = false;
    let mut failure: Option<String> = None;
    let limit = plan.settings.concurrency.max(1);

    loop {
        // Anything whose dependency failed or was skipped will not run.
        for id in &order {
            if state[id] == St::Pending
                && deps[id]
                    .iter()
                    .any(|d| matches!(state[d], St::Failed | St::Skipped))
            {
                state.insert(id.clone(), St::Skipped);
                feeds[id].end(Ended::Failed);
                let why: Vec<&String> = deps[id]
                    .iter()
                    .filter(|d| matches!(state[*d], St::Failed | St::Skipped))
                    .collect();
                events.send(Event::StepSkipped {
                    step: id.clone(),
                    reason: format!("it needs `{}`, which did not finish", why[0]),
                });
            }
        }
        if !stop {
            for id in &order {
                if set.len() >= limit {
                    break;
                }
                let ended = |d: &String| matches!(state[d], St::Done | St::Partial);
                // A copy or restore may start on what a running backup or copy publishes.
                let feeding =
                    |d: &String| state[d] == St::Running && steps::publishes(&steps[d].kind);
                let ready = deps[id].iter().all(ended)
                    || (pipeline
                        && steps::pipelines(&steps[id].kind)
                        && deps[id].iter().all(|d| ended(d) || feeding(d)));
                if state[id] != St::Pending || !ready {
                    continue;
                }
                let partial_at_start = deps[id].iter().any(|d| state[d] == St::Partial);
                let upstream: Vec<(String, Arc<Feed>)> = deps[id]
                    .iter()
                    .filter(|d| state[*d] == St::Running)
                    .map(|d| (d.clone(), feeds[d].clone()))
                    .collect();
                let done_key = format!("{id}/@done");
                if let Some(summary) = tasks.done::<String>(&done_key)? {
                    state.insert(id.clone(), St::Done);
                    events.send(Event::StepFinished {
                        step: id.clone(),
                        summary: format!("already done in this run: {summary}"),
                    });
                    continue;
                }
                state.insert(id.clone(), St::Running);
                let step = steps[id].clone();
                let ctx = StepCtx {
                    run: run.id.clone(),
                    step: id.clone(),
                    tasks: tasks.clone(),
                    events: events.clone(),
                    res: res.clone(),
                    cancel: cancel.clone(),
                    feed: feeds[id].clone(),
                    upstream,
                };
                events.send(Event::StepStarted {
                    step: id.clone(),
                    kind: step.type_name.to_string(),
                });
                set.spawn(async move {
                    let r = steps::run(&ctx, &step.kind).await;
                    let partial_input = partial_at_start || ctx.upstream_partial();
                    // Lazily recorded object copies reach the disk whatever the outcome.
                    let synced = ctx.tasks.sync().await;
                    let r = match r.and_then(|s| synced.map(|_| s).map_err(StepError::from)) {
                        // Its input was partial: the next apply runs it again for what is added.
                        Ok(summary) if partial_input => Ok(summary),
                        Ok(summary) => ctx
                            .tasks
                            .set(&done_key, &TaskState::Done(serde_json::json!(summary)))
                            .await
                            .map(|_| summary)
                            .map_err(StepError::from),
                        Err(e) => Err(e),
                    };
                    (ctx.step, r, partial_input)
                });
            }
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { continue };
                let (id, r, partial_input) = joined.unwrap_or_else(|e| {
                    (String::from("?"), Err(StepError::Failed(format!("step task panicked: {e}"))), false)
                });
                if let Some(feed) = feeds.get(&id) {
                    feed.end(match &r {
                        Ok(_) if partial_input => Ended::Partial,
                        Ok(_) => Ended::Done,
                        Err(StepError::Partial { .. }) => Ended::Partial,
                        Err(_) => Ended::Failed,
                    });
                }
                match r {
                    Ok(summary) if partial_input => {
                        state.insert(id.clone(), St::Partial);
                        events.send(Event::StepFinished {
                            step: id,
                            summary: format!(
                                "{summary} (of what earlier steps finished; the rest follows with the next apply)"
                            ),
                        });
                    }
                    Ok(summary) => {
                        state.insert(id.clone(), St::Done);
                        events.send(Event::StepFinished { step: id, summary });
                    }
                    Err(e @ StepError::Partial { .. }) => {
                        // Some collections failed: the others' work goes on downstream.
                        state.insert(id.clone(), St::Partial);
                        let msg = e.to_string();
                        failure.get_or_insert(format!("step `{id}`: {msg}"));
                        events.send(Event::StepFailed { step: id, error: msg });
                    }
                    Err(StepError::Upstream(reason)) => {
                        state.insert(id.clone(), St::Skipped);
                        events.send(Event::StepSkipped { step: id, reason });
                    }
                    Err(StepError::Interrupted) => {
                        state.insert(id.clone(), St::Skipped);
                        interrupted = true;
                        stop = true;
                        events.send(Event::StepSkipped {
                            step: id,
                            reason: "interrupted; its finished tasks are recorded".into(),
                        });
                    }
                    Err(e) => {
                        state.insert(id.clone(), St::Failed);
                        stop = true;
                        let msg = e.to_string();
                        failure.get_or_insert(format!("step `{id}`: {msg}"));
                        events.send(Event::StepFailed { step: id, error: msg });
                    }
                }
            }
            _ = cancel.cancelled(), if !stop => {
                stop = true;
                interrupted = true;
            }
        }
    }
    // Steps never reached because scheduling stopped.
    for id in &order {
        if state[id] == St::Pending {
            events.send(Event::StepSkipped {
                step: id.clone(),
                reason: if interrupted {
                    "interrupted before it started".into()
                } else {
                    "not started after an earlier failure".into()
                },
            });
        }
    }

    let outcome = if failure.is_some() {
        Outcome::Failed
    } else if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    };
    run.status = match outcome {
        Outcome::Done => RunStatus::Done,
        Outcome::Failed => RunStatus::Failed,
        Outcome::Interrupted => RunStatus::Interrupted,
    };
    // The run record is in the state dir, where env-derived values must not go.
    run.error = failure.map(|f| plan.redact(&f));
    run.updated_at = checkpoint::now();
    store
        .put_run(&run)
        .await
        .map_err(|e| state_lost(e, &run.id, &plan))?;
    events.send(Event::RunFinished {
        run: run.id.clone(),
        outcome,
    });
    Ok(Applied {
        run: run.id,
        outcome,
        nothing_to_do: false,
        resumed,
    })
}

/// A state dir deleted under the run: say what that lost and what the next apply does.
fn state_lost(e: CheckpointError, run: &str, plan: &crate::plan::Plan) -> ApplyError {
    match e {
        CheckpointError::Gone { dir } => ApplyError::StateLost {
            dir: dir.display().to_string(),
            run: crate::text::short(run).to_string(),
            plan: plan.path.display().to_string(),
        },
        e => e.into(),
    }
}

/// Fails when the plan has an unfinished run that was started from a different version of it.
pub fn check_unchanged(store: &Store, plan: &crate::plan::Plan) -> Result<(), ApplyError> {
    match store.unfinished_run(&plan_file(&plan.path))? {
        Some(r) if r.fingerprint != plan.fingerprint() => Err(ApplyError::PlanChanged {
            run: r.id.clone(),
            started: checkpoint::format_time(r.started_at),
            diff: json_diff(&r.plan, &plan.describe_json()),
        }),
        _ => Ok(()),
    }
}

/// The plan file as runs record it: absolute, so a run is found from any working directory.
pub fn plan_file(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn new_run_id(fingerprint: &str) -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let digest = Sha256::digest(format!("{fingerprint}:{nanos}:{}", std::process::id()));
    hex::encode(&digest[..8])
}

/// What differs between two secret-free plan descriptions, one `path: old → new` per line.
pub fn json_diff(old: &serde_json::Value, new: &serde_json::Value) -> String {
    fn flatten(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    flatten(v, p, out);
                }
            }
            // Steps are a list of objects with ids: key them by id so a diff names the step.
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let key = v
                        .get("id")
                        .and_then(|id| id.as_str())
                        .map(String::from)
                        .unwrap_or_else(|| i.to_string());
                    flatten(v, format!("{path}.{key}"), out);
                }
            }
            other => {
                out.insert(path, other.to_string());
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(old, String::new(), &mut a);
    flatten(new, String::new(), &mut b);
    let mut lines = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => lines.push(format!("  - {k} = {v}")),
            Some(w) if w != v => lines.push(format!("  ~ {k}: {v} → {w}")),
            _ => {}
        }
    }
    for (k, w) in &b {
        if !a.contains_key(k) {
            lines.push(format!("  + {k} = {w}"));
        }
    }
    if lines.is_empty() {
        lines.push("  (only settings that do not show in the plan's description)".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::json_diff;
    use serde_json::json;

    #[test]
    fn diff_names_each_changed_key() {
        let d = json_diff(
            &json!({"steps": {"restore": {"suffix": "_bak"}, "copy": {"to": "b:x"}}}),
            &json!({"steps": {"restore": {"suffix": "_new"}, "verify": {"x": 1}}}),
        );
        assert!(
            d.contains("~ steps.restore.suffix: \"_bak\" → \"_new\""),
            "{d}"
        );
        assert!(d.contains("- steps.copy.to = \"b:x\""), "{d}");
        assert!(d.contains("+ steps.verify.x = 1"), "{d}");
        let d = json_diff(
            &json!({"steps": [{"id": "copy", "to": "b:x"}]}),
            &json!({"steps": [{"id": "copy", "to": "b:y"}]}),
        );
        assert!(d.contains("~ steps.copy.to: \"b:x\" → \"b:y\""), "{d}");
    }
}
