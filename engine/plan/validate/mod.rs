//! Resolution and checks: `RawPlan` → `Plan`, each check a function that extends one error list.
//!
//! [`resolve`] runs the checks in file order (the top, buckets, instances, steps), then the
//! whole-plan checks over what the steps produce. Later checks see the values earlier ones
//! resolved, so a broken reference is reported once, where it is written.

mod buckets;
mod context;
mod cutover;
mod instances;
mod names;
mod outputs;
mod settings;
mod steps;

use std::collections::BTreeMap;
use std::path::Path;

use crate::plan::diag::Diag;
use crate::plan::load::RawPlan;
use crate::plan::mask::Masks;
use crate::plan::model::Plan;
use crate::plan::template::Renderer;

use context::Ctx;
pub(crate) use context::Spans;

/// Resolves `raw` (read from `path`, whose text is `text`) with `process_env` for `env.*`.
/// Every problem is added to `diags`; the plan is returned only when there is none.
pub(crate) fn resolve(
    raw: RawPlan,
    text: &str,
    path: &Path,
    process_env: &BTreeMap<String, String>,
    diags: &mut Vec<Diag>,
) -> (Option<Plan>, Spans) {
    let errors_before = diags.len();
    let mut cx = Ctx {
        r: Renderer::new(process_env),
        text,
        diags,
        masks: Masks::default(),
        dir: plan_dir(path),
        bucket_ids: raw.bucket_ids.clone(),
    };
    let mut spans = Spans::default();

    settings::check_version(&raw.version, cx.diags);
    let name = settings::plan_name(&mut cx, &raw.name);
    // Vars first: every string after this may use them.
    settings::set_vars(&mut cx, &raw);
    let settings = settings::settings(&mut cx, &raw.settings);
    let buckets = buckets::buckets(&mut cx, &raw);
    let (instances, data) = instances::instances(&mut cx, &raw);
    let (steps, at) = steps::steps(&mut cx, &raw, &instances, &mut spans);
    outputs::check_writes(&steps, &data, &at, &cx.masks, cx.diags);
    outputs::check_restore_targets(&steps, &instances, &at, cx.diags);

    let ok = cx.diags.len() == errors_before;
    // Safety net: no message may carry a value that came from the environment.
    for d in cx.diags[errors_before..].iter_mut() {
        d.message = cx.masks.redact(&d.message);
        d.label = cx.masks.redact(&d.label);
        d.help = d.help.as_ref().map(|h| cx.masks.redact(h));
    }
    let plan = ok.then(|| Plan {
        name: name.unwrap_or_default(),
        path: path.to_path_buf(),
        settings,
        instances,
        buckets,
        steps,
        masks: cx.masks,
    });
    (plan, spans)
}

/// The plan file's directory, absolute: relative paths in the plan resolve against it.
fn plan_dir(path: &Path) -> std::path::PathBuf {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parent
        .canonicalize()
        .unwrap_or_else(|_| std::env::current_dir().unwrap_or_default().join(parent))
}
