//! Saved plans (`plan -o FILE`, `apply FILE`): the preview a person reviewed, and what differs now.
//!
//! A saved plan holds the plan file's path, its masked resolved content and fingerprint, and the
//! preview as shown, every string scrubbed of secrets and env values. `apply FILE` runs it only
//! when the plan file still has that fingerprint and a fresh preview says the same things. The
//! format is documented in docs/plan-output.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::preview::Preview;
use super::run::json_diff;
use crate::plan::Plan;
use crate::steps::preview::{Counts, Seen, StepPreview};
use crate::text::{human_bytes, short};

/// What marks a file as a saved plan: `apply` tells one from a TOML plan by its content.
pub const KIND: &str = "planrun saved plan";
pub const SAVED_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub kind: String,
    pub format_version: u32,
    /// The planrun that saved it: another one may preview in other words, so it refuses.
    pub planrun_version: String,
    /// When it was saved, as `YYYY-MM-DD HH:MM:SS UTC` and in seconds since the epoch.
    pub saved_at: String,
    pub saved_at_unix: u64,
    pub plan: SavedFile,
    /// The preview as it was shown (the `plan --json` document).
    pub preview: Preview,
}

/// The plan file a saved plan runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedFile {
    /// Absolute, so that `apply FILE` finds it from any directory.
    pub path: String,
    pub name: String,
    /// [`Plan::fingerprint`]: covers env-derived values too, without showing them.
    pub fingerprint: String,
    /// The resolved plan, masked ([`Plan::describe_json`]): what a changed fingerprint is
    /// explained against.
    pub content: Value,
}

impl SavedPlan {
    /// The saved form of `preview`, made of `plan` (loaded from its absolute path) at `now`.
    pub fn new(plan: &Plan, preview: &Preview, now: u64) -> SavedPlan {
        SavedPlan {
            kind: KIND.into(),
            format_version: SAVED_FORMAT_VERSION,
            planrun_version: env!("CARGO_PKG_VERSION").into(),
            saved_at: crate::checkpoint::format_time(now),
            saved_at_unix: now,
            plan: SavedFile {
                path: plan.path.display().to_string(),
                name: plan.name.clone(),
                fingerprint: plan.fingerprint(),
                content: plan.describe_json(),
            },
            preview: shown(preview, plan),
        }
    }

    /// Reads a saved plan from a file's text. `Ok(None)`: not JSON at all, so a TOML plan. An
    /// error says why a JSON file is not a saved plan this planrun can apply.
    pub fn detect(text: &str) -> Result<Option<SavedPlan>, String> {
        // No TOML document starts with `{`: a file that does is JSON or nothing.
        if !text.trim_start().starts_with('{') {
            return Ok(None);
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("it is not valid JSON: {e}"))?;
        if v.get("kind").and_then(Value::as_str) != Some(KIND) {
            return Err(if v.get("steps").is_some() && v.get("summary").is_some() {
                "it is the preview printed by `planrun plan --json`, not a saved plan; save one \
                 with `planrun plan PLAN -o FILE`"
                    .into()
            } else {
                format!("it is JSON but not a saved plan (no `\"kind\": \"{KIND}\"`)")
            });
        }
        let version = v.get("format_version").and_then(Value::as_u64);
        if version != Some(SAVED_FORMAT_VERSION.into()) {
            return Err(format!(
                "its format_version is {}, and this planrun reads {SAVED_FORMAT_VERSION}",
                version.map_or("missing".into(), |n| n.to_string())
            ));
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("it is damaged: {e}"))
    }

    /// Why the plan file no longer is what was saved, one `path: old → new` per line; `None`
    /// when it is unchanged.
    pub fn plan_changed(&self, plan: &Plan) -> Option<String> {
        if plan.fingerprint() == self.plan.fingerprint {
            return None;
        }
        let now = plan.describe_json();
        Some(if now == self.plan.content {
            // Env-derived values are masked in both descriptions; only the fingerprint saw them.
            "  a value taken from the environment changed (such values are never shown)".into()
        } else {
            json_diff(&self.plan.content, &now)
        })
    }

    /// What a fresh preview says differently from the saved one, one line per difference,
    /// each naming its step; empty when they agree.
    ///
    /// Compared: the unfinished run apply would resume, and per step its action, the
    /// collections it saw (rows, segments, whether a target exists), its counts, conflicts and
    /// change lines. Left out: `path`, `plan` and each step's `description` (the plan file's,
    /// covered by the fingerprint, and the path it is loaded from is the saved one),
    /// `summary` (derived from the steps), `estimated` (follows from what exists, which the
    /// change lines show). The preview carries no volatile text (no times, no temporary
    /// paths: the state dir's snapshot copy never appears in it), so lines are compared as
    /// they are.
    pub fn differences(&self, fresh: &Preview, plan: &Plan) -> Vec<String> {
        let (was, now) = (&self.preview, shown(fresh, plan));
        let mut out = Vec::new();
        match (&was.resumes, &now.resumes) {
            (None, Some(r)) => out.push(format!(
                "an unfinished run {} of this plan now exists ({} tasks done), which apply would \
                 resume",
                short(&r.id),
                r.tasks_done
            )),
            (Some(r), None) => out.push(format!(
                "the unfinished run {} that the saved plan would resume is no longer unfinished",
                short(&r.id)
            )),
            (Some(a), Some(b)) if a.id != b.id => out.push(format!(
                "apply would now resume run {}, the saved plan run {}",
                short(&b.id),
                short(&a.id)
            )),
            (Some(a), Some(b)) if a.tasks_done != b.tasks_done => out.push(format!(
                "run {} now has {} tasks done, the saved plan saw {}",
                short(&b.id),
                b.tasks_done,
                a.tasks_done
            )),
            _ => {}
        }
        for a in &was.steps {
            match now.steps.iter().find(|b| b.id == a.id) {
                Some(b) => step_differences(a, b, &mut out),
                None => out.push(format!("step `{}` is no longer in the plan", a.id)),
            }
        }
        for b in &now.steps {
            if !was.steps.iter().any(|a| a.id == b.id) {
                out.push(format!("step `{}` was not in the saved plan", b.id));
            }
        }
        out
    }
}

/// `p` as it may be shown and stored: every string scrubbed of env values (the plan's) and of
/// secrets (every one this process has seen), as `plan` prints it.
pub fn shown(p: &Preview, plan: &Plan) -> Preview {
    fn scrub(v: &mut Value, plan: &Plan) {
        match v {
            Value::String(s) => *s = crate::secret::scrub_logged(&plan.redact(s)),
            Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, plan)),
            Value::Object(m) => m.values_mut().for_each(|v| scrub(v, plan)),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(p).expect("a preview serialises");
    scrub(&mut v, plan);
    serde_json::from_value(v).expect("scrubbing keeps the preview's shape")
}

fn step_differences(a: &StepPreview, b: &StepPreview, out: &mut Vec<String>) {
    let mut say = |what: String| out.push(format!("step `{}`: {what}", a.id));
    if a.action != b.action {
        say(format!(
            "apply would now {}; the saved plan would {}",
            verb(&b.action),
            verb(&a.action)
        ));
        // A step done is not looked at again: the rest of its preview says nothing comparable.
        if a.action == "done" || b.action == "done" {
            return;
        }
    }
    let key = |s: &Seen| (s.role.clone(), s.instance.clone(), s.collection.clone());
    let now: BTreeMap<_, &Seen> = b.seen.iter().map(|s| (key(s), s)).collect();
    for s in &a.seen {
        match now.get(&key(s)) {
            Some(n) => seen_differences(s, n, &mut say),
            None => say(format!(
                "`{}` on `{}` is no longer {}",
                s.collection,
                s.instance,
                if s.role == "source" {
                    "among the collections it reads"
                } else {
                    "among the collections it writes"
                }
            )),
        }
    }
    for n in &b.seen {
        if !a.seen.iter().any(|s| key(s) == key(n)) {
            say(format!(
                "`{}` on `{}` is now among the collections it {}; the saved plan did not have it",
                n.collection,
                n.instance,
                if n.role == "source" {
                    "reads"
                } else {
                    "writes"
                }
            ));
        }
    }
    if let Some(d) = counts_diff(&a.counts, &b.counts) {
        say(format!("counts changed: {d}"));
    }
    for c in only_in(&b.conflicts, &a.conflicts) {
        say(format!("new conflict: {c}"));
    }
    for c in only_in(&a.conflicts, &b.conflicts) {
        say(format!("conflict gone: {c}"));
    }
    for l in only_in(&a.changes, &b.changes) {
        say(format!("the saved preview said `{}`", l.trim()));
    }
    for l in only_in(&b.changes, &a.changes) {
        say(format!("the preview now says `{}`", l.trim()));
    }
}

fn seen_differences(a: &Seen, b: &Seen, say: &mut impl FnMut(String)) {
    let (coll, at) = (&a.collection, &a.instance);
    let n = |v: Option<u64>| v.map_or("an unknown number of".to_string(), |n| n.to_string());
    if a.exists != b.exists {
        say(match (a.role.as_str(), b.exists) {
            ("target", true) => format!(
                "the target `{coll}` now exists on `{at}`; the saved plan would have created it"
            ),
            ("target", false) => format!(
                "the target `{coll}` no longer exists on `{at}`; the saved plan saw it there"
            ),
            (_, true) => format!("the source `{coll}` now exists on `{at}`"),
            (_, false) => format!("the source `{coll}` no longer exists on `{at}`"),
        });
    }
    if a.rows != b.rows {
        say(if a.role == "source" {
            format!(
                "the source `{at}` now holds {} rows in `{coll}`, the saved plan saw {}",
                n(b.rows),
                n(a.rows)
            )
        } else {
            format!(
                "the target `{coll}` on `{at}` would now receive {} rows, the saved plan showed {}",
                n(b.rows),
                n(a.rows)
            )
        });
    }
    if a.segments != b.segments {
        say(format!(
            "the source `{at}` now has {} sealed segments in `{coll}`, the saved plan saw {}",
            n(b.segments),
            n(a.segments)
        ));
    }
}

fn verb(action: &str) -> &'static str {
    match action {
        "done" => "skip it (done)",
        "resume" => "resume it",
        _ => "run it",
    }
}

/// `rows 200 → 250, bytes 1.2 KiB → 2.4 KiB`: the counts that differ.
fn counts_diff(a: &Counts, b: &Counts) -> Option<String> {
    let pairs = [
        ("collections", a.collections, b.collections),
        ("partitions", a.partitions, b.partitions),
        ("segments", a.segments, b.segments),
        ("rows", a.rows, b.rows),
        ("objects", a.objects, b.objects),
    ];
    let mut parts: Vec<String> = pairs
        .iter()
        .filter(|(_, x, y)| x != y)
        .map(|(what, x, y)| format!("{what} {x} → {y}"))
        .collect();
    if a.bytes != b.bytes {
        parts.push(format!(
            "bytes {} → {}",
            human_bytes(a.bytes),
            human_bytes(b.bytes)
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The lines of `a` that `b` lacks, as many times as `a` has them more often.
fn only_in<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
    let mut left: BTreeMap<&String, usize> = BTreeMap::new();
    for l in b {
        *left.entry(l).or_default() += 1;
    }
    a.iter()
        .filter(|l| match left.get_mut(l) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests;
