//! The `backup` step: its run and preview, dispatched to `binlog` (copy the segments' files) or
//! `rows` (read by query); what both modes share is in `common`.

mod binlog;
mod common;
mod read;
mod rows;
mod split;
#[cfg(test)]
mod tests;

use crate::format::meta::BackupInfo;
use crate::plan::{BackupStep, Mode};
use crate::steps::ctx::{Result, StepCtx};
use crate::steps::preview::{Look, Produced, StepPreview};
use common::{existing_backup, resolve};

pub async fn run(ctx: &StepCtx, step: &BackupStep) -> Result<String> {
    match step.mode {
        Mode::Binlog => binlog::run(ctx, step).await,
        Mode::Rows => rows::run(ctx, step).await,
    }
}

pub async fn preview(look: &mut Look<'_>, step: &BackupStep, p: &mut StepPreview) {
    let info = look_at(look, step, p).await;
    // Later steps read what this one writes: with conflicts here, theirs would only echo them.
    let produced = match info {
        Some(backup) if p.conflicts.is_empty() => Produced {
            backup,
            counts: p.counts.clone(),
            blocked_by: None,
        },
        _ => Produced::blocked(&p.id, None),
    };
    look.produced.insert(step.to.clone(), produced);
}

async fn look_at(look: &Look<'_>, step: &BackupStep, p: &mut StepPreview) -> Option<BackupInfo> {
    let client = match look.res.milvus(&step.instance).await {
        Ok(c) => c,
        Err(e) => {
            p.conflict(e);
            return None;
        }
    };
    if !p.started()
        && let Ok(dst) = look.res.storage(&step.to.bucket).await
    {
        match existing_backup(dst.as_ref(), &step.to, &p.id).await {
            Ok(Some(conflict)) => p.conflict(conflict),
            Ok(None) => {}
            Err(e) => p.conflict(e),
        }
    }
    let selected = match resolve(&client, &step.collections).await {
        Ok(s) => s,
        Err(e) => {
            p.conflict(e);
            return None;
        }
    };
    match step.mode {
        Mode::Binlog => binlog::preview(look, step, &client, &selected, p).await,
        Mode::Rows => rows::preview(&client, &selected, look.tasks, p).await,
    }
}
