//! The plan language: TOML file → typed raw plan → resolved `Plan` (templates rendered, references checked).
//!
//! Phases: [`load`] parses into a spanned raw plan (`load.rs`), resolves and checks it
//! (`validate.rs`, templates in `template.rs`), then builds the [`Dag`]. Every error of the file
//! is collected into one [`PlanError`].

mod diag;
mod load;
mod model;
mod raw;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use diag::{InvalidPlan, PlanDiagnostic, PlanError, render};
pub use model::*;
pub use raw::schema_json;

use crate::dag::Dag;
use diag::Diag;

/// A checked plan and its step graph.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub plan: Plan,
    pub dag: Dag,
}

/// Reads and checks the plan at `path`, with the real process environment for `env.*`.
pub fn load(path: &Path) -> Result<Compiled, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_str(path, &text, &env)
}

/// Checks plan `text` as if read from `path` (relative paths resolve against its directory).
pub fn load_str(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<Compiled, PlanError> {
    let mut diags = Vec::new();
    let raw = load::parse(text, &mut diags);
    if !diags.is_empty() && raw.is_empty() {
        // A syntax error: nothing else can be checked.
        return Err(PlanError::Invalid(diag::invalid(
            path.to_path_buf(),
            text,
            diags,
        )));
    }
    let (plan, spans) = validate::resolve(raw, text, path, env, &mut diags);
    let fail = |diags| PlanError::Invalid(diag::invalid(path.to_path_buf(), text, diags));
    let Some(plan) = plan.filter(|_| diags.is_empty()) else {
        return Err(fail(diags));
    };
    match Dag::build(&plan) {
        Ok(dag) => {
            tracing::info!(
                plan = %path.display(),
                steps = plan.steps.len(),
                edges = dag.edges().len(),
                "plan is valid"
            );
            Ok(Compiled { plan, dag })
        }
        Err(cycles) => {
            for c in cycles {
                let first = &c.path[0];
                let mut shown = c.path.clone();
                shown.push(first.clone());
                let span = spans.step_ids.get(first).cloned().unwrap_or(0..0);
                diags.push(
                    Diag::new(
                        span,
                        format!("dependency cycle: {}", shown.join(" → ")),
                        "this step depends on itself through the cycle",
                    )
                    .help(
                        "remove one of these `needs`, or change a location so a step does not \
                         read what a later step writes",
                    ),
                );
            }
            Err(fail(diags))
        }
    }
}
