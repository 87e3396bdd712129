//! Applying a compiled plan on the command line: preview, show, ask (or check a reviewed plan
//! against the fresh preview), run with the reporter, and say how it ended.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use planrun::checkpoint::Store;
use planrun::events::{Events, Outcome};
use planrun::exec::preview::{self, Preview};
use planrun::exec::run::{self, ApplyOptions};
use planrun::exec::saved::SavedPlan;
use planrun::plan::Compiled;
use planrun::text::short;
use tokio_util::sync::CancellationToken;

use super::preview::render;
use super::report::{self, Style};
use crate::{Failure, fail};

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

pub struct ApplyArgs {
    pub yes: bool,
    pub restart: bool,
    pub style: Style,
}

/// Previews, shows, asks, then applies. A `reviewed` (saved) plan is instead checked against
/// the fresh preview and runs without showing or asking again.
pub(super) fn apply_compiled(
    compiled: &Compiled,
    args: &ApplyArgs,
    reviewed: Option<&Reviewed>,
) -> Result<ExitCode, Failure> {
    let rt = runtime();
    let started = Instant::now();
    let previewed = unless_interrupted(&rt, async {
        // A changed plan stops before anything is shown as if it would run.
        // One read-only copy of the state dir serves the changed-plan check and the preview.
        let state = open_read(&compiled.plan.settings.state_dir)?;
        let store = state.as_ref().map(|(s, _)| s);
        if !args.restart
            && let Some(store) = store
        {
            run::check_unchanged(store, &compiled.plan).map_err(fail)?;
        }
        preview::preview(compiled, store).await.map_err(fail)
    });
    let Some(p) = previewed else {
        return Ok(interrupted());
    };
    let p: Preview = p?;
    if let Some(r) = reviewed {
        r.check(&p, compiled)?;
    }
    let mut err = std::io::stderr().lock();
    if reviewed.is_some() {
        // Shown when it was saved; `check` said it is unchanged.
    } else if p.summary.steps_to_run == 0 && p.resumes.is_none() {
        // Fall through: apply itself recognises a finished plan and says so.
    } else {
        write!(err, "{}", compiled.plan.redact(&render(&p)))?;
    }
    let blocking: Vec<String> = p
        .steps
        .iter()
        .filter(|s| s.action != "done")
        .flat_map(|s| s.conflicts.iter().map(move |c| format!("  {}: {c}", s.id)))
        .collect();
    if !blocking.is_empty() && !args.restart {
        return Err(fail(compiled.plan.redact(&format!(
            "not applying: {} conflict(s) would stop the run half way:\n{}\n\
             fix them and apply again",
            blocking.len(),
            blocking.join("\n")
        ))));
    }
    // A saved plan was reviewed before it was saved: that was the confirmation.
    if !args.yes
        && reviewed.is_none()
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
    {
        write!(err, "\nApply this plan? Only `yes` is accepted: ")?;
        err.flush()?;
        // The preview's listener left Ctrl-C caught for good (tokio never gives a signal back):
        // at the prompt it still ends the command, nothing being open.
        let at_prompt = rt.spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\n{NOTHING_CHANGED}");
                std::process::exit(130);
            }
        });
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer);
        at_prompt.abort();
        read?;
        if answer.trim() != "yes" {
            writeln!(err, "Not applied.")?;
            return Ok(ExitCode::from(1));
        }
    }
    drop(err);

    let cancel = CancellationToken::new();
    let (events, rx) = Events::channel();
    let plan = compiled.plan.clone();
    let events = events.redacting(move |s| plan.redact(s));
    let style = args.style;
    let result = rt.block_on(async {
        let reporter = tokio::spawn(report::render(rx, style));
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: finishing the tasks in flight and recording progress \
                     (press Ctrl-C again to stop at once)"
                );
                c.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let opts = ApplyOptions {
            restart: args.restart,
        };
        let r = run::apply(compiled, &opts, events, cancel.clone()).await;
        let report = reporter.await.expect("reporter task");
        (r, report)
    });
    let (applied, report) = result;
    let applied = applied.map_err(fail)?;
    let path = compiled.plan.path.display();
    let mut err = std::io::stderr().lock();
    if applied.nothing_to_do {
        writeln!(
            err,
            "nothing to do: run {} already applied this plan completely",
            short(&applied.run)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    write!(err, "{}", report.unit_table())?;
    let done = report.steps.values().filter(|s| s.state == "done").count();
    let total = compiled.plan.steps.len();
    let secs = started.elapsed().as_secs_f64();
    match applied.outcome {
        Outcome::Done => {
            writeln!(
                err,
                "\nApply complete: {done} of {total} steps done in {secs:.1}s (run {}).",
                short(&applied.run)
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted => {
            writeln!(
                err,
                "\nInterrupted: {done} of {total} steps done; progress is recorded.\n\
                 Resume with: planrun apply {path}   (or: planrun resume {} --plan {path})",
                short(&applied.run)
            )?;
            Ok(ExitCode::from(130))
        }
        Outcome::Failed => {
            writeln!(
                err,
                "\nApply failed: {done} of {total} steps done (run {}). Finished work is \
                 recorded; fix the cause and run `planrun apply {path}` to resume.",
                short(&applied.run)
            )?;
            Ok(ExitCode::from(1))
        }
    }
}

/// A saved plan being applied: the file it came from and what it holds.
pub struct Reviewed {
    pub file: std::path::PathBuf,
    pub saved: SavedPlan,
}

impl Reviewed {
    /// What to do when it is refused.
    pub(super) fn again(&self) -> String {
        format!(
            "run `planrun plan {} -o {}` again and review it",
            self.saved.plan.path,
            self.file.display()
        )
    }

    pub(super) fn refuse(&self, why: &str, details: &str) -> Failure {
        fail(format!(
            "not applying the saved plan `{}`: {why} since it was saved ({}):\n{details}\n{}",
            self.file.display(),
            self.saved.saved_at,
            self.again()
        ))
    }

    /// Refuses when the fresh preview `p` says anything the saved one did not.
    pub fn check(&self, p: &Preview, compiled: &Compiled) -> Result<(), Failure> {
        let diffs = self.saved.differences(p, &compiled.plan);
        if diffs.is_empty() {
            eprintln!(
                "Applying the saved plan `{}` (saved {}): the plan file and the servers are as it \
                 saw them.",
                self.file.display(),
                self.saved.saved_at
            );
            return Ok(());
        }
        let lines: Vec<String> = diffs.iter().map(|d| format!("  {d}")).collect();
        Err(self.refuse("what it would do changed", &lines.join("\n")))
    }
}

/// A read-only copy of the state dir; records a damaged store lost are reported on stderr.
pub(super) fn open_read(dir: &Path) -> Result<Option<(Store, tempfile::TempDir)>, Failure> {
    let state = Store::open_snapshot(dir).map_err(fail)?;
    if let Some(damage) = state.as_ref().and_then(|(s, _)| s.damage()) {
        eprintln!("warning: {damage}\n");
    }
    Ok(state)
}

const NOTHING_CHANGED: &str = "interrupted; nothing was changed";

/// Runs the read-only start of `plan` and `apply` (the state dir's snapshot, the preview) unless
/// Ctrl-C comes first. Then it is dropped, its snapshot copy with it, and `None` is returned:
/// nothing was changed, so there is nothing to finish.
pub(super) fn unless_interrupted<T>(
    rt: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    rt.block_on(async {
        tokio::select! {
            // Listening starts before the work does.
            biased;
            Ok(()) = tokio::signal::ctrl_c() => None,
            t = work => Some(t),
        }
    })
}

/// What `plan` and `apply` say when Ctrl-C stopped them before anything ran.
pub(super) fn interrupted() -> ExitCode {
    eprintln!("\n{NOTHING_CHANGED}");
    ExitCode::from(130)
}
