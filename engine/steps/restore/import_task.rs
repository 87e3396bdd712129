//! One import request to Milvus: started once (an intent first; a resumed run adopts the
//! server's task instead of starting another), waited for, and started anew when a restart of
//! the server lost it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::TaskState;
use crate::milvus::pb::common::ImportState;
use crate::milvus::{MilvusClient, MilvusError};
use crate::plan::{Location, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, StepError, fail, to_json};

const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// An import whose state and progress have not changed for this long is said to be stuck.
const STUCK_AFTER: Duration = Duration::from_secs(180);
/// An import started when its server became unreachable, and not moved for this long since it
/// came back, is taken as lost (see `forgets_on_restart`): Milvus 2.3.5 leaves such a task
/// `Started` until it expires (`rootCoord.importTaskExpiration`, 15 min by default) and never
/// writes its rows.
const LOST_AFTER: Duration = Duration::from_secs(90);
/// Times one segment is imported anew after its import was lost in a restart, in one apply.
const REDO_LOST: usize = 2;

#[derive(Serialize, Deserialize)]
struct Started {
    tasks: Vec<i64>,
}

/// Where the step's instance imports the backup from: the backup's own location when it lives
/// in the instance's bucket (`data`), else a staging folder there (`true`: staged), since
/// Milvus imports only from its own bucket.
pub(super) fn import_root(ctx: &StepCtx, step: &RestoreStep) -> (Location, bool) {
    let data = ctx.res.plan.instances[&step.instance]
        .data
        .as_ref()
        .expect("checked: the instance has `data`");
    if ctx.res.same_bucket(&step.from.bucket, &data.bucket) {
        return (step.from.clone(), false);
    }
    let path = data.join(&format!("planrun-staging/{}/{}", ctx.run, ctx.step));
    (
        Location {
            bucket: data.bucket.clone(),
            path,
        },
        true,
    )
}

/// One import: its checkpoint task, where it goes, what it is given, and what it must bring.
pub(super) struct Request<'a> {
    pub task: String,
    pub target: &'a str,
    /// `""`: the default partition (or, with a partition key, the server's routing).
    pub partition: &'a str,
    /// Paths inside the instance's bucket.
    pub files: Vec<String>,
    pub options: Vec<(String, String)>,
    /// What is imported, for messages: "segment 42", "file `rows/…/000001.parquet`".
    pub what: String,
    /// The rows it must bring, when known: 0 imported of more means the server did not see them.
    pub rows: Option<i64>,
}

/// Imports `req` once: started (or, on resume, adopted or waited for), then waited for; started
/// anew when a restart of the server lost it. The rows the server reported.
pub(super) async fn import_once(
    ctx: &StepCtx,
    client: &MilvusClient,
    req: &Request<'_>,
) -> Result<i64> {
    let (task, target, partition, what) = (&req.task, req.target, req.partition, &req.what);
    let (files, options) = (&req.files, &req.options);
    // One of the instance's import slots (`settings.imports`), held while the import runs and
    // is waited for: collections restored at once queue here instead of flooding the server.
    let _slot = if matches!(ctx.state(task)?, Some(TaskState::Done(_))) {
        None
    } else {
        Some(
            ctx.res
                .imports(client.name())
                .acquire_owned()
                .await
                .expect("never closed"),
        )
    };
    let mut started_here = false;
    let tasks: Vec<i64> = match ctx.state(task)? {
        Some(TaskState::Done(v)) => return Ok(serde_json::from_value(v).unwrap_or(0)),
        // Started by an earlier apply: waited for, and started anew if it failed since.
        Some(TaskState::Started(v)) => {
            serde_json::from_value::<Started>(v)
                .map_err(|e| StepError::Failed(format!("checkpoint of {task}: {e}")))?
                .tasks
        }
        state => {
            // An intent without a task id: the import may have started before the crash.
            let adopted = if matches!(state, Some(TaskState::Intent(_))) {
                let lost = lost(ctx, task)?;
                client
                    .list_import_tasks(target, 0)
                    .await?
                    .into_iter()
                    .filter(|t| {
                        !t.state.failed()
                            && !lost.contains(&t.id)
                            && t.info("files")
                                .is_some_and(|f| f.contains(files[0].as_str()))
                    })
                    .map(|t| t.id)
                    .collect::<Vec<_>>()
            } else {
                Vec::new()
            };
            if adopted.is_empty() {
                started_here = true;
                start_import(ctx, client, task, target, partition, files, options).await?
            } else {
                ctx.set(
                    task,
                    TaskState::Started(to_json(&Started {
                        tasks: adopted.clone(),
                    })),
                )
                .await?;
                adopted
            }
        }
    };
    // Tasks this apply did not start: one of them that failed since (a restart fails the imports
    // it had in flight) left no rows, and is started anew instead of failing the collection.
    let (mut tasks, mut earlier, mut redone) = (tasks, !started_here, 0);
    let rows = loop {
        let mut rows = 0;
        let mut gone = None;
        for &id in &tasks {
            match wait_import(ctx, client, target, what, id, earlier).await? {
                Waited::Rows(n) => rows += n,
                Waited::Lost(said) => {
                    gone = Some(said);
                    break;
                }
            }
        }
        let Some(said) = gone else { break rows };
        // Redone whole: with a sibling task done, its rows would come twice.
        if redone == REDO_LOST || tasks.len() > 1 {
            return fail(format!(
                "{said}; it was imported anew {redone} time(s) in this apply: apply again once \
                 `{}` is steady",
                client.name()
            ));
        }
        redone += 1;
        ctx.events
            .warn(&ctx.step, format!("{said}: importing {what} anew"));
        // Never adopted again, should this apply end before the new import is recorded.
        let mut gone = lost(ctx, task)?;
        gone.extend(&tasks);
        ctx.set(&lost_task(task), TaskState::Done(to_json(&gone)))
            .await?;
        tasks = start_import(ctx, client, task, target, partition, files, options).await?;
        earlier = false;
    };
    // Milvus 2.3 "completes" an import of a path it cannot see with 0 rows and no error.
    if let Some(want) = req.rows.filter(|n| rows == 0 && *n > 0) {
        return fail(format!(
            "importing {what} into `{target}` on `{}` read 0 of its {want} rows from `{}`: the \
             instance does not see those files; check that `data` of `{}` names its \
             minio.bucketName and minio.rootPath",
            client.name(),
            files[0],
            client.name()
        ));
    }
    ctx.set(task, TaskState::Done(to_json(&rows))).await?;
    Ok(rows)
}

/// The task recording the server's import tasks of `task` that were lost in a restart.
fn lost_task(task: &str) -> String {
    format!("{task}/lost")
}

/// The import tasks of `task` taken as lost: never adopted, whatever the server says of them.
fn lost(ctx: &StepCtx, task: &str) -> Result<Vec<i64>> {
    Ok(ctx.done::<Vec<i64>>(&lost_task(task))?.unwrap_or_default())
}

/// How a wait for one import task ended.
enum Waited {
    /// Completed, with the rows the server reported.
    Rows(i64),
    /// Gone without its rows: failed after an outage of the server or since an earlier apply,
    /// or in flight when the server went away and not moved since it came back. Why, said.
    Lost(String),
}

/// Starts the import of `files`, its intent recorded first and its task ids after.
async fn start_import(
    ctx: &StepCtx,
    client: &MilvusClient,
    task: &str,
    target: &str,
    partition: &str,
    files: &[String],
    options: &[(String, String)],
) -> Result<Vec<i64>> {
    ctx.check_cancel()?;
    ctx.set(task, TaskState::Intent(to_json(&files))).await?;
    let ids = client
        .import(target, Some(partition), files.to_vec(), options)
        .await?;
    crate::fault::point("import-started");
    ctx.set(
        task,
        TaskState::Started(to_json(&Started { tasks: ids.clone() })),
    )
    .await?;
    Ok(ids)
}

async fn wait_import(
    ctx: &StepCtx,
    client: &MilvusClient,
    target: &str,
    what: &str,
    id: i64,
    earlier: bool,
) -> Result<Waited> {
    let deadline = tokio::time::Instant::now() + IMPORT_TIMEOUT;
    let mut delay = Duration::from_millis(500);
    let what = format!("import task {id} ({what} into `{target}`)");
    let stalled = |msg: String| ctx.events.warn(&ctx.step, format!("{what}: {msg}"));
    // What the server last said of the task, and since when: a wait that does not move is said.
    let mut seen: Option<(ImportState, String, Instant, bool)> = None;
    // Outages of the server seen so far; one seen during this wait may have taken the task.
    let (mut outages, mut restarted) = (client.outages(), false);
    loop {
        // One poll at a time, never cancelled (see `MilvusClient::get_import_state`): Ctrl-C
        // ends this wait, while the poll in flight runs on by itself.
        let poll = ctx.retry("import state", || async {
            match client.get_import_state(id, &stalled).await {
                // Still in flight: asking again would put a second poll beside it.
                Err(MilvusError::Timeout { timeout, .. }) => fail(format!(
                    "`{}` has not answered about {what} for {timeout:?}: the link or the server \
                     is stalled; the question was left in flight, not cancelled (Milvus 2.3.5 \
                     dies of a cancelled GetImportState), the import goes on on the server and \
                     the next apply waits for it",
                    client.name()
                )),
                r => Ok(r?),
            }
        });
        let st = tokio::select! {
            st = poll => st?,
            _ = ctx.cancel.cancelled() => return Err(StepError::Interrupted),
        };
        let progress = st.info("progress_percent").unwrap_or_default().to_string();
        if client.outages() != outages {
            // Back from an outage: what the task does from now on is what counts.
            (outages, restarted, seen) = (client.outages(), true, None);
        }
        match &mut seen {
            Some((state, p, since, said)) if *state == st.state && *p == progress => {
                if restarted
                    && st.state == ImportState::ImportStarted
                    && forgets_on_restart(client)
                    && since.elapsed() >= LOST_AFTER
                {
                    return Ok(Waited::Lost(format!(
                        "{what} was in flight when `{}` could not be reached, and has not moved \
                         since it came back ({:?}{} for {} s)",
                        client.name(),
                        st.state,
                        shown_progress(&progress),
                        since.elapsed().as_secs()
                    )));
                }
                if !*said && since.elapsed() >= STUCK_AFTER {
                    *said = true;
                    stalled(format!(
                        "`{}` has answered {:?}{} since {} s ago, without progress; still \
                         waiting (up to {} min in all)",
                        client.name(),
                        st.state,
                        shown_progress(&progress),
                        since.elapsed().as_secs(),
                        IMPORT_TIMEOUT.as_secs() / 60
                    ));
                }
            }
            _ => seen = Some((st.state, progress, Instant::now(), false)),
        }
        match st.state {
            ImportState::ImportCompleted => return Ok(Waited::Rows(st.row_count)),
            s if s.failed() && (restarted || earlier) => {
                return Ok(Waited::Lost(format!(
                    "{what} {} failed on `{}` ({})",
                    if restarted {
                        "in flight when the server could not be reached"
                    } else {
                        "started by an earlier apply"
                    },
                    client.name(),
                    st.failed_reason
                )));
            }
            s if s.failed() => {
                return fail(format!(
                    "{what} on `{}` failed: {}",
                    client.name(),
                    st.failed_reason
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!(
                "{what} did not finish within {IMPORT_TIMEOUT:?}; apply again to keep waiting \
                 for it"
            ));
        }
        // Interrupted while waiting: the task id is recorded, a resumed run waits for it.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.cancel.cancelled() => return Err(StepError::Interrupted),
        }
        delay = (delay * 2).min(crate::milvus::POLL_MAX);
    }
}

/// Whether the server forgets the imports its data nodes were running when it restarts: Milvus
/// 2.3 keeps them `Started` until they expire, and its import queue waits behind them (new
/// imports stay `Pending`, "all DataNodes are busy") until then. Its pending tasks survive and
/// run later, so only a started one is ever taken as lost. From 2.4 data coordination
/// reschedules imports, and none is taken as lost.
fn forgets_on_restart(client: &MilvusClient) -> bool {
    crate::milvus::version::minor(client.server_version()).is_some_and(|v| v < (2, 4))
}

/// An import's progress as the server reports it, for messages: ` at 40 %`, or nothing.
fn shown_progress(progress: &str) -> String {
    if progress.is_empty() {
        String::new()
    } else {
        format!(" at {progress} %")
    }
}
