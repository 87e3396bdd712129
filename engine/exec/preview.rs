//! `plan`: what apply would do, found by looking and never by touching.
//!
//! Read-only by construction: only list, head, get, describe, show and count calls are made, and
//! the state dir is read through a private snapshot copy. The JSON shape is versioned
//! (`format_version`) and documented in docs/plan-output.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{RunRecord, Store, Tasks};
use crate::plan::{Compiled, Location};
use crate::steps::{
    self,
    ctx::{Resources, StepError},
    preview::{Look, Produced, StepPreview},
};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Preview {
    pub format_version: u32,
    pub plan: String,
    pub path: String,
    /// The unfinished run that apply would resume.
    pub resumes: Option<RunSummary>,
    pub steps: Vec<StepPreview>,
    pub summary: Summary,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub tasks_done: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub steps_to_run: usize,
    pub steps_done: usize,
    pub conflicts: usize,
}

/// What apply would do with this plan. Never fails on an unreachable server or a missing bucket:
/// those are conflicts in the preview.
/// `state`: the plan's state dir, opened read-only ([`Store::open_snapshot`]) by the caller, who
/// may have read it already (apply checks for a changed plan first); `None` when it has none.
pub async fn preview(
    compiled: &Compiled,
    state: Option<&Store>,
) -> Result<Preview, crate::checkpoint::CheckpointError> {
    let plan = Arc::new(compiled.plan.clone());
    let res = Resources::new(plan.clone());
    let file = crate::exec::run::plan_file(&plan.path);
    let mut finished = None;
    let (run, tasks): (Option<RunRecord>, Option<Tasks>) = match state {
        Some(store) => match store.unfinished_run(&file)? {
            Some(r) if r.fingerprint == plan.fingerprint() => {
                let t = store.tasks(&r.id)?.veiled(plan.veil());
                (Some(r), Some(t))
            }
            Some(_) => (None, None),
            None => {
                finished = store.last_done_run(&file, &plan.fingerprint())?;
                (None, None)
            }
        },
        None => (None, None),
    };
    let mut out = Preview {
        format_version: FORMAT_VERSION,
        plan: plan.name.clone(),
        path: plan.path.display().to_string(),
        ..Default::default()
    };
    if let (Some(r), Some(t)) = (&run, &tasks) {
        out.resumes = Some(RunSummary {
            id: r.id.clone(),
            tasks_done: t.count("")?.0,
        });
    }
    // What each location will hold once earlier steps ran: backup contents by location.
    let mut produced: BTreeMap<Location, Produced> = BTreeMap::new();
    // Buckets and instances that could not be used, by "bucket `b`" or "instance `a`": the
    // step that reported it and why, in short ("instance `a` is unreachable").
    let mut unusable: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut capped = std::collections::HashSet::new();
    for id in compiled.dag.order() {
        let step = plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .expect("dag ids are steps");
        let mut p = StepPreview {
            id: id.to_string(),
            kind: step.type_name.to_string(),
            action: "run".into(),
            ..Default::default()
        };
        if let Some(done) = &finished {
            // Applied completely before: apply would do nothing, so there is nothing to inspect.
            p.action = "done".into();
            p.description = format!(
                "{} (done by run {})",
                plan.describe_step(step),
                crate::text::short(&done.id)
            );
            out.summary.steps_done += 1;
            out.steps.push(p);
            continue;
        }
        if let Some(t) = &tasks {
            if t.done::<String>(&crate::steps::done_key(id))?.is_some() {
                p.action = "done".into();
            } else if t.count(&format!("{id}/"))?.1 > 0 {
                // Any record, an intent included: the target may exist because this run made it.
                p.action = "resume".into();
            }
        }
        p.description = plan.describe_step(step);
        // A bucket or instance the step cannot use stops it before it does anything: say so
        // first, once for the whole plan (at the first step that uses it). The step is not
        // looked at further, since every check would meet the same problem again, and what it
        // writes is marked blocked, so later steps say why they cannot be checked instead of
        // finding their input missing.
        let mut buckets: Vec<&str> = step
            .kind
            .reads()
            .into_iter()
            .chain(step.kind.writes())
            .map(|l| l.bucket.as_str())
            .collect();
        buckets.sort();
        buckets.dedup();
        let uses = buckets
            .into_iter()
            .map(Use::Bucket)
            .chain(steps::instances(&step.kind).into_iter().map(Use::Instance));
        let mut cannot_use = None;
        for u in uses {
            let what = u.to_string();
            let why = match unusable.get(&what) {
                Some((first, why)) => {
                    p.changes
                        .push(format!("? not checked: {why} (see step `{first}`)"));
                    why.clone()
                }
                None => match u.problem(&res).await {
                    Some(e) => first_report(&mut unusable, &mut p, what, e),
                    None => continue,
                },
            };
            cannot_use.get_or_insert(why);
        }
        // What the run takes from each instance and S3 bucket, said where the plan first uses it.
        for loc in step.kind.reads().into_iter().chain(step.kind.writes()) {
            if let crate::storage::StorageConfig::S3(s3) = &plan.buckets[&loc.bucket].config
                && capped.insert(format!("bucket {}", loc.bucket))
            {
                let bytes = s3
                    .bytes_per_second
                    .map(|b| format!(" and {}/s", crate::text::human_bytes(b)))
                    .unwrap_or_default();
                p.changes.push(format!(
                    "~ at most {} requests/s{bytes} to bucket `{}`",
                    s3.requests_per_second, loc.bucket
                ));
            }
        }
        for inst in steps::instances(&step.kind) {
            if capped.insert(inst.to_string()) {
                p.changes.push(format!(
                    "~ at most {} requests/s to `{inst}` (fewer while it answers with rate limits)",
                    plan.instances[inst].requests_per_second
                ));
            }
        }
        if let Some(why) = cannot_use {
            for loc in step.kind.writes() {
                produced.insert(loc.clone(), Produced::blocked(id, Some(why.clone())));
            }
        } else {
            let mut look = Look {
                res: &res,
                produced: &mut produced,
                tasks: tasks.as_ref(),
            };
            steps::preview(&mut look, &step.kind, &mut p).await;
            // The order apply keeps: which collections this step takes before the steps it
            // needs have ended.
            let feeders: Vec<String> = compiled
                .dag
                .dependencies(id)
                .into_iter()
                .filter(|d| {
                    plan.steps
                        .iter()
                        .any(|s| s.id == *d && steps::publishes(&s.kind))
                })
                .map(|d| format!("`{d}`"))
                .collect();
            if plan.settings.pipeline
                && steps::pipelines(&step.kind)
                && !feeders.is_empty()
                && p.action != "done"
            {
                p.changes.push(format!(
                    "~ pipelined: starts on each collection as soon as {} finished it, and on \
                     each file of a rows backup as it is written (binlog backups read where they \
                     are written; settings.pipeline = false waits for the whole step)",
                    feeders.join(" and ")
                ));
            }
        }
        // One cause seen by two checks (a missing bucket, also met by the existing-backup
        // check) is one conflict.
        let mut seen = std::collections::HashSet::new();
        p.conflicts.retain(|c| seen.insert(c.clone()));
        out.summary.conflicts += p.conflicts.len();
        if p.action == "done" {
            out.summary.steps_done += 1;
        } else {
            out.summary.steps_to_run += 1;
        }
        out.steps.push(p);
    }
    Ok(out)
}

/// Reports a bucket or instance the walk found unusable as a conflict of step `p`, and
/// remembers it for the steps after. Returns why, in short.
fn first_report(
    unusable: &mut BTreeMap<String, (String, String)>,
    p: &mut StepPreview,
    what: String,
    e: StepError,
) -> String {
    let why = if e.is_unreachable() {
        format!("{what} is unreachable")
    } else {
        format!("{what} cannot be used")
    };
    p.conflict(&e);
    // A finished step's conflicts do not stop apply (it does not run again), so a later step
    // that uses the same must report it as its own.
    if p.action != "done" {
        unusable.insert(what, (p.id.clone(), why.clone()));
    }
    why
}

/// A bucket or an instance a step uses.
enum Use<'a> {
    Bucket(&'a str),
    Instance(&'a str),
}

impl std::fmt::Display for Use<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Use::Bucket(id) => write!(f, "bucket `{id}`"),
            Use::Instance(id) => write!(f, "instance `{id}`"),
        }
    }
}

impl Use<'_> {
    /// Why a step cannot use it, if it cannot: a bucket is opened and checked, an instance
    /// connected to (the connection is kept for the step's own look).
    async fn problem(&self, res: &Resources) -> Option<StepError> {
        match self {
            Use::Bucket(id) => match res.storage(id).await {
                Err(e) => Some(e),
                Ok(s) => s.check().await.err().map(StepError::from),
            },
            Use::Instance(id) => res.milvus(id).await.err(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Place, StorageError};

    /// A plan of copies between local directories under `dir` (`src` and `dst` exist, `gone`
    /// does not), compiled as the CLI compiles it.
    fn compiled(dir: &std::path::Path, steps: &str) -> Compiled {
        std::fs::create_dir_all(dir.join("src/b1")).unwrap();
        std::fs::create_dir_all(dir.join("dst/c1")).unwrap();
        let text = format!(
            "version = 1\nname = \"p\"\n\
             [buckets.src]\ntype = \"local\"\npath = \"src\"\n\
             [buckets.dst]\ntype = \"local\"\npath = \"dst\"\n\
             [buckets.gone]\ntype = \"local\"\npath = \"gone\"\n{steps}"
        );
        crate::plan::load_str(&dir.join("plan.toml"), &text, &BTreeMap::new()).unwrap()
    }

    fn copy(id: &str, from: &str, to: &str) -> String {
        format!("[steps.{id}]\ntype = \"copy\"\nfrom = \"{from}\"\nto = \"{to}\"\n")
    }

    #[tokio::test]
    async fn an_unusable_bucket_is_one_conflict_and_later_steps_point_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let steps = copy("one", "gone:a", "dst:x") + &copy("two", "gone:b", "dst:y");
        let out = preview(&compiled(dir.path(), &steps), None).await.unwrap();
        let (one, two) = (&out.steps[0], &out.steps[1]);
        assert_eq!((one.id.as_str(), two.id.as_str()), ("one", "two"));
        assert_eq!(one.conflicts.len(), 1, "{:?}", one.conflicts);
        assert!(one.conflicts[0].contains("does not exist"), "{one:?}");
        assert!(two.conflicts.is_empty(), "{two:?}");
        assert_eq!(
            two.changes,
            ["? not checked: bucket `gone` cannot be used (see step `one`)"]
        );
        assert_eq!(out.summary.conflicts, 1);
        assert_eq!(out.summary.steps_to_run, 2);
        assert_eq!(out.format_version, FORMAT_VERSION);
        assert!(out.resumes.is_none());
    }

    #[tokio::test]
    async fn a_copy_preview_counts_the_objects_and_those_already_present() {
        let dir = tempfile::tempdir().unwrap();
        let c = compiled(dir.path(), &copy("copy", "src:b1", "dst:c1"));
        for (path, body) in [
            ("src/b1/x", "12345"),
            ("src/b1/d/y", "abc"),
            ("dst/c1/x", "12345"),
        ] {
            std::fs::create_dir_all(dir.path().join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.path().join(path), body).unwrap();
        }
        let out = preview(&c, None).await.unwrap();
        let p = &out.steps[0];
        assert!(p.conflicts.is_empty(), "{:?}", p.conflicts);
        assert_eq!((p.counts.objects, p.counts.bytes), (2, 8));
        assert_eq!(
            p.changes,
            [
                "~ objects streamed through planrun (the buckets are on different servers)",
                "+ 2 objects (8 B), 1 already present at the destination"
            ]
        );
        assert_eq!(p.action, "run");
    }

    #[tokio::test]
    async fn an_empty_copy_source_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let c = compiled(dir.path(), &copy("copy", "src:b1", "dst:c1"));
        let out = preview(&c, None).await.unwrap();
        assert_eq!(
            out.steps[0].conflicts,
            [
                "nothing to copy: `src:b1` is empty (bucket `src`, prefix `b1/`) and no earlier \
              step writes it"
            ]
        );
        assert_eq!(out.summary.conflicts, 1);
    }

    fn place() -> Arc<Place> {
        Arc::new(Place {
            id: "b".into(),
            location: "local directory `/b`".into(),
            setting: "path",
            endpoint_setting: None,
        })
    }

    #[test]
    fn a_first_report_says_unreachable_or_unusable_and_is_remembered_unless_done() {
        let mut unusable = BTreeMap::new();
        let mut p = StepPreview {
            id: "s".into(),
            ..Default::default()
        };
        let down = StorageError::Unreachable {
            place: place(),
            reason: "refused".into(),
            transient: true,
        };
        let why = first_report(&mut unusable, &mut p, "bucket `b`".into(), down.into());
        assert_eq!(why, "bucket `b` is unreachable");
        assert_eq!(unusable["bucket `b`"], ("s".into(), why));
        assert_eq!(p.conflicts.len(), 1);
        p.action = "done".into();
        let missing = StorageError::BucketNotFound { place: place() };
        let why = first_report(&mut unusable, &mut p, "bucket `c`".into(), missing.into());
        assert_eq!(why, "bucket `c` cannot be used");
        assert!(
            !unusable.contains_key("bucket `c`"),
            "a done step does not stop apply"
        );
        assert_eq!(Use::Instance("a").to_string(), "instance `a`");
    }
}
