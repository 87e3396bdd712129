//! One module per step type, each owning its work (`run`) and its read-only preview side by side.
//!
//! A step's preview and its run share the code that selects, names and inspects what the step
//! will touch, and every refusal is one function that the preview shows as a conflict and the run
//! returns as its error: the dry run cannot accept what apply refuses.

pub mod alias;
pub mod backup;
pub mod copy;
pub mod ctx;
pub mod feed;
pub mod keys;
pub mod loads;
pub mod preview;
pub mod restore;
pub mod verify;

use crate::plan::StepKind;

pub use ctx::{
    LOAD_TIMEOUT, Resources, Result, SOURCE, StepCtx, StepError, UNIT, done_key, ensure_loaded,
    fail, to_json,
};
pub use preview::{Counts, Look, Produced, StepPreview};

/// Whether a step of this kind may start while a step it needs still runs, on the collections
/// that step publishes ([`feed`]); and whether a step of this kind publishes them.
pub fn pipelines(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Copy(_) | StepKind::Restore(_))
}

pub fn publishes(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Backup(_) | StepKind::Copy(_))
}

/// Runs one step to its end; the summary line is recorded as the step's result.
pub async fn run(ctx: &StepCtx, kind: &StepKind) -> Result<String> {
    let r = match kind {
        StepKind::Backup(b) => backup::run(ctx, b).await,
        StepKind::Copy(c) => copy::run(ctx, c).await,
        StepKind::Restore(r) => restore::run(ctx, r).await,
        StepKind::Verify(v) => verify::run(ctx, v).await,
        StepKind::Alias(a) => alias::run(ctx, a).await,
    };
    // However the step ends, no collection stays loaded because it read it: a step is not
    // recorded done while it still holds a load, so a resume comes back to release it.
    match (r, ctx.release_reads().await) {
        (Ok(summary), Ok(())) => Ok(summary),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), released) => {
            if let Err(why) = released {
                ctx.events.warn(&ctx.step, why.to_string());
            }
            Err(e)
        }
    }
}

/// The instances a step's preview connects to: the dry run connects to them first, so that
/// one it cannot connect to is reported once, not by every check of every step that uses it.
pub fn instances(kind: &StepKind) -> Vec<&str> {
    match kind {
        StepKind::Backup(b) => vec![b.instance.as_str()],
        StepKind::Restore(r) => vec![r.instance.as_str()],
        StepKind::Alias(a) => vec![a.instance.as_str()],
        // Copies use buckets only; a verify's preview connects to nothing, since what it
        // compares does not exist yet.
        StepKind::Copy(_) | StepKind::Verify(_) => vec![],
    }
}

/// Fills `p` with what the step would do, by looking only.
pub async fn preview(look: &mut Look<'_>, kind: &StepKind, p: &mut StepPreview) {
    match kind {
        StepKind::Backup(b) => backup::preview(look, b, p).await,
        StepKind::Copy(c) => copy::preview(look, c, p).await,
        StepKind::Restore(r) => restore::preview(look, r, p).await,
        StepKind::Verify(v) => verify::preview(look, v, p),
        StepKind::Alias(a) => alias::preview(look, a, p).await,
    }
}
