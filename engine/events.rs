//! What the executor tells the world: a stream of events that reporters render and tests assert on.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A run begins; `done`/`total` count the tasks a resumed run had already finished.
    RunStarted {
        run: String,
        resumed: bool,
        done: usize,
        total: usize,
    },
    StepStarted {
        step: String,
        kind: String,
    },
    /// Work a step has discovered it must do, so progress bars know their length. Steps that
    /// move objects count `objects` and `bytes`; steps that move rows (rows mode, verify) `rows`.
    Planned {
        step: String,
        objects: u64,
        bytes: u64,
        rows: u64,
    },
    /// Work finished: objects copied or verified present, bytes moved through planrun or
    /// server-side, rows read, inserted or compared.
    Progress {
        step: String,
        objects: u64,
        bytes: u64,
        rows: u64,
    },
    /// One phase of a step's work on one collection ended (flush, copy, import, index, load):
    /// where the time of a migration went, without a profiler.
    Phase {
        step: String,
        collection: String,
        phase: String,
        seconds: f64,
    },
    Info {
        step: String,
        message: String,
    },
    Warning {
        step: String,
        message: String,
    },
    /// A server pushed back (a rate limit, busy) and planrun slowed down what it sends there, or
    /// it cannot be reached and planrun waits for it to come back; said once per run and server
    /// and cause (`target`: an instance id).
    Backoff {
        target: String,
        message: String,
    },
    /// One collection of a step finished (`error` is `None`) or failed; the others go on.
    Unit {
        step: String,
        unit: String,
        error: Option<String>,
    },
    StepFinished {
        step: String,
        summary: String,
    },
    StepFailed {
        step: String,
        error: String,
    },
    /// Not run because a step it depends on failed or the run was interrupted.
    StepSkipped {
        step: String,
        reason: String,
    },
    RunFinished {
        run: String,
        outcome: Outcome,
    },
}

impl Event {
    /// Every text the event carries: what redaction must see, whatever the kind of event (a
    /// collection or unit name may come from `env` as much as a message).
    fn texts(&mut self) -> Vec<&mut String> {
        match self {
            Event::RunStarted { run, .. } | Event::RunFinished { run, .. } => vec![run],
            Event::StepStarted { step, kind } => vec![step, kind],
            Event::Planned { step, .. } | Event::Progress { step, .. } => vec![step],
            Event::Phase {
                step,
                collection,
                phase,
                ..
            } => vec![step, collection, phase],
            Event::Info { step, message } | Event::Warning { step, message } => vec![step, message],
            Event::Backoff { target, message } => vec![target, message],
            Event::Unit { step, unit, error } => {
                let mut v = vec![step, unit];
                v.extend(error.as_mut());
                v
            }
            Event::StepFinished { step, summary } => vec![step, summary],
            Event::StepFailed { step, error } => vec![step, error],
            Event::StepSkipped { step, reason } => vec![step, reason],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Failed,
    Interrupted,
}

type Redact = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The sending side, cheap to clone into every task. Sending never blocks the executor.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Event>,
    redact: Option<Redact>,
}

impl Events {
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events { tx, redact: None }, rx)
    }

    /// Every message sent from now on passes through `redact` (the plan's, which masks values
    /// that came from the environment), so no reporter or log can show them.
    pub fn redacting(mut self, redact: impl Fn(&str) -> String + Send + Sync + 'static) -> Events {
        self.redact = Some(Arc::new(redact));
        self
    }

    pub fn send(&self, mut event: Event) {
        if let Some(r) = &self.redact {
            for text in event.texts() {
                *text = r(text);
            }
        }
        // A reporter that has gone away must not stop the run.
        let _ = self.tx.send(event);
    }

    pub fn info(&self, step: &str, message: impl Into<String>) {
        self.send(Event::Info {
            step: step.to_string(),
            message: message.into(),
        });
    }

    /// A collection of `step` finished, or failed with `error`.
    pub fn unit(&self, step: &str, unit: &str, error: Option<&str>) {
        self.send(Event::Unit {
            step: step.to_string(),
            unit: unit.to_string(),
            error: error.map(str::to_string),
        });
    }

    pub fn warn(&self, step: &str, message: impl Into<String>) {
        self.send(Event::Warning {
            step: step.to_string(),
            message: message.into(),
        });
    }

    /// `phase` of `collection` took from `since` until now.
    pub fn phase(&self, step: &str, collection: &str, phase: &str, since: std::time::Instant) {
        self.send(Event::Phase {
            step: step.to_string(),
            collection: collection.to_string(),
            phase: phase.to_string(),
            seconds: since.elapsed().as_secs_f64(),
        });
    }

    pub fn planned(&self, step: &str, objects: u64, bytes: u64) {
        self.send(Event::Planned {
            step: step.to_string(),
            objects,
            bytes,
            rows: 0,
        });
    }

    pub fn progress(&self, step: &str, objects: u64, bytes: u64) {
        self.send(Event::Progress {
            step: step.to_string(),
            objects,
            bytes,
            rows: 0,
        });
    }

    pub fn planned_rows(&self, step: &str, rows: u64) {
        self.send(Event::Planned {
            step: step.to_string(),
            objects: 0,
            bytes: 0,
            rows,
        });
    }

    pub fn progress_rows(&self, step: &str, rows: u64) {
        self.send(Event::Progress {
            step: step.to_string(),
            objects: 0,
            bytes: 0,
            rows,
        });
    }
}
