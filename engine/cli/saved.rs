//! Saved plans on the command line: `plan -o FILE` writes one, `apply FILE` runs it unchanged.

use std::path::Path;
use std::process::ExitCode;

use planrun::exec::preview::Preview;
use planrun::exec::saved::SavedPlan;
use planrun::plan::{self, Compiled};

use super::apply::{ApplyArgs, Reviewed, apply_compiled};
use crate::{Failure, fail};

/// Writes the saved plan of `preview` to `out`; refuses one with conflicts, which apply could
/// not run: a reviewed plan must be applicable.
pub fn save(compiled: &Compiled, p: &Preview, out: &Path, given: &Path) -> Result<(), Failure> {
    if p.summary.conflicts > 0 {
        return Err(fail(format!(
            "not saved to `{}`: the plan has {} conflict(s) (shown above), and a saved plan must \
             be one apply can run; fix them and run `planrun plan {} -o {}` again",
            out.display(),
            p.summary.conflicts,
            given.display(),
            out.display()
        )));
    }
    let saved = SavedPlan::new(&compiled.plan, p, planrun::checkpoint::now());
    let text = serde_json::to_string_pretty(&saved).map_err(fail)? + "\n";
    // Written whole or not at all: a half-written file must not pass for a reviewed plan.
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())?;
        tmp.persist(out).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| {
        fail(format!(
            "cannot write the saved plan `{}`: {e}",
            out.display()
        ))
    })?;
    eprintln!(
        "Saved this plan to `{}`. To apply exactly this: planrun apply {}",
        out.display(),
        out.display()
    );
    Ok(())
}

/// `planrun apply FILE` of a saved plan: the plan file it names must be unchanged, and a fresh
/// preview must say what the saved one said; then it runs without asking again (the review
/// was the confirmation).
pub fn apply(file: &Path, saved: SavedPlan, args: &ApplyArgs) -> Result<ExitCode, Failure> {
    let r = Reviewed {
        file: file.to_path_buf(),
        saved,
    };
    let ours = env!("CARGO_PKG_VERSION");
    if r.saved.planrun_version != ours {
        return Err(fail(format!(
            "not applying the saved plan `{}`: planrun {} saved it and this is planrun {ours}, \
             whose preview may say things in other words; {}",
            file.display(),
            r.saved.planrun_version,
            r.again()
        )));
    }
    let compiled = plan::load(Path::new(&r.saved.plan.path))?;
    if let Some(diff) = r.saved.plan_changed(&compiled.plan) {
        let why = format!("the plan file `{}` changed", r.saved.plan.path);
        return Err(r.refuse(&why, &diff));
    }
    apply_compiled(&compiled, args, Some(&r))
}
