//! The phases in order: plan text → raw plan → checked `Plan` → `Dag`, all errors collected.

use std::collections::BTreeMap;
use std::path::Path;

use super::dag::Dag;
use super::diag::{self, Diag, PlanError};
use super::load::parse;
use super::model::Plan;
use super::validate;

/// A checked plan and its step graph.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub plan: Plan,
    pub dag: Dag,
}

/// Reads and checks the plan at `path`, with the real process environment for `env.*`.
pub fn load(path: &Path) -> Result<Compiled, PlanError> {
    let bytes = std::fs::read(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return Err(not_utf8(path, e)),
    };
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
    let raw = parse(text, &mut diags);
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

/// A plan file that is not UTF-8: located at the first bad byte (the text before it is shown as
/// it is; the rest with replacement characters).
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> PlanError {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.as_bytes();
    let before = &bytes[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    let text = String::from_utf8_lossy(bytes);
    let diag = Diag::new(
        at..at + 1,
        format!(
            "the plan file is not UTF-8: byte 0x{:02x} at offset {at} (line {line}, column {column})",
            bytes[at]
        ),
        "not UTF-8",
    )
    .help("plans are UTF-8 TOML: save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)");
    PlanError::Invalid(diag::invalid(path.to_path_buf(), &text, vec![diag]))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::{Compiled, PlanError, load_str};
    use crate::plan::StepKind;

    fn compile(steps: &str) -> Result<Compiled, PlanError> {
        let text = format!(
            "version = 1\nname = \"t\"\n[buckets.b]\ntype = \"local\"\npath = \"x\"\n{steps}"
        );
        load_str(Path::new("t.toml"), &text, &BTreeMap::new())
    }

    fn copy(id: &str, from: &str, to: &str, needs: &str) -> String {
        format!(
            "[steps.{id}]\ntype = \"copy\"\nfrom = \"b:{from}\"\nto = \"b:{to}\"\nneeds = [{needs}]\n"
        )
    }

    #[test]
    fn ties_follow_file_order() {
        let c = compile(
            &(copy("c", "1", "2", "") + &copy("a", "3", "4", "") + &copy("b", "5", "6", "\"c\"")),
        )
        .unwrap();
        assert_eq!(c.dag.order(), ["c", "a", "b"]);
        assert_eq!(c.dag.edge("c", "b").unwrap().reason(), "needs");
    }

    #[test]
    fn reads_depend_on_writes_around_and_inside() {
        // `wide` writes b:out, `narrow` reads b:out/sub (inside); `outer` reads b (around).
        let c = compile(
            &(copy("wide", "in", "out", "")
                + &copy("narrow", "out/sub", "other/a", "")
                + &copy("late", "in2", "other", "")),
        );
        let err = c.unwrap_err();
        assert!(
            err.errors()[0].message.contains("both write"),
            "other and other/a overlap: {err:?}"
        );
        let c = compile(&(copy("wide", "in", "out", "") + &copy("narrow", "out/sub", "o2", "")))
            .unwrap();
        assert_eq!(c.dag.dependencies("narrow"), ["wide"]);
        let e = c.dag.edge("wide", "narrow").unwrap();
        assert_eq!(e.locations[0].0.to_string(), "b:out");
        assert_eq!(e.locations[0].1.to_string(), "b:out/sub");
        assert!(
            c.dag
                .to_dot()
                .contains("\"wide\" -> \"narrow\" [label=\"b:out/sub\"]")
        );
    }

    #[test]
    fn each_step_knows_the_type_it_was_written_with() {
        let text = include_str!("../../plans/cutover.toml");
        let c = load_str(Path::new("plans/cutover.toml"), text, &BTreeMap::new()).unwrap();
        let types: Vec<&str> = c.plan.steps.iter().map(|s| s.type_name).collect();
        assert_eq!(types, ["backup", "copy", "restore", "verify", "alias"]);
        assert!(matches!(c.plan.steps[4].kind, StepKind::Alias(_)));
    }

    #[test]
    fn two_cycles_are_both_reported() {
        let err = compile(
            &(copy("a", "1", "2", "\"b\"")
                + &copy("b", "3", "4", "\"a\"")
                + &copy("c", "5", "6", "\"d\"")
                + &copy("d", "7", "8", "\"c\"")),
        )
        .unwrap_err();
        let msgs: Vec<&str> = err.errors().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            ["dependency cycle: a → b → a", "dependency cycle: c → d → c"]
        );
    }
}
