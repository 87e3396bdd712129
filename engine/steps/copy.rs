//! The `copy` step: every object under one location into another, skipping what is already there.

use futures::{StreamExt, TryStreamExt};

use super::{Result, StepCtx, join};
use crate::plan::CopyStep;
use crate::storage::{self, ObjectMeta, Storage};

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
                            && present(src.as_ref(), o, dst.as_ref(), &have).await?
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

/// Whether `dst` already holds `src`'s content. Sizes decide most cases; with equal sizes the MD5s
/// decide, read from the content where a store does not report one (local files, multipart
/// uploads), which costs a read but never a wrong skip.
pub async fn present(
    src_store: &dyn Storage,
    src: &ObjectMeta,
    dst_store: &dyn Storage,
    dst: &ObjectMeta,
) -> super::Result<bool> {
    if src.size != dst.size {
        return Ok(false);
    }
    let a = match &src.md5 {
        Some(m) => m.clone(),
        None => md5_of(src_store, &src.key).await?,
    };
    let b = match &dst.md5 {
        Some(m) => m.clone(),
        None => md5_of(dst_store, &dst.key).await?,
    };
    Ok(a == b)
}

async fn md5_of(store: &dyn Storage, key: &str) -> super::Result<String> {
    use md5::Digest;
    let mut h = md5::Md5::new();
    let mut body = store.get(key).await?;
    while let Some(chunk) = body.next().await {
        h.update(&chunk?);
    }
    Ok(hex::encode(h.finalize()))
}
