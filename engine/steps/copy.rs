//! The `copy` step: every object under one location into another, skipping what is already there.

use futures::{StreamExt, TryStreamExt};

use super::{Result, StepCtx, join};
use crate::plan::CopyStep;
use crate::storage::{self, ObjectMeta};

pub async fn run(ctx: &StepCtx, step: &CopyStep) -> Result<String> {
    let src = ctx.res.storage(&step.from.bucket).await?;
    let dst = ctx.res.storage(&step.to.bucket).await?;
    let prefix = dir_prefix(&step.from.path);
    let objects: Vec<ObjectMeta> = src.list(&prefix).try_collect().await?;
    if objects.is_empty() {
        return super::fail(format!(
            "nothing to copy: `{}` is empty (bucket `{}`, prefix `{prefix}`)",
            step.from, step.from.bucket
        ));
    }
    let total: u64 = objects.iter().map(|o| o.size).sum();
    ctx.events.planned(&ctx.step, objects.len() as u64, total);

    let prefix = prefix.as_str();
    let outcomes: Vec<Outcome> = futures::stream::iter(objects.clone())
        .map(|o: ObjectMeta| {
            let (src, dst) = (src.clone(), dst.clone());
            async move {
                let o = &o;
                let rel = &o.key[prefix.len()..];
                let to = join(&step.to, rel);
                let (outcome, earlier) = ctx
                    .once_lazy(&format!("obj/{rel}"), || async {
                        // Present with the same size and checksum: nothing to move.
                        if let Some(have) = dst.head(&to).await?
                            && same_content(o, &have)
                        {
                            return Ok(Outcome::Present);
                        }
                        let r =
                            storage::copy_object(src.as_ref(), &o.key, dst.as_ref(), &to, &|_| {})
                                .await?;
                        Ok(if r.server_side {
                            Outcome::ServerSide
                        } else {
                            Outcome::Streamed(r.bytes_transferred)
                        })
                    })
                    .await?;
                ctx.events.progress(&ctx.step, 1, o.size);
                // Copied by an earlier, interrupted apply of this run: nothing moved now.
                Ok::<_, super::StepError>(if earlier { Outcome::Present } else { outcome })
            }
        })
        .buffer_unordered(ctx.concurrency() * 4)
        .try_collect()
        .await?;
    ctx.tasks.sync().await?;

    let present = outcomes.iter().filter(|o| **o == Outcome::Present).count();
    let server = outcomes
        .iter()
        .filter(|o| **o == Outcome::ServerSide)
        .count();
    let streamed: u64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Streamed(n) => *n,
            _ => 0,
        })
        .sum();
    Ok(format!(
        "{} objects ({}) into {}: {server} copied server-side, {} streamed ({}), {present} already present",
        objects.len(),
        crate::exec::report::human_bytes(total),
        step.to,
        outcomes.len() - server - present,
        crate::exec::report::human_bytes(streamed),
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Present,
    ServerSide,
    Streamed(u64),
}

/// A location's path as a listing prefix that matches only what is inside it.
pub fn dir_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    }
}

/// Same size, and the same MD5 when both sides know it (a multipart ETag is not an MD5).
pub fn same_content(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.size == b.size
        && match (&a.md5, &b.md5) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
}
