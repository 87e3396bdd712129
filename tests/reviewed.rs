//! Reviewed plans: `planrun plan PLAN -o FILE` saves the preview, `planrun apply FILE` runs it
//! only while the plan file and the servers are as it saw them, and otherwise refuses, naming
//! what changed and changing nothing.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{self, BackupRestore, MILVUS_A, MILVUS_B, S3, data, ok, text};

/// A plan file (the test servers' instances and buckets, then `steps`) with a state dir of its
/// own, and where its saved plan goes.
struct Reviewed {
    dir: tempfile::TempDir,
    plan: PathBuf,
    saved: PathBuf,
}

impl Reviewed {
    fn new(head: &str, steps: &str) -> Reviewed {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.toml");
        let text = format!(
            "{head}\n[settings]\nstate_dir = \"{}\"\n\n{steps}",
            dir.path().join("state").display()
        );
        std::fs::write(&plan, text).unwrap();
        let saved = dir.path().join("reviewed.json");
        Reviewed { dir, plan, saved }
    }

    /// `planrun plan PLAN -o FILE`, which must succeed.
    fn save(&self, env: &[(&str, &str)]) -> String {
        let out = support::planrun()
            .envs(env.iter().copied())
            .arg("plan")
            .arg(&self.plan)
            .arg("-o")
            .arg(&self.saved)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    }

    fn apply_saved(&self) -> Output {
        support::planrun()
            .arg("apply")
            .arg(&self.saved)
            .output()
            .unwrap()
    }

    /// What every refusal ends with.
    fn again(&self) -> String {
        format!(
            "run `planrun plan {} -o {}` again and review it",
            std::fs::canonicalize(&self.plan).unwrap().display(),
            self.saved.display()
        )
    }

    /// The first line of a refusal of what the plan would do.
    fn refused_head(&self) -> String {
        format!(
            "not applying the saved plan `{}`: what it would do changed since it was saved (",
            self.saved.display()
        )
    }
}

/// Whether `said` says `expected`, character for character: the report's frame (`×`, `│`) and
/// the line breaks it wraps at (within a long path too) are not part of the wording.
fn has(said: &str, expected: &str) -> bool {
    flat(said).contains(&flat(expected))
}

/// Whether `said` ends with `expected`, as [`has`] reads them.
fn ends(said: &str, expected: &str) -> bool {
    flat(said).ends_with(&flat(expected))
}

fn flat(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '×' | '│'))
        .collect()
}

fn servers() {
    for s in [&S3, &MILVUS_A, &MILVUS_B] {
        s.require();
    }
}

/// The objects under `backup/<bk>/` in bucket-b.
fn backup_objects(bk: &str) -> usize {
    let list = ok(data(&["s3-list", "--bucket", "bucket-b"]));
    let prefix = format!("backup/{bk}/");
    list.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|k| k.starts_with(&prefix))
        })
        .count()
}

fn clean(coll: &str, bk: &str) {
    data(&["drop", coll]);
    support::forget_copy(coll, bk);
}

/// Inserts `n` more rows into the seeded `coll` on Milvus A, and flushes them.
fn insert_rows(coll: &str, n: usize) {
    let script = format!(
        "from pymilvus import MilvusClient\n\
         c = MilvusClient(uri='{}', token='root:Milvus')\n\
         rows = [{{'pk': 100000 + i, 'vec': [0.5] * 8, 'title': f'late {{i}}', 'score': 1.0, \
         'rank': i, 'flag': True, 'meta': {{'n': i}}}} for i in range({n})]\n\
         c.insert('{coll}', rows)\n\
         c.flush('{coll}')\n",
        MILVUS_A.uri()
    );
    ok(std::process::Command::new(support::python())
        .args(["-c", &script])
        .output()
        .unwrap());
}

#[test]
fn a_saved_backup_and_restore_applies_and_the_target_has_the_rows() {
    servers();
    let (coll, bk) = (support::unique("rv_ok"), support::unique("rv_bk"));
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let r = Reviewed::new(
        support::PLAN_HEAD,
        &BackupRestore::of(&[&coll], &bk).to_string(),
    );
    let said = r.save(&[]);
    assert!(
        has(
            &said,
            &format!(
                "Saved this plan to `{}`. To apply exactly this: planrun apply {}",
                r.saved.display(),
                r.saved.display()
            )
        ),
        "{said}"
    );
    let out = r.apply_saved();
    let shown = text(&out);
    clean_after(&coll, &bk, || {
        assert!(out.status.success(), "{shown}");
        assert!(
            has(
                &shown,
                &format!("Applying the saved plan `{}` (saved ", r.saved.display())
            ) && has(
                &shown,
                "): the plan file and the servers are as it saw them."
            ),
            "{shown}"
        );
        assert!(!has(&shown, "Apply this plan?"), "{shown}");
        assert!(has(&shown, "Apply complete: 2 of 2 steps done"), "{shown}");
        let compared = ok(data(&[
            "compare",
            "--collection",
            &coll,
            "--target-collection",
            &format!("{coll}_bak"),
        ]));
        assert!(compared.contains("\"target_rows\": 200"), "{compared}");
        // Applied, it is stale: a second apply of the same file is refused.
        let again = r.apply_saved();
        assert_eq!(again.status.code(), Some(1), "{}", text(&again));
        let said = text(&again);
        assert!(has(&said, &r.refused_head()), "{said}");
        assert!(
            has(
                &said,
                "  step `backup`: apply would now skip it (done); the saved plan would run it\n"
            ),
            "{said}"
        );
        // A step done is only said to be so: nothing about what it saw before.
        assert!(!has(&said, "the saved preview said"), "{said}");
        assert!(ends(&said, &r.again()), "{said}");
    });
}

/// Runs `check`, then cleans up even when it failed.
fn clean_after(coll: &str, bk: &str, check: impl FnOnce() + std::panic::UnwindSafe) {
    let r = std::panic::catch_unwind(check);
    clean(coll, bk);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_saved_plan_whose_source_gained_rows_is_refused_naming_both_counts() {
    servers();
    let (coll, bk) = (support::unique("rv_rows"), support::unique("rv_bk"));
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let r = Reviewed::new(
        support::PLAN_HEAD,
        &BackupRestore::of(&[&coll], &bk).to_string(),
    );
    r.save(&[]);
    insert_rows(&coll, 50);
    let out = r.apply_saved();
    let said = text(&out);
    clean_after(&coll, &bk, || {
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(has(&said, &r.refused_head()), "{said}");
        assert!(
            has(
                &said,
                &format!(
                    "  step `backup`: the source `milvus_a` now holds 250 rows in `default.{coll}`, \
                 the saved plan saw 200\n"
                )
            ),
            "{said}"
        );
        assert!(
            has(
                &said,
                &format!(
                    "  step `restore`: the target `default.{coll}_bak` on `milvus_b` would now \
                 receive 250 rows, the saved plan showed 200\n"
                )
            ),
            "{said}"
        );
        assert!(ends(&said, &r.again()), "{said}");
        assert!(!support::exists_on(&MILVUS_B, "", &format!("{coll}_bak")));
        assert_eq!(backup_objects(&bk), 0, "nothing was backed up");
        assert!(!r.dir.path().join("state").exists(), "no run was recorded");
    });
}

#[test]
fn a_saved_plan_whose_target_appeared_is_refused_naming_the_target() {
    servers();
    let (coll, bk) = (support::unique("rv_tgt"), support::unique("rv_bk"));
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let r = Reviewed::new(
        support::PLAN_HEAD,
        &BackupRestore::of(&[&coll], &bk).to_string(),
    );
    r.save(&[]);
    let target = format!("{coll}_bak");
    ok(data(&[
        "seed",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        "--collection",
        &target,
        "--rows",
        "10",
        "--partitions",
        "1",
        "--segments",
        "1",
        "--delete-every",
        "0",
    ]));
    let out = r.apply_saved();
    let said = text(&out);
    clean_after(&coll, &bk, || {
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(has(&said, &r.refused_head()), "{said}");
        assert!(
            has(
                &said,
                &format!(
                    "  step `restore`: the target `default.{target}` now exists on `milvus_b`; the \
                 saved plan would have created it\n"
                )
            ),
            "{said}"
        );
        assert!(has(&said, "  step `restore`: new conflict: "), "{said}");
        assert!(ends(&said, &r.again()), "{said}");
        assert_eq!(backup_objects(&bk), 0, "nothing was backed up");
        // The collection found there is the one made above, untouched.
        let names = ok(data(&[
            "dump-names",
            "--uri",
            &MILVUS_B.uri(),
            "--token",
            "",
        ]));
        let line = names
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&target));
        assert!(line.is_some_and(|l| l.ends_with(" 10")), "{names}");
    });
}

#[test]
fn a_saved_plan_holds_no_secret_nor_env_value() {
    servers();
    let (coll, bk) = (support::unique("rv_sec"), support::unique("rv_bk"));
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let (key, secret) = support::S3_KEY;
    let head = support::PLAN_HEAD
        .replace(
            "password = \"Milvus\"",
            "password = \"{{ env.RV_MILVUS_PASSWORD }}\"",
        )
        .replace(
            &format!("secret_access_key = \"{secret}\""),
            "secret_access_key = \"{{ env.RV_S3_SECRET }}\"",
        );
    // A non-secret value from the environment (the backup's name) is masked as well.
    let steps = BackupRestore::of(&[&coll], "{{ env.RV_BACKUP }}").to_string();
    let r = Reviewed::new(&head, &steps);
    r.save(&[
        ("RV_MILVUS_PASSWORD", "Milvus"),
        ("RV_S3_SECRET", secret),
        ("RV_BACKUP", &bk),
    ]);
    let file = std::fs::read_to_string(&r.saved).unwrap();
    clean_after(&coll, &bk, || {
        for value in ["Milvus", secret, bk.as_str()] {
            assert!(
                !file.contains(value),
                "`{value}` is in the saved plan:\n{file}"
            );
        }
        // The access key id is written in the plan, a secret all the same: shown as "set".
        assert!(!file.contains(key), "{file}");
        let v: serde_json::Value = serde_json::from_str(&file).unwrap();
        assert_eq!(v["kind"], "planrun saved plan");
        assert_eq!(v["format_version"], 1);
        let milvus_a = &v["plan"]["content"]["instances"]["milvus_a"];
        assert_eq!(milvus_a["password"], "set", "{milvus_a}");
        assert_eq!(
            v["plan"]["path"],
            std::fs::canonicalize(&r.plan)
                .unwrap()
                .display()
                .to_string()
        );
        let backup = &v["preview"]["steps"][0];
        assert_eq!(backup["id"], "backup");
        assert_eq!(backup["counts"]["rows"], 200);
        assert_eq!(
            backup["seen"][0]["collection"],
            format!("default.{coll}"),
            "{backup}"
        );
    });
}

/// A plan of one copy between local directories under `dir`, into `dst:<to>`: no server
/// needed.
fn local_copy(dir: &Path, to: &str) -> Reviewed {
    std::fs::create_dir_all(dir.join("src/in")).unwrap();
    std::fs::write(dir.join("src/in/x"), "12345").unwrap();
    let head = format!(
        "version = 1\nname = \"local\"\n\
         [buckets.src]\ntype = \"local\"\npath = \"{}\"\n\
         [buckets.dst]\ntype = \"local\"\npath = \"{}\"\n",
        dir.join("src").display(),
        dir.join("dst").display()
    );
    let steps = format!("[steps.copy]\ntype = \"copy\"\nfrom = \"src:in\"\nto = \"dst:{to}\"\n");
    Reviewed::new(&head, &steps)
}

#[test]
fn a_saved_plan_whose_plan_file_changed_is_refused_naming_the_key() {
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("dst")).unwrap();
    let r = local_copy(files.path(), "out");
    r.save(&[]);
    let text_now = std::fs::read_to_string(&r.plan).unwrap();
    std::fs::write(&r.plan, text_now.replace("dst:out", "dst:elsewhere")).unwrap();
    let out = r.apply_saved();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        has(
            &said,
            &format!(
                "not applying the saved plan `{}`: the plan file `{}` changed since it was saved (",
                r.saved.display(),
                std::fs::canonicalize(&r.plan).unwrap().display()
            )
        ),
        "{said}"
    );
    assert!(
        has(
            &said,
            "  ~ steps.copy.to: \"dst:out\" → \"dst:elsewhere\"\n"
        ),
        "{said}"
    );
    assert!(ends(&said, &r.again()), "{said}");
    assert!(!files.path().join("dst/elsewhere").exists());
    assert!(!files.path().join("dst/out").exists());
    // Put back as it was, it applies.
    std::fs::write(&r.plan, &text_now).unwrap();
    let out = r.apply_saved();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(files.path().join("dst/out/x")).unwrap(),
        "12345"
    );
}

#[test]
fn a_plan_with_conflicts_is_not_saved_and_a_preview_is_not_a_saved_plan() {
    let files = tempfile::tempdir().unwrap();
    // No `dst` directory: the copy has a conflict.
    let r = local_copy(files.path(), "out");
    let out = support::planrun()
        .arg("plan")
        .arg(&r.plan)
        .arg("--out")
        .arg(&r.saved)
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        has(
            &said,
            &format!(
                "not saved to `{}`: the plan has 1 conflict(s) (shown above), and a saved plan must \
             be one apply can run; fix them and run `planrun plan {} -o {}` again",
                r.saved.display(),
                r.plan.display(),
                r.saved.display()
            )
        ),
        "{said}"
    );
    assert!(!r.saved.exists());
    // The JSON of `plan --json` is told apart from a saved plan.
    let json = support::planrun()
        .arg("plan")
        .arg(&r.plan)
        .arg("--json")
        .output()
        .unwrap();
    std::fs::write(&r.saved, &json.stdout).unwrap();
    let out = r.apply_saved();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        has(
            &text(&out),
            &format!(
                "`{}` is neither a plan nor a saved plan: it is the preview printed by `planrun plan \
             --json`, not a saved plan; save one with `planrun plan PLAN -o FILE`",
                r.saved.display()
            )
        ),
        "{}",
        text(&out)
    );
}
