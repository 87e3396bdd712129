//! The commands that talk to servers and the state dir: `plan`, `apply`, `resume`, `runs`, `status`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use planrun::checkpoint::{self, RunRecord, RunStatus, Store};
use planrun::exec::preview;
use planrun::text::short;

use planrun::exec::run;
use planrun::plan;

use super::apply::{
    ApplyArgs, apply_compiled, interrupted, open_read, runtime, unless_interrupted,
};
use super::preview::render;
use super::saved;
use crate::{Failure, fail};
use planrun::exec::saved::SavedPlan;

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
