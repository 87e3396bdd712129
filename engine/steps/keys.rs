//! The primary-key walk: a collection's rows read in key order and hashed, summed into a digest,
//! or merged with another side's walk; verify compares with it, a restore checks itself with it.

use std::collections::VecDeque;

use super::ctx::{Result, StepCtx, StepError};
use crate::codec::digest::hash_rows;
use crate::milvus::{MilvusClient, Pk};

/// How many example keys of each kind a mismatch reports.
const EXAMPLES: usize = 5;

/// The rows of `partitions` (all when empty) that match `filter` (all when empty) read by
/// primary key, and the sum of the digests of their keys alone: what a binlog restore onto a
/// release planrun has not run is checked against (`format::binlog::live` computes the same
/// from the backup's binlogs), and an imported rows file's key range.
pub async fn key_digest(
    ctx: &StepCtx,
    client: &MilvusClient,
    collection: &str,
    partitions: &[String],
    pk: &str,
    filter: &str,
) -> Result<(u64, u128)> {
    let output = [pk.to_string()];
    let mut walk = Walk::new(
        client,
        collection,
        partitions,
        pk,
        &output,
        crate::milvus::MAX_QUERY_LIMIT,
        true,
    );
    // The step counts objects (binlogs), not rows.
    walk.quiet = true;
    walk.filter = filter.to_string();
    walk.sum(ctx).await
}

/// A primary-key walk over one partition, yielding (key, row hash).
pub struct Walk<'a> {
    client: &'a MilvusClient,
    collection: &'a str,
    partitions: &'a [String],
    pk: &'a str,
    output: &'a [String],
    limit: usize,
    after: Option<Pk>,
    buf: VecDeque<(Pk, u128)>,
    done: bool,
    with_key: bool,
    /// Reports no row progress.
    quiet: bool,
    /// Only the rows that match it (all when empty).
    filter: String,
}

impl<'a> Walk<'a> {
    pub fn new(
        client: &'a MilvusClient,
        collection: &'a str,
        partitions: &'a [String],
        pk: &'a str,
        output: &'a [String],
        limit: usize,
        with_key: bool,
    ) -> Self {
        Walk {
            client,
            collection,
            partitions,
            pk,
            output,
            limit,
            after: None,
            buf: VecDeque::new(),
            done: false,
            with_key,
            quiet: false,
            filter: String::new(),
        }
    }

    /// Walks to the end: the rows and the sum of their hashes.
    pub async fn sum(&mut self, ctx: &StepCtx) -> Result<(u64, u128)> {
        let (mut rows, mut digest) = (0, 0u128);
        while let Some((_, h)) = self.next(ctx).await? {
            rows += 1;
            digest = digest.wrapping_add(h);
        }
        Ok((rows, digest))
    }

    async fn next(&mut self, ctx: &StepCtx) -> Result<Option<(Pk, u128)>> {
        if self.buf.is_empty() && !self.done {
            let page = ctx
                .retry("query", || async {
                    Ok(self
                        .client
                        .query_page(
                            self.collection,
                            self.partitions,
                            self.pk,
                            self.after.as_ref(),
                            &self.filter,
                            self.limit,
                            self.output,
                            // The first page waits for everything written before the walk;
                            // the rest need not wait for the server's time tick again.
                            match self.after {
                                None => crate::milvus::Fresh::Strong,
                                Some(_) => crate::milvus::Fresh::Held,
                            },
                        )
                        .await?)
                })
                .await?;
            if page.num_rows == 0 {
                self.done = true;
            } else {
                if !self.quiet {
                    ctx.events.progress_rows(&ctx.step, page.num_rows as u64);
                }
                self.after = page.last_pk.clone();
                self.buf = hash_rows(&page.fields, self.pk, page.num_rows, self.with_key)
                    .map_err(|e| {
                        StepError::Failed(format!(
                            "reading `{}` on `{}`: {e}",
                            self.collection,
                            self.client.name()
                        ))
                    })?
                    .into();
            }
        }
        Ok(self.buf.pop_front())
    }
}

/// What walking both sides of one partition found.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    pub source_rows: u64,
    pub target_rows: u64,
    pub source_digest: u128,
    pub target_digest: u128,
    pub missing: Vec<Pk>,
    pub extra: Vec<Pk>,
    pub changed: Vec<Pk>,
}

/// Which walk a merge step used up.
#[derive(Debug, PartialEq)]
enum Advance {
    Source,
    Target,
    Both,
    Done,
}

impl Merged {
    pub fn examples(&self) -> String {
        let list = |v: &[Pk]| {
            v.iter()
                .map(|k| format!("`{}`", k.to_expr()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        if !self.missing.is_empty() {
            out.push(format!("missing in target: {}", list(&self.missing)));
        }
        if !self.extra.is_empty() {
            out.push(format!("only in target: {}", list(&self.extra)));
        }
        if !self.changed.is_empty() {
            out.push(format!("different content: {}", list(&self.changed)));
        }
        out.join("; ")
    }

    /// Takes the smaller head of the two walks (both when their keys are equal) into the count.
    fn step(&mut self, x: Option<&(Pk, u128)>, y: Option<&(Pk, u128)>) -> Advance {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = match (x, y) {
            (None, None) => return Advance::Done,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        if order != Greater {
            let (k, h) = x.expect("a source head");
            self.source_rows += 1;
            self.source_digest = self.source_digest.wrapping_add(*h);
            if order == Less {
                push(&mut self.missing, k);
            }
        }
        if order != Less {
            let (k, h) = y.expect("a target head");
            self.target_rows += 1;
            self.target_digest = self.target_digest.wrapping_add(*h);
            if order == Greater {
                push(&mut self.extra, k);
            }
        }
        match order {
            Less => Advance::Source,
            Greater => Advance::Target,
            Equal => {
                if x.map(|h| h.1) != y.map(|h| h.1) {
                    push(&mut self.changed, &x.expect("a source head").0);
                }
                Advance::Both
            }
        }
    }
}

/// Walks both sides together by key, in bounded memory.
pub async fn merge(ctx: &StepCtx, a: &mut Walk<'_>, b: &mut Walk<'_>) -> Result<Merged> {
    let mut m = Merged::default();
    let mut x = a.next(ctx).await?;
    let mut y = b.next(ctx).await?;
    loop {
        match m.step(x.as_ref(), y.as_ref()) {
            Advance::Done => return Ok(m),
            Advance::Source => x = a.next(ctx).await?,
            Advance::Target => y = b.next(ctx).await?,
            Advance::Both => {
                x = a.next(ctx).await?;
                y = b.next(ctx).await?;
            }
        }
    }
}

fn push(v: &mut Vec<Pk>, k: &Pk) {
    if v.len() < EXAMPLES {
        v.push(k.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `merge` finds for two walks that yield these (key, hash) rows.
    fn merged(a: &[(i64, u128)], b: &[(i64, u128)]) -> Merged {
        let (mut a, mut b) = (a.iter(), b.iter());
        let pk = |r: Option<&(i64, u128)>| r.map(|(k, h)| (Pk::Int(*k), *h));
        let (mut x, mut y) = (pk(a.next()), pk(b.next()));
        let mut m = Merged::default();
        loop {
            match m.step(x.as_ref(), y.as_ref()) {
                Advance::Done => return m,
                Advance::Source => x = pk(a.next()),
                Advance::Target => y = pk(b.next()),
                Advance::Both => (x, y) = (pk(a.next()), pk(b.next())),
            }
        }
    }

    #[test]
    fn equal_sides_have_equal_digests_and_no_examples() {
        let rows = [(1, 10), (2, 20), (5, 50)];
        let m = merged(&rows, &rows);
        assert_eq!((m.source_rows, m.target_rows), (3, 3));
        assert_eq!(m.source_digest, 80);
        assert_eq!(m.source_digest, m.target_digest);
        assert_eq!(m.examples(), "");
    }

    #[test]
    fn missing_extra_and_changed_keys_are_named() {
        let m = merged(&[(1, 10), (2, 20), (4, 40)], &[(2, 21), (3, 30), (4, 40)]);
        assert_eq!(m.missing, [Pk::Int(1)]);
        assert_eq!(m.extra, [Pk::Int(3)]);
        assert_eq!(m.changed, [Pk::Int(2)]);
        assert_eq!((m.source_rows, m.target_rows), (3, 3));
        assert_eq!(m.source_digest, 70);
        assert_eq!(m.target_digest, 91);
        assert_eq!(
            m.examples(),
            "missing in target: `1`; only in target: `3`; different content: `2`"
        );
    }

    #[test]
    fn one_empty_side_counts_the_other_and_examples_are_bounded() {
        let rows: Vec<(i64, u128)> = (0..20).map(|k| (k, 1)).collect();
        let m = merged(&rows, &[]);
        assert_eq!((m.source_rows, m.target_rows), (20, 0));
        assert_eq!(m.missing.len(), EXAMPLES);
        let m = merged(&[], &rows);
        assert_eq!((m.source_rows, m.target_rows), (0, 20));
        assert_eq!(m.extra.len(), EXAMPLES);
    }
}
