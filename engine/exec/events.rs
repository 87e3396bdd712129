//! What the executor tells the world: a stream of events that reporters render and tests assert on.

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
    /// Work a step has discovered it must do, so progress bars know their length.
    Planned {
        step: String,
        objects: u64,
        bytes: u64,
    },
    /// Work finished: objects copied or verified present, bytes moved through planrun or server-side.
    Progress {
        step: String,
        objects: u64,
        bytes: u64,
    },
    Info {
        step: String,
        message: String,
    },
    Warning {
        step: String,
        message: String,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Failed,
    Interrupted,
}

/// The sending side, cheap to clone into every task. Sending never blocks the executor.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Event>,
}

impl Events {
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events { tx }, rx)
    }

    pub fn send(&self, event: Event) {
        // A reporter that has gone away must not stop the run.
        let _ = self.tx.send(event);
    }

    pub fn info(&self, step: &str, message: impl Into<String>) {
        self.send(Event::Info {
            step: step.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&self, step: &str, message: impl Into<String>) {
        self.send(Event::Warning {
            step: step.to_string(),
            message: message.into(),
        });
    }

    pub fn planned(&self, step: &str, objects: u64, bytes: u64) {
        self.send(Event::Planned {
            step: step.to_string(),
            objects,
            bytes,
        });
    }

    pub fn progress(&self, step: &str, objects: u64, bytes: u64) {
        self.send(Event::Progress {
            step: step.to_string(),
            objects,
            bytes,
        });
    }
}
