//! Unit tests of saved plans: detection, scrubbing, and the differences named.

use std::collections::BTreeMap;

use super::*;
use crate::exec::preview::RunSummary;

/// A local-bucket plan whose backup path comes from `env.WHERE`.
fn plan(dir: &std::path::Path, env_value: &str, bucket_path: &str) -> Plan {
    let text = format!(
        "version = 1\nname = \"p\"\n[vars]\nwhere = \"{{{{ env.WHERE }}}}\"\n\
         [buckets.b]\ntype = \"local\"\npath = \"{bucket_path}\"\n\
         [buckets.c]\ntype = \"local\"\npath = \"c\"\n\
         [steps.copy]\ntype = \"copy\"\nfrom = \"b:x\"\nto = \"c:{{{{ vars.where }}}}\"\n"
    );
    let env = BTreeMap::from([("WHERE".to_string(), env_value.to_string())]);
    crate::plan::load_str(&dir.join("plan.toml"), &text, &env)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .plan
}

fn step(id: &str) -> StepPreview {
    StepPreview {
        id: id.into(),
        kind: "backup".into(),
        action: "run".into(),
        ..Default::default()
    }
}

fn preview(steps: Vec<StepPreview>) -> Preview {
    Preview {
        format_version: 1,
        steps,
        ..Default::default()
    }
}

#[test]
fn a_saved_plan_round_trips_and_is_told_from_toml_and_from_plan_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), "secret-place", "d");
    let saved = SavedPlan::new(&p, &preview(vec![step("backup")]), 0);
    let text = serde_json::to_string_pretty(&saved).unwrap();
    let back = SavedPlan::detect(&text).unwrap().expect("a saved plan");
    assert_eq!(back.plan.fingerprint, p.fingerprint());
    assert_eq!(back.saved_at, "1970-01-01 00:00:00 UTC");
    assert!(SavedPlan::detect("version = 1\n").unwrap().is_none());
    let json = serde_json::to_string(&preview(vec![])).unwrap();
    let summary = serde_json::to_string(&Preview::default()).unwrap();
    assert!(json.contains("summary") && summary.contains("summary"));
    assert_eq!(
        SavedPlan::detect(&json).unwrap_err(),
        "it is the preview printed by `planrun plan --json`, not a saved plan; save one with \
         `planrun plan PLAN -o FILE`"
    );
    let newer = text.replace(
        "\"format_version\": 1,\n  \"planrun",
        "\"format_version\": 9,\n  \"planrun",
    );
    assert_eq!(
        SavedPlan::detect(&newer).unwrap_err(),
        "its format_version is 9, and this planrun reads 1"
    );
    assert!(
        SavedPlan::detect("{ not json")
            .unwrap_err()
            .starts_with("it is not valid JSON")
    );
}

#[test]
fn env_values_are_scrubbed_from_the_saved_preview_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), "secret-place", "d");
    let mut s = step("copy");
    s.changes.push("+ copy to c:secret-place/".into());
    let saved = SavedPlan::new(&p, &preview(vec![s]), 0);
    let text = serde_json::to_string(&saved).unwrap();
    assert!(!text.contains("secret-place"), "{text}");
    assert_eq!(saved.preview.steps[0].changes, ["+ copy to c:***/"]);
}

#[test]
fn a_changed_plan_is_named_by_its_keys_and_an_env_change_is_said_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let saved = SavedPlan::new(&plan(dir.path(), "one", "d"), &preview(vec![]), 0);
    assert!(saved.plan_changed(&plan(dir.path(), "one", "d")).is_none());
    let path = saved.plan_changed(&plan(dir.path(), "one", "e")).unwrap();
    assert!(path.contains("buckets.b.path"), "{path}");
    let env = saved.plan_changed(&plan(dir.path(), "two", "d")).unwrap();
    assert_eq!(
        env,
        "  a value taken from the environment changed (such values are never shown)"
    );
}

#[test]
fn differences_name_the_step_the_collection_and_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), "xplace", "d");
    let mut backup = step("backup");
    backup
        .seen
        .push(Seen::source("milvus_a", "default", "coll", 200, Some(1)));
    backup.counts.rows = 200;
    backup.changes.push("+ default.coll: 200 rows".into());
    let mut restore = step("restore");
    restore.seen.push(Seen::target(
        "milvus_b",
        "default",
        "coll_bak",
        false,
        Some(200),
    ));
    let saved = SavedPlan::new(&p, &preview(vec![backup.clone(), restore.clone()]), 0);
    assert!(
        saved
            .differences(&preview(vec![backup.clone(), restore.clone()]), &p)
            .is_empty()
    );

    backup.seen[0].rows = Some(250);
    backup.seen[0].segments = Some(2);
    backup.counts.rows = 250;
    backup.changes = vec!["+ default.coll: 250 rows".into()];
    restore.seen[0].exists = true;
    restore.conflicts.push("`coll_bak` already exists".into());
    let mut fresh = preview(vec![backup, restore]);
    fresh.resumes = Some(RunSummary {
        id: "0123456789abcdef".into(),
        tasks_done: 3,
    });
    assert_eq!(
        saved.differences(&fresh, &p),
        [
            "an unfinished run 01234567 of this plan now exists (3 tasks done), which apply \
             would resume",
            "step `backup`: the source `milvus_a` now holds 250 rows in `default.coll`, the \
             saved plan saw 200",
            "step `backup`: the source `milvus_a` now has 2 sealed segments in `default.coll`, \
             the saved plan saw 1",
            "step `backup`: counts changed: rows 200 → 250",
            "step `backup`: the saved preview said `+ default.coll: 200 rows`",
            "step `backup`: the preview now says `+ default.coll: 250 rows`",
            "step `restore`: the target `default.coll_bak` now exists on `milvus_b`; the saved \
             plan would have created it",
            "step `restore`: new conflict: `coll_bak` already exists",
        ]
    );
}

#[test]
fn collections_gained_or_lost_are_named_and_a_step_done_since_only_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path(), "xplace", "d");
    let mut a = step("backup");
    a.seen.push(Seen::source("m", "default", "old", 1, None));
    a.changes.push("+ default.old".into());
    let saved = SavedPlan::new(&p, &preview(vec![a]), 0);
    let mut b = step("backup");
    b.seen.push(Seen::source("m", "default", "new", 1, None));
    assert_eq!(
        saved.differences(&preview(vec![b.clone()]), &p),
        [
            "step `backup`: `default.old` on `m` is no longer among the collections it reads",
            "step `backup`: `default.new` on `m` is now among the collections it reads; the saved \
             plan did not have it",
            "step `backup`: the saved preview said `+ default.old`",
        ]
    );
    b.action = "done".into();
    assert_eq!(
        saved.differences(&preview(vec![b]), &p),
        ["step `backup`: apply would now skip it (done); the saved plan would run it"]
    );
}

#[test]
fn only_in_counts_repeated_lines() {
    let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (a, b) = (l(&["x", "x", "y"]), l(&["x", "z"]));
    assert_eq!(only_in(&a, &b), [&"x".to_string(), &"y".to_string()]);
    assert_eq!(only_in(&b, &a), [&"z".to_string()]);
}
