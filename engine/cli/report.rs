//! Renders executor events: progress bars on a terminal, plain lines otherwise, or JSON lines.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use planrun::events::{Event, Outcome};
use planrun::text::{human_bytes, short};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Progress bars when stderr is a terminal, plain lines when it is not.
    Auto,
    Plain,
    Json,
}

/// What a step did, summed from its events: the final summary and the tests read this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepTotals {
    pub planned_objects: u64,
    pub planned_bytes: u64,
    pub objects: u64,
    pub bytes: u64,
    pub planned_rows: u64,
    pub rows: u64,
    pub state: String,
    pub summary: String,
}

pub struct Report {
    pub steps: BTreeMap<String, StepTotals>,
    /// Per step, every collection that finished (`None`) or failed (`Some(why)`), in order.
    pub units: BTreeMap<String, Vec<(String, Option<String>)>>,
    pub outcome: Option<Outcome>,
    pub events: Vec<Event>,
}

/// Consumes events until the channel closes, rendering them to stderr.
pub async fn render(mut rx: mpsc::UnboundedReceiver<Event>, style: Style) -> Report {
    let bars = style == Style::Auto && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let bar_style = ProgressStyle::with_template(
        "{prefix:>12.bold} [{bar:30}] {pos}/{len} {msg}  {elapsed_precise} ETA {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let mut progress: BTreeMap<String, (ProgressBar, Instant)> = BTreeMap::new();
    let mut last_line: BTreeMap<String, Instant> = BTreeMap::new();
    let mut report = Report {
        steps: BTreeMap::new(),
        units: BTreeMap::new(),
        outcome: None,
        events: Vec::new(),
    };
    let line = |text: String| {
        if bars {
            let _ = multi.println(text);
        } else {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    };
    while let Some(event) = rx.recv().await {
        if style == Style::Json {
            let _ = writeln!(
                std::io::stderr(),
                "{}",
                serde_json::to_string(&event).expect("events serialise")
            );
        }
        match &event {
            Event::RunStarted {
                run,
                resumed,
                done,
                total,
            } if style != Style::Json => {
                if *resumed {
                    line(format!(
                        "resuming run {}: {done} of {total} tasks done",
                        short(run)
                    ));
                } else {
                    line(format!("starting run {}", short(run)));
                }
            }
            Event::StepStarted { step, kind } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.state = "running".into();
                if style != Style::Json {
                    line(format!("{step}: {kind} started"));
                }
                let pb = multi.add(ProgressBar::new(0));
                pb.set_style(bar_style.clone());
                pb.set_prefix(step.clone());
                progress.insert(step.clone(), (pb, Instant::now()));
            }
            Event::Planned {
                step,
                objects,
                bytes,
                rows,
            } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.planned_objects += objects;
                t.planned_bytes += bytes;
                t.planned_rows += rows;
                if let Some((pb, _)) = progress.get(step) {
                    pb.set_length(t.counted().1);
                }
            }
            Event::Progress {
                step,
                objects,
                bytes,
                rows,
            } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.objects += objects;
                t.bytes += bytes;
                t.rows += rows;
                if let Some((pb, started)) = progress.get(step) {
                    let (done, _) = t.counted();
                    let rate = t.rate(started.elapsed());
                    pb.set_position(done);
                    pb.set_message(rate.clone());
                    let due = last_line
                        .get(step)
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
                    if !bars && style != Style::Json && due {
                        last_line.insert(step.clone(), Instant::now());
                        let (done, planned) = t.counted();
                        line(format!("{step}: {done}/{planned} {rate}"));
                    }
                }
            }
            Event::Phase {
                step,
                collection,
                phase,
                seconds,
            } if style != Style::Json => {
                line(format!("{step}: `{collection}` {phase} {seconds:.1} s"))
            }
            Event::Info { step, message } if style != Style::Json => {
                line(format!("{step}: {message}"))
            }
            Event::Warning { step, message } if style != Style::Json => {
                line(format!("{step}: warning: {message}"))
            }
            Event::Backoff { message, .. } if style != Style::Json => {
                line(format!("warning: {message}"))
            }
            Event::StepFinished { step, summary } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.state = "done".into();
                t.summary = summary.clone();
                if let Some((pb, _)) = progress.remove(step) {
                    pb.finish_and_clear();
                }
                if style != Style::Json {
                    line(format!("{step}: done: {summary}"));
                }
            }
            Event::StepFailed { step, error } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.state = "failed".into();
                t.summary = error.clone();
                if let Some((pb, _)) = progress.remove(step) {
                    pb.abandon();
                }
                if style != Style::Json {
                    line(format!("{step}: FAILED: {error}"));
                }
            }
            Event::StepSkipped { step, reason } => {
                let t = report.steps.entry(step.clone()).or_default();
                t.state = "skipped".into();
                t.summary = reason.clone();
                if style != Style::Json {
                    line(format!("{step}: not run: {reason}"));
                }
            }
            Event::Unit { step, unit, error } => {
                report
                    .units
                    .entry(step.clone())
                    .or_default()
                    .push((unit.clone(), error.clone()));
                if let (Some(e), true) = (error, style != Style::Json) {
                    line(format!("{step}: `{unit}` FAILED: {e}"));
                }
            }
            Event::RunFinished { outcome, .. } => report.outcome = Some(*outcome),
            _ => {}
        }
        report.events.push(event);
    }
    for (_, (pb, _)) in progress {
        pb.abandon();
    }
    report
}

impl Report {
    /// The per-collection table of a run where some collections failed: every collection of
    /// every step, done or failed with the reason. Empty when none failed.
    pub fn unit_table(&self) -> String {
        if !self.units.values().flatten().any(|(_, e)| e.is_some()) {
            return String::new();
        }
        let mut out = String::from("\nCollections:\n");
        for (step, units) in &self.units {
            for (unit, error) in units {
                match error {
                    None => out += &format!("  {step:<12} {unit:<40} done\n"),
                    Some(e) => out += &format!("  {step:<12} {unit:<40} FAILED: {e}\n"),
                }
            }
        }
        out
    }
}

impl StepTotals {
    /// A step counts rows (rows mode, verify) or objects (binlogs, copies): done and planned.
    fn counted(&self) -> (u64, u64) {
        if self.rows > 0 || self.planned_rows > 0 {
            (self.rows, self.planned_rows)
        } else {
            (self.objects, self.planned_objects)
        }
    }

    /// What follows `done/planned` in a progress line: the unit and the rate.
    fn rate(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(0.001);
        if self.rows > 0 || self.planned_rows > 0 {
            return format!("rows ({:.0} rows/s)", self.rows as f64 / secs);
        }
        format!(
            "objects, {} / {} ({}/s)",
            human_bytes(self.bytes),
            human_bytes(self.planned_bytes),
            human_bytes((self.bytes as f64 / secs) as u64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use planrun::events::Events;

    #[tokio::test]
    async fn totals_add_up_from_events() {
        let (events, rx) = Events::channel();
        let reporter = tokio::spawn(render(rx, Style::Plain));
        events.send(Event::StepStarted {
            step: "copy".into(),
            kind: "copy".into(),
        });
        events.planned("copy", 3, 300);
        events.progress("copy", 2, 200);
        events.progress("copy", 1, 100);
        events.send(Event::StepFinished {
            step: "copy".into(),
            summary: "3 objects".into(),
        });
        drop(events);
        let report = reporter.await.unwrap();
        let t = &report.steps["copy"];
        assert_eq!((t.planned_objects, t.objects, t.bytes), (3, 3, 300));
        assert_eq!(t.state, "done");
    }

    #[tokio::test]
    async fn rows_steps_count_rows_not_objects() {
        let (events, rx) = Events::channel();
        let reporter = tokio::spawn(render(rx, Style::Plain));
        events.planned_rows("restore", 500);
        events.progress_rows("restore", 300);
        drop(events);
        let t = &reporter.await.unwrap().steps["restore"];
        assert_eq!(t.counted(), (300, 500));
        assert!(
            t.rate(Duration::from_secs(1))
                .starts_with("rows (300 rows/s)")
        );
        assert_eq!((t.objects, t.bytes), (0, 0));
    }
}
