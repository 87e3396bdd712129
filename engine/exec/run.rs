//! `apply`: find or start the run of a plan (its record's lifecycle), have the scheduler run its
//! steps along the DAG, record the outcome.
//!
//! Steps whose dependencies are done run in parallel, up to `settings.concurrency`. A failure
//! stops new scheduling while running steps finish; steps that depend on a failed one are
//! reported as not run. Ctrl-C trips the cancellation token: running tasks stop at their next
//! checkpoint and the run is recorded as interrupted, to be resumed by the next apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::schedule::{Finished, Launch, Node, schedule};
use crate::checkpoint::{
    self, CheckpointError, RunLock, RunRecord, RunStatus, Store, TaskState, Tasks,
};
use crate::events::{Event, Events, Outcome};
use crate::plan::{Compiled, Plan};
use crate::steps::{
    self,
    ctx::{Resources, StepCtx, StepError},
    feed::Feed,
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
    let _lock = RunLock::acquire(&plan.settings.state_dir)?;
    let store = Store::open(&plan.settings.state_dir)?;
    let Some((mut run, resumed)) = open_run(&store, &plan, opts).await? else {
        let done = store
            .last_done_run(&plan_file(&plan.path), &plan.fingerprint())?
            .expect("open_run found it");
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
    };
    let tasks = store.tasks(&run.id)?.veiled(plan.veil());
    let (done, total) = tasks.count("")?;
    events.send(Event::RunStarted {
        run: run.id.clone(),
        resumed,
        done,
        total,
    });

    let nodes: Vec<Node> = compiled
        .dag
        .order()
        .into_iter()
        .map(|id| {
            let kind = &plan.step(id).expect("a DAG node is a step").kind;
            Node {
                id: id.to_string(),
                deps: compiled
                    .dag
                    .dependencies(id)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                publishes: steps::publishes(kind),
                pipelines: steps::pipelines(kind),
            }
        })
        .collect();
    let launch = Steps {
        run: run.id.clone(),
        plan: plan.clone(),
        res: Arc::new({
            let res = Resources::new(plan.clone());
            res.report_throttling(&events);
            res
        }),
        tasks,
        events: events.clone(),
        cancel: cancel.clone(),
    };
    let limit = plan.settings.concurrency;
    let ended = schedule(
        &nodes,
        &launch,
        limit,
        plan.settings.pipeline,
        &events,
        &cancel,
    )
    .await?;

    let outcome = if ended.failure.is_some() {
        Outcome::Failed
    } else if ended.interrupted {
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
    run.error = ended.failure.map(|f| plan.redact(&f));
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

/// The run this apply continues or starts, recorded as running (and whether it is resumed);
/// `None` when this version of the plan already finished and nothing is to be done. An
/// unfinished run of another version is refused, or abandoned with `--restart`.
async fn open_run(
    store: &Store,
    plan: &Plan,
    opts: &ApplyOptions,
) -> Result<Option<(RunRecord, bool)>, ApplyError> {
    let fingerprint = plan.fingerprint();
    if !opts.restart {
        check_unchanged(store, plan)?;
    }
    let (mut run, resumed) = match store.unfinished_run(&plan_file(&plan.path))? {
        Some(r) if r.fingerprint == fingerprint => (r, true),
        other => {
            if let Some(mut old) = other {
                old.status = RunStatus::Failed;
                old.error = Some("abandoned by `apply --restart`".into());
                store.put_run(&old).await?;
            }
            if !opts.restart
                && store
                    .last_done_run(&plan_file(&plan.path), &fingerprint)?
                    .is_some()
            {
                return Ok(None);
            }
            let now = checkpoint::now();
            let run = RunRecord {
                id: new_run_id(&fingerprint),
                plan_name: plan.name.clone(),
                plan_path: plan_file(&plan.path),
                fingerprint: fingerprint.clone(),
                plan: plan.describe_json(),
                started_at: now,
                updated_at: now,
                status: RunStatus::Running,
                error: None,
            };
            (run, false)
        }
    };
    run.status = RunStatus::Running;
    run.updated_at = checkpoint::now();
    store
        .put_run(&run)
        .await
        .map_err(|e| state_lost(e, &run.id, plan))?;
    Ok(Some((run, resumed)))
}

/// The plan's steps, started for the scheduler with everything a step needs: the run's
/// records, connections, events and cancellation.
struct Steps {
    run: String,
    plan: Arc<Plan>,
    res: Arc<Resources>,
    tasks: Tasks,
    events: Events,
    cancel: CancellationToken,
}

impl Launch for Steps {
    fn already_done(&self, id: &str) -> Result<Option<String>, CheckpointError> {
        self.tasks.done::<String>(&steps::done_key(id))
    }

    fn start(
        &self,
        id: &str,
        feed: Arc<Feed>,
        upstream: Vec<(String, Arc<Feed>)>,
        partial_at_start: bool,
    ) -> BoxFuture<'static, Finished> {
        let step = self.plan.step(id).expect("a DAG node is a step").clone();
        let ctx = StepCtx {
            run: self.run.clone(),
            step: id.to_string(),
            tasks: self.tasks.clone(),
            events: self.events.clone(),
            res: self.res.clone(),
            cancel: self.cancel.clone(),
            feed,
            upstream,
        };
        self.events.send(Event::StepStarted {
            step: id.to_string(),
            kind: step.type_name.to_string(),
        });
        Box::pin(async move {
            let r = steps::run(&ctx, &step.kind).await;
            let partial_input = partial_at_start || ctx.upstream_partial();
            // Lazily recorded object copies reach the disk whatever the outcome.
            let synced = ctx.tasks.sync().await;
            let result = match r.and_then(|s| synced.map(|_| s).map_err(StepError::from)) {
                // Its input was partial: the next apply runs it again for what is added.
                Ok(summary) if partial_input => Ok(summary),
                Ok(summary) => ctx
                    .tasks
                    .set(
                        &steps::done_key(&ctx.step),
                        &TaskState::Done(serde_json::json!(summary)),
                    )
                    .await
                    .map(|_| summary)
                    .map_err(StepError::from),
                Err(e) => Err(e),
            };
            Finished {
                result,
                partial_input,
            }
        })
    }
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
