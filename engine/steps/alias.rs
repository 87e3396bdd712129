//! The `alias` step: point an alias at a collection, creating it or moving it from another one.
//!
//! Idempotent by looking first: the alias is described, then created, moved, or left alone when
//! it already points at the collection, so a retried or resumed step never fails on its own work.

use super::ctx::{Result, StepCtx, fail};
use super::preview::{Look, StepPreview};
use crate::milvus::MilvusClient;
use crate::plan::{AliasStep, DEFAULT_DATABASE, Plan};

/// What the step would do, or did, to the alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    /// Move from this collection.
    Move(String),
    Unchanged,
}

/// The database the step works in.
fn database(plan: &Plan, step: &AliasStep) -> String {
    step.database
        .clone()
        .or_else(|| plan.instances[&step.instance].database.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE.into())
}

/// How the alias would change, by looking only.
async fn change(client: &MilvusClient, step: &AliasStep) -> Result<Change> {
    Ok(match client.describe_alias(&step.alias).await? {
        Some(old) if old == step.collection => Change::Unchanged,
        Some(old) => Change::Move(old),
        None => Change::Create,
    })
}

pub async fn run(ctx: &StepCtx, step: &AliasStep) -> Result<String> {
    let db = database(&ctx.res.plan, step);
    let client = ctx.res.milvus(&step.instance).await?.with_database(&db);
    ctx.once("alias", || async {
        if !client.has_collection(&step.collection).await? {
            return fail(format!(
                "collection `{}` does not exist in database `{db}` of `{}`, so alias `{}` \
                 cannot point at it; check `collection` in step `{}`",
                step.collection, step.instance, step.alias, ctx.step
            ));
        }
        let line = match change(&client, step).await? {
            Change::Unchanged => format!(
                "alias `{}` already points at `{}`",
                step.alias, step.collection
            ),
            Change::Move(old) => {
                client.alter_alias(&step.collection, &step.alias).await?;
                format!("alias `{}`: `{old}` → `{}`", step.alias, step.collection)
            }
            Change::Create => {
                client.create_alias(&step.collection, &step.alias).await?;
                format!("alias `{}` created → `{}`", step.alias, step.collection)
            }
        };
        ctx.events.info(&ctx.step, &line);
        Ok(line)
    })
    .await
}

pub async fn preview(look: &mut Look<'_>, step: &AliasStep, p: &mut StepPreview) {
    let db = database(&look.res.plan, step);
    let client = match look.res.milvus(&step.instance).await {
        Ok(c) => c.with_database(&db),
        Err(e) => return p.conflict(e),
    };
    match change(&client, step).await {
        Ok(Change::Create) => p.changes.push(format!(
            "+ alias `{}`: (none) → `{}`",
            step.alias, step.collection
        )),
        Ok(Change::Move(old)) => p.changes.push(format!(
            "~ alias `{}`: `{old}` → `{}`",
            step.alias, step.collection
        )),
        Ok(Change::Unchanged) => p.changes.push(format!(
            "= alias `{}` already points at `{}`",
            step.alias, step.collection
        )),
        Err(e) => p.conflict(e),
    }
}
