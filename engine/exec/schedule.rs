//! The scheduler: starts each step once what it needs has ended (or, pipelining, while it
//! publishes), at most `limit` at a time, and decides what a failure or Ctrl-C leaves unstarted.
//!
//! It knows nothing of step types, servers or records: a [`Launch`] says whether a step already
//! finished in this run and starts one. So it runs with fake steps in unit tests.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointError;
use crate::events::{Event, Events};
use crate::steps::ctx::StepError;
use crate::steps::feed::{Ended, Feed};

/// One step of the DAG, as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    /// The steps it needs (DAG edges), all earlier in the order given to [`schedule`].
    pub deps: Vec<String>,
    /// It publishes the collections it finishes while it runs (backup, copy).
    pub publishes: bool,
    /// It may start on what a running step it needs publishes (copy, restore).
    pub pipelines: bool,
}

/// How a started step ended.
pub struct Finished {
    pub result: Result<String, StepError>,
    /// What it read was partial (a step it needs finished only some collections): it ran on
    /// that, and runs again with the next apply.
    pub partial_input: bool,
}

/// Starts steps for the scheduler.
pub trait Launch: Send + Sync {
    /// The summary of a step that already finished in this run.
    fn already_done(&self, id: &str) -> Result<Option<String>, CheckpointError>;

    /// Starts step `id` (and says so): it publishes into `feed`, reads what the running steps
    /// in `upstream` publish, and `partial_at_start` says a step it needs ended partial.
    fn start(
        &self,
        id: &str,
        feed: Arc<Feed>,
        upstream: Vec<(String, Arc<Feed>)>,
        partial_at_start: bool,
    ) -> BoxFuture<'static, Finished>;
}

/// How the steps ended, for the run record.
#[derive(Debug, Default, PartialEq)]
pub struct Scheduled {
    /// The first failure, `step `id`: why`.
    pub failure: Option<String>,
    pub interrupted: bool,
}

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

/// Runs `nodes` (in DAG order) to their end.
pub async fn schedule(
    nodes: &[Node],
    launch: &dyn Launch,
    limit: usize,
    pipeline: bool,
    events: &Events,
    cancel: &CancellationToken,
) -> Result<Scheduled, CheckpointError> {
    let limit = limit.max(1);
    let node: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut state: HashMap<String, St> =
        nodes.iter().map(|n| (n.id.clone(), St::Pending)).collect();
    // Every step publishes the collections it finishes here, for steps that start before it ends.
    let feeds: HashMap<String, Arc<Feed>> = nodes
        .iter()
        .map(|n| (n.id.clone(), Arc::new(Feed::default())))
        .collect();
    let mut set: JoinSet<(String, Finished)> = JoinSet::new();
    let mut stop = false;
    let mut out = Scheduled::default();

    loop {
        // Anything whose dependency failed or was skipped will not run.
        for n in nodes {
            let gone = |d: &&String| matches!(state[*d], St::Failed | St::Skipped);
            if state[&n.id] == St::Pending
                && let Some(why) = n.deps.iter().find(gone)
            {
                let reason = format!("it needs `{why}`, which did not finish");
                state.insert(n.id.clone(), St::Skipped);
                feeds[&n.id].end(Ended::Failed);
                events.send(Event::StepSkipped {
                    step: n.id.clone(),
                    reason,
                });
            }
        }
        if !stop {
            for n in nodes {
                if set.len() >= limit {
                    break;
                }
                let ended = |d: &String| matches!(state[d], St::Done | St::Partial);
                // A copy or restore may start on what a running backup or copy publishes.
                let feeding = |d: &String| state[d] == St::Running && node[d.as_str()].publishes;
                let ready = n.deps.iter().all(ended)
                    || (pipeline && n.pipelines && n.deps.iter().all(|d| ended(d) || feeding(d)));
                if state[&n.id] != St::Pending || !ready {
                    continue;
                }
                if let Some(summary) = launch.already_done(&n.id)? {
                    state.insert(n.id.clone(), St::Done);
                    events.send(Event::StepFinished {
                        step: n.id.clone(),
                        summary: format!("already done in this run: {summary}"),
                    });
                    continue;
                }
                let partial_at_start = n.deps.iter().any(|d| state[d] == St::Partial);
                let upstream: Vec<(String, Arc<Feed>)> = n
                    .deps
                    .iter()
                    .filter(|d| state[*d] == St::Running)
                    .map(|d| (d.clone(), feeds[d].clone()))
                    .collect();
                state.insert(n.id.clone(), St::Running);
                let run = launch.start(&n.id, feeds[&n.id].clone(), upstream, partial_at_start);
                let id = n.id.clone();
                set.spawn(async move { (id, run.await) });
            }
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { continue };
                let (id, f) = joined.unwrap_or_else(|e| {
                    let result = Err(StepError::Failed(format!("step task panicked: {e}")));
                    (String::from("?"), Finished { result, partial_input: false })
                });
                ended(&id, f, &mut state, &feeds, &mut out, &mut stop, events);
            }
            _ = cancel.cancelled(), if !stop => {
                stop = true;
                out.interrupted = true;
            }
        }
    }
    // Steps never reached because scheduling stopped.
    for n in nodes {
        if state[&n.id] == St::Pending {
            events.send(Event::StepSkipped {
                step: n.id.clone(),
                reason: if out.interrupted {
                    "interrupted before it started".into()
                } else {
                    "not started after an earlier failure".into()
                },
            });
        }
    }
    Ok(out)
}

/// Records how one step ended: its state, its feed's end, the event, and whether to stop.
fn ended(
    id: &str,
    f: Finished,
    state: &mut HashMap<String, St>,
    feeds: &HashMap<String, Arc<Feed>>,
    out: &mut Scheduled,
    stop: &mut bool,
    events: &Events,
) {
    if let Some(feed) = feeds.get(id) {
        feed.end(match &f.result {
            Ok(_) if f.partial_input => Ended::Partial,
            Ok(_) => Ended::Done,
            Err(StepError::Partial { .. }) => Ended::Partial,
            Err(_) => Ended::Failed,
        });
    }
    let step = id.to_string();
    let (st, event) = match f.result {
        Ok(summary) if f.partial_input => (
            St::Partial,
            Event::StepFinished {
                step,
                summary: format!(
                    "{summary} (of what earlier steps finished; the rest follows with the next apply)"
                ),
            },
        ),
        Ok(summary) => (St::Done, Event::StepFinished { step, summary }),
        // Some collections failed: the others' work goes on downstream.
        Err(e @ StepError::Partial { .. }) => {
            let error = e.to_string();
            out.failure.get_or_insert(format!("step `{id}`: {error}"));
            (St::Partial, Event::StepFailed { step, error })
        }
        Err(StepError::Upstream(reason)) => (St::Skipped, Event::StepSkipped { step, reason }),
        Err(StepError::Interrupted) => {
            out.interrupted = true;
            *stop = true;
            let reason = "interrupted; its finished tasks are recorded".into();
            (St::Skipped, Event::StepSkipped { step, reason })
        }
        Err(e) => {
            *stop = true;
            let error = e.to_string();
            out.failure.get_or_insert(format!("step `{id}`: {error}"));
            (St::Failed, Event::StepFailed { step, error })
        }
    };
    state.insert(id.to_string(), st);
    events.send(event);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;

    /// What a fake step does once started.
    #[derive(Clone)]
    enum Does {
        Finish,
        Fail,
        /// Finishes some collections and fails others.
        Partial,
        /// Waits for `Fake::release` (or Ctrl-C, then it is interrupted) and finishes.
        Hold,
    }

    /// Fake steps: each records its start and end in `log`, with what it was started with.
    #[derive(Default)]
    struct Fake {
        does: HashMap<String, Does>,
        done_before: HashMap<String, String>,
        log: Arc<Mutex<Vec<String>>>,
        release: Arc<Notify>,
        /// Told when a held step is running (its future was polled).
        holding: Arc<Notify>,
        cancel: CancellationToken,
    }

    impl Fake {
        fn new(does: &[(&str, Does)]) -> Fake {
            Fake {
                does: does
                    .iter()
                    .map(|(id, d)| (id.to_string(), d.clone()))
                    .collect(),
                ..Fake::default()
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Launch for Fake {
        fn already_done(&self, id: &str) -> Result<Option<String>, CheckpointError> {
            Ok(self.done_before.get(id).cloned())
        }

        fn start(
            &self,
            id: &str,
            _feed: Arc<Feed>,
            upstream: Vec<(String, Arc<Feed>)>,
            partial_at_start: bool,
        ) -> BoxFuture<'static, Finished> {
            let up: Vec<&str> = upstream.iter().map(|(u, _)| u.as_str()).collect();
            let partial = if partial_at_start { " partial" } else { "" };
            self.log
                .lock()
                .unwrap()
                .push(format!("start {id}{up:?}{partial}"));
            let (id, does, log) = (id.to_string(), self.does[id].clone(), self.log.clone());
            let (release, holding) = (self.release.clone(), self.holding.clone());
            let cancel = self.cancel.clone();
            Box::pin(async move {
                let result = match does {
                    Does::Finish => Ok(format!("{id} done")),
                    Does::Fail => Err(StepError::Failed(format!("{id} broke"))),
                    Does::Partial => Err(StepError::Partial {
                        summary: String::new(),
                        failed: vec![("c1".into(), "lost".into())],
                    }),
                    Does::Hold => {
                        holding.notify_one();
                        tokio::select! {
                            _ = release.notified() => Ok(format!("{id} done")),
                            _ = cancel.cancelled() => Err(StepError::Interrupted),
                        }
                    }
                };
                log.lock().unwrap().push(format!("end {id}"));
                Finished {
                    result,
                    partial_input: partial_at_start,
                }
            })
        }
    }

    fn node(id: &str, deps: &[&str]) -> Node {
        Node {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            publishes: matches!(id, "backup" | "copy"),
            pipelines: matches!(id, "copy" | "restore"),
        }
    }

    /// Runs the scheduler to its end: what it returned and the events, as `kind step: text`.
    async fn run(
        nodes: &[Node],
        fake: &Fake,
        limit: usize,
        pipeline: bool,
    ) -> (Scheduled, Vec<String>) {
        let (events, mut rx) = Events::channel();
        let out = schedule(nodes, fake, limit, pipeline, &events, &fake.cancel)
            .await
            .unwrap();
        drop(events);
        let mut seen = Vec::new();
        while let Some(e) = rx.recv().await {
            seen.push(match e {
                Event::StepFinished { step, summary } => format!("finished {step}: {summary}"),
                Event::StepFailed { step, error } => format!("failed {step}: {error}"),
                Event::StepSkipped { step, reason } => format!("skipped {step}: {reason}"),
                other => format!("{other:?}"),
            });
        }
        (out, seen)
    }

    #[tokio::test]
    async fn a_step_starts_after_what_it_needs_has_ended() {
        let fake = Fake::new(&[
            ("a", Does::Finish),
            ("b", Does::Finish),
            ("c", Does::Finish),
        ]);
        let nodes = [node("a", &[]), node("b", &["a"]), node("c", &["b"])];
        let (out, events) = run(&nodes, &fake, 4, true).await;
        assert_eq!(out, Scheduled::default());
        assert_eq!(
            fake.log(),
            [
                "start a[]",
                "end a",
                "start b[]",
                "end b",
                "start c[]",
                "end c"
            ]
        );
        assert_eq!(
            events,
            [
                "finished a: a done",
                "finished b: b done",
                "finished c: c done"
            ]
        );
    }

    #[tokio::test]
    async fn independent_steps_start_at_most_limit_at_a_time() {
        let does = [
            ("a", Does::Finish),
            ("b", Does::Finish),
            ("c", Does::Finish),
        ];
        let nodes = [node("a", &[]), node("b", &[]), node("c", &[])];
        let fake = Fake::new(&does);
        run(&nodes, &fake, 2, true).await;
        assert_eq!(fake.log()[..3], ["start a[]", "start b[]", "end a"]);
        let fake = Fake::new(&does);
        run(&nodes, &fake, 1, true).await;
        assert_eq!(
            fake.log(),
            [
                "start a[]",
                "end a",
                "start b[]",
                "end b",
                "start c[]",
                "end c"
            ]
        );
    }

    /// The scheduler and the held step's task, on one thread: once the held step runs, the
    /// scheduler has made every start it makes before the step ends.
    #[tokio::test(flavor = "current_thread")]
    async fn a_restore_pipelines_on_a_running_backup_only_when_asked() {
        for pipeline in [true, false] {
            let fake = Arc::new(Fake::new(&[
                ("backup", Does::Hold),
                ("restore", Does::Finish),
            ]));
            let nodes = [node("backup", &[]), node("restore", &["backup"])];
            let f = fake.clone();
            let held = fake.holding.notified();
            let scheduler = tokio::spawn(async move { run(&nodes, &f, 4, pipeline).await });
            held.await;
            let started_beside = fake
                .log()
                .contains(&"start restore[\"backup\"]".to_string());
            assert_eq!(started_beside, pipeline, "{:?}", fake.log());
            fake.release.notify_one();
            let (out, _) = scheduler.await.unwrap();
            assert_eq!(out, Scheduled::default());
            if !pipeline {
                assert_eq!(
                    fake.log(),
                    [
                        "start backup[]",
                        "end backup",
                        "start restore[]",
                        "end restore"
                    ]
                );
            }
        }
    }

    #[tokio::test]
    async fn a_failure_skips_its_dependents_and_starts_nothing_new() {
        let fake = Fake::new(&[("a", Does::Fail), ("b", Does::Finish), ("c", Does::Finish)]);
        let nodes = [node("a", &[]), node("c", &[]), node("b", &["a"])];
        let (out, events) = run(&nodes, &fake, 1, true).await;
        assert_eq!(out.failure.as_deref(), Some("step `a`: a broke"));
        assert!(!out.interrupted);
        assert_eq!(fake.log(), ["start a[]", "end a"]);
        assert_eq!(
            events,
            [
                "failed a: a broke",
                "skipped b: it needs `a`, which did not finish",
                "skipped c: not started after an earlier failure",
            ]
        );
    }

    #[tokio::test]
    async fn what_depends_on_a_partial_step_runs_on_its_finished_part() {
        let fake = Fake::new(&[("a", Does::Partial), ("b", Does::Finish)]);
        let nodes = [node("a", &[]), node("b", &["a"])];
        let (out, events) = run(&nodes, &fake, 4, true).await;
        assert_eq!(
            out.failure.as_deref(),
            Some("step `a`: 1 of the step's collections failed: `c1`: lost")
        );
        assert_eq!(
            fake.log(),
            ["start a[]", "end a", "start b[] partial", "end b"]
        );
        assert_eq!(
            events[1],
            "finished b: b done (of what earlier steps finished; the rest follows with the next \
             apply)"
        );
    }

    #[tokio::test]
    async fn ctrl_c_interrupts_running_steps_and_starts_no_more() {
        let fake = Arc::new(Fake::new(&[
            ("a", Does::Hold),
            ("b", Does::Finish),
            ("c", Does::Finish),
        ]));
        let nodes = [node("a", &[]), node("b", &["a"]), node("c", &[])];
        let f = fake.clone();
        let held = fake.holding.notified();
        let scheduler = tokio::spawn(async move { run(&nodes, &f, 1, true).await });
        held.await;
        fake.cancel.cancel();
        let (out, events) = scheduler.await.unwrap();
        assert_eq!(
            out,
            Scheduled {
                failure: None,
                interrupted: true
            }
        );
        assert_eq!(fake.log(), ["start a[]", "end a"]);
        assert_eq!(
            events,
            [
                "skipped a: interrupted; its finished tasks are recorded",
                "skipped b: it needs `a`, which did not finish",
                "skipped c: interrupted before it started",
            ]
        );
    }

    #[tokio::test]
    async fn a_step_done_earlier_in_the_run_is_not_started_again() {
        let mut fake = Fake::new(&[("a", Does::Fail), ("b", Does::Finish)]);
        fake.done_before.insert("a".into(), "3 collections".into());
        let nodes = [node("a", &[]), node("b", &["a"])];
        let (out, events) = run(&nodes, &fake, 4, true).await;
        assert_eq!(out, Scheduled::default());
        assert_eq!(fake.log(), ["start b[]", "end b"]);
        assert_eq!(
            events[0],
            "finished a: already done in this run: 3 collections"
        );
    }
}
