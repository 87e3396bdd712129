//! The commands that talk to servers and the state dir: `plan`, `apply`, `resume`, `runs`, `status`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use planrun::checkpoint::{self, RunRecord, RunStatus, Store};
use planrun::events::{Events, Outcome};
use planrun::exec::preview::{self, Preview};
use planrun::text::short;

use super::report::{self, Style};
use planrun::exec::run::{self, ApplyOptions};
use planrun::plan::{self, Compiled};
use tokio_util::sync::CancellationToken;

use super::preview::render;
use super::saved::{self, Reviewed};
use crate::Failure;
use planrun::exec::saved::SavedPlan;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

pub(super) fn fail(msg: impl std::fmt::Display) -> Failure {
    Failure {
        report: miette::miette!("{msg}"),
        code: 1,
    }
}

/// `planrun plan`: exit 0 with nothing to do, 2 with changes under --detailed-exitcode, 1 on error.
/// With `out`, the preview is saved there too (see `saved::save`).
pub fn plan(
    path: &Path,
    json: bool,
    detailed: bool,
    out: Option<&Path>,
) -> Result<ExitCode, Failure> {
    // A saved plan is applied from any directory: it names, and is made from, the absolute path.
    let from = match out {
        Some(_) => run::plan_file(path),
        None => path.to_path_buf(),
    };
    // Under --detailed-exitcode, 2 means "changes": an invalid plan is an error (1) there.
    let compiled = plan::load(&from).map_err(|e| {
        let mut f = Failure::from(e);
        if detailed {
            f.code = 1;
        }
        f
    })?;
    let dir = &compiled.plan.settings.state_dir;
    let previewed = unless_interrupted(&runtime(), async {
        let state = open_read(dir)?;
        preview::preview(&compiled, state.as_ref().map(|(s, _)| s))
            .await
            .map_err(fail)
    });
    let Some(p) = previewed else {
        return Ok(interrupted());
    };
    let p = p?;
    let mut stdout = std::io::stdout().lock();
    // Messages from servers may quote values that came from the environment: mask them.
    let text = if json {
        serde_json::to_string_pretty(&p).map_err(fail)? + "\n"
    } else {
        render(&p)
    };
    write!(stdout, "{}", compiled.plan.redact(&text))?;
    drop(stdout);
    if let Some(out) = out {
        saved::save(&compiled, &p, out, path)?;
    }
    // Conflicts stop apply: the dry run fails too (as Terraform's plan does on errors).
    if p.summary.conflicts > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(if detailed && p.summary.steps_to_run > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

pub struct ApplyArgs {
    pub yes: bool,
    pub restart: bool,
    pub style: Style,
}

/// `planrun apply FILE`: a plan file, or a plan saved by `plan -o` (told apart by content).
pub fn apply(path: &Path, args: &ApplyArgs) -> Result<ExitCode, Failure> {
    // An unreadable file is left to the plan loader, which says so in its usual words.
    if let Ok(text) = std::fs::read_to_string(path) {
        match SavedPlan::detect(&text) {
            Ok(Some(s)) => return saved::apply(path, s, args),
            Ok(None) => {}
            Err(why) => {
                return Err(fail(format!(
                    "`{}` is neither a plan nor a saved plan: {why}",
                    path.display()
                )));
            }
        }
    }
    let compiled = plan::load(path)?;
    apply_compiled(&compiled, args, None)
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

/// Where runs are recorded: `--state-dir`, else the plan's `settings.state_dir`, else `./.planrun`.
pub fn state_dir(plan_path: Option<&Path>, dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(d) = dir {
        return Ok(d);
    }
    if let Some(p) = plan_path {
        return Ok(plan::load(p)?.plan.settings.state_dir);
    }
    let here = PathBuf::from(".planrun");
    if here.exists() {
        return Ok(here);
    }
    Err(fail(
        "which runs? no `.planrun` here: pass --plan PLAN (its settings.state_dir) or --state-dir DIR",
    ))
}

/// A read-only copy of the state dir; records a damaged store lost are reported on stderr.
fn open_read(dir: &Path) -> Result<Option<(Store, tempfile::TempDir)>, Failure> {
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
fn unless_interrupted<T>(
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
fn interrupted() -> ExitCode {
    eprintln!("\n{NOTHING_CHANGED}");
    ExitCode::from(130)
}

pub fn runs(dir: &Path) -> Result<ExitCode, Failure> {
    let mut out = std::io::stdout().lock();
    let Some((store, _tmp)) = open_read(dir)? else {
        writeln!(out, "no runs recorded in `{}`", dir.display())?;
        return Ok(ExitCode::SUCCESS);
    };
    let runs = store.runs().map_err(fail)?;
    writeln!(
        out,
        "{:<10} {:<12} {:<24} {:>11}  plan",
        "run", "status", "started", "tasks done"
    )?;
    for r in runs {
        let (done, _) = store.tasks(&r.id).and_then(|t| t.count("")).map_err(fail)?;
        writeln!(
            out,
            "{:<10} {:<12} {:<24} {:>11}  {} ({})",
            short(&r.id),
            status_of(&r, dir),
            checkpoint::format_time(r.started_at),
            done,
            r.plan_name,
            r.plan_path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A run recorded as running whose process is gone was killed: say so.
fn status_of(r: &RunRecord, dir: &Path) -> &'static str {
    match r.status {
        RunStatus::Running if checkpoint::lock_holder(dir).is_none() => "interrupted",
        s => status_name(s),
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Failed => "failed",
        RunStatus::Done => "done",
    }
}

pub fn status(dir: &Path, run: Option<&str>) -> Result<ExitCode, Failure> {
    let mut out = std::io::stdout().lock();
    let Some((store, _tmp)) = open_read(dir)? else {
        writeln!(out, "no runs recorded in `{}`", dir.display())?;
        return Ok(ExitCode::SUCCESS);
    };
    let r: RunRecord = match run {
        Some(id) => store.run(id).map_err(fail)?,
        None => match store.runs().map_err(fail)?.pop() {
            Some(r) => r,
            None => {
                writeln!(out, "no runs recorded in `{}`", dir.display())?;
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    let tasks = store.tasks(&r.id).map_err(fail)?;
    writeln!(
        out,
        "run {} of plan `{}` ({})",
        r.id,
        r.plan_name,
        r.plan_path.display()
    )?;
    writeln!(
        out,
        "status {}, started {}, last update {}",
        status_of(&r, dir),
        checkpoint::format_time(r.started_at),
        checkpoint::format_time(r.updated_at)
    )?;
    if let Some(e) = &r.error {
        writeln!(out, "error: {e}")?;
    }
    let ids: Vec<&str> = r
        .plan
        .get("steps")
        .and_then(|s| s.as_array())
        .map(|steps| steps.iter().filter_map(|s| s.get("id")?.as_str()).collect())
        .unwrap_or_default();
    for &id in &ids {
        let summary: Option<String> = tasks.done(&planrun::steps::done_key(id)).map_err(fail)?;
        let (done, all) = tasks.count(&format!("{id}/")).map_err(fail)?;
        let line = match summary {
            Some(s) => format!("done: {s}"),
            None if all > 0 => format!("in progress: {done} of {all} recorded tasks done"),
            None => "not started".to_string(),
        };
        writeln!(out, "  {id}: {line}")?;
    }
    write!(out, "{}", collections(&tasks, &ids).map_err(fail)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The collections × steps table of `status`: how each step ended for each collection it
/// took (restores and verifies named after the source), then why each failure failed.
fn collections(
    tasks: &checkpoint::Tasks,
    ids: &[&str],
) -> Result<String, checkpoint::CheckpointError> {
    use checkpoint::TaskState;
    use planrun::steps::{SOURCE, UNIT};
    use std::collections::BTreeMap;
    // collection → step → cell
    let mut rows: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for id in ids {
        let sources: BTreeMap<String, String> = tasks
            .scan(&format!("{id}/{SOURCE}/"))?
            .into_iter()
            .filter_map(|(k, v)| match v {
                TaskState::Done(serde_json::Value::String(from)) => {
                    Some((k[id.len() + SOURCE.len() + 2..].to_string(), from))
                }
                _ => None,
            })
            .collect();
        for (k, v) in tasks.scan(&format!("{id}/{UNIT}/"))? {
            let unit = &k[id.len() + UNIT.len() + 2..];
            let error = match v {
                TaskState::Done(serde_json::Value::String(e)) => Some(e),
                _ => None,
            };
            let row = sources.get(unit).map_or(unit, String::as_str);
            let mut cell = if error.is_some() { "FAILED" } else { "done" }.to_string();
            if row != unit {
                cell += &format!(" → {unit}");
            }
            if let Some(e) = error {
                failures.push(format!("  {id} {unit}: {e}"));
            }
            rows.entry(row.to_string()).or_default().insert(id, cell);
        }
    }
    if rows.is_empty() {
        return Ok(String::new());
    }
    let width = |cells: &mut dyn Iterator<Item = usize>| cells.max().unwrap_or(0);
    let first = width(&mut rows.keys().map(|k| k.chars().count())).max("collection".len());
    let cols: Vec<usize> = ids
        .iter()
        .map(|id| {
            let cells = rows
                .values()
                .filter_map(|r| r.get(id))
                .map(|c| c.chars().count());
            width(&mut cells.chain([id.chars().count(), 1]))
        })
        .collect();
    let mut text = format!("\n{:<first$}", "collection");
    for (id, w) in ids.iter().zip(&cols) {
        text += &format!("  {id:<w$}");
    }
    for (row, cells) in &rows {
        text += &format!("\n{row:<first$}");
        for (id, w) in ids.iter().zip(&cols) {
            text += &format!("  {:<w$}", cells.get(id).map_or("-", String::as_str));
        }
    }
    // The last column is padded like the others; trailing blanks are dropped.
    let mut text: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if !failures.is_empty() {
        text += &format!("\nfailed:\n{}\n", failures.join("\n"));
    }
    Ok(text)
}

/// `planrun resume RUN`: apply the plan that run belongs to, which must be unchanged.
pub fn resume(dir: &Path, run: &str, args: &ApplyArgs) -> Result<ExitCode, Failure> {
    let r = {
        // Quietly: apply reads the state dir again and reports any damage there.
        let Some((store, _tmp)) = Store::open_snapshot(dir).map_err(fail)? else {
            return Err(fail(format!("no runs recorded in `{}`", dir.display())));
        };
        store.run(run).map_err(fail)?
    };
    if r.status == RunStatus::Done {
        eprintln!("run {} is already done; nothing to resume", short(&r.id));
        return Ok(ExitCode::SUCCESS);
    }
    let compiled = plan::load(&r.plan_path)?;
    if compiled.plan.fingerprint() != r.fingerprint {
        return Err(fail(format!(
            "the plan `{}` changed since run {} started:\n{}\napply it with --restart to start anew",
            r.plan_path.display(),
            short(&r.id),
            run::json_diff(&r.plan, &compiled.plan.describe_json())
        )));
    }
    apply_compiled(&compiled, args, None)
}
