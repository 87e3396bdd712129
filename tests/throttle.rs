//! A source that answers with rate limits (Milvus Q: 2 queries/s) slows planrun down instead of
//! failing it: the migration completes exact, and the back-off is said once, in the progress
//! and in the JSON events.

use crate::support::{self, MILVUS_B, MILVUS_Q, S3, data, ok, unique};

/// A rows migration of `coll` from Milvus Q to Milvus B as `<coll>_bak`; what apply printed.
fn migrate(dir: &std::path::Path, coll: &str, bk: &str, progress: &str) -> (bool, String) {
    let plan = format!(
        "{head}\n[instances.milvus_q]\ntype = \"milvus\"\nuri = \"{q}\"\nuser = \"root\"\n\
         password = \"Milvus\"\n\n[settings]\nstate_dir = \"{state}\"\n{steps}",
        head = support::PLAN_HEAD,
        q = MILVUS_Q.uri(),
        state = dir.join(format!("state-{progress}")).display(),
        steps = support::BackupRestore::of(&[coll], bk)
            .source("milvus_q")
            .rows()
    );
    let path = dir.join(format!("{progress}.toml"));
    std::fs::write(&path, plan).unwrap();
    let out = support::planrun()
        .args(["apply", "--yes", "--progress", progress])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.success(), support::text(&out))
}

#[test]
fn a_rate_limited_source_is_read_slower_not_failed() {
    for s in [&S3, &MILVUS_Q, &MILVUS_B] {
        s.require();
    }
    let _alone = support::milvus_q_alone();
    let dir = tempfile::tempdir().unwrap();
    let q = MILVUS_Q.uri();
    let pushed_back = "`milvus_q` pushes back (request is rejected by grpc RateLimiter middleware, \
                       please retry later: rate limit exceeded[rate=2]); planrun slows down to";
    for progress in ["plain", "json"] {
        let coll = unique("throttled");
        let bk = unique("throttled_bk");
        // Three partitions: a rows backup counts and reads each, more than 2 queries a second.
        ok(data(&[
            "seed",
            "--uri",
            &q,
            "--token",
            "root:Milvus",
            "--collection",
            &coll,
            "--rows",
            "3000",
            "--partitions",
            "3",
            "--segments",
            "1",
            "--delete-every",
            "0",
        ]));
        let (succeeded, text) = migrate(dir.path(), &coll, &bk, progress);
        let compared = data(&[
            "compare",
            "--uri",
            &q,
            "--token",
            "root:Milvus",
            "--collection",
            &coll,
            "--target-collection",
            &format!("{coll}_bak"),
        ]);
        data(&["drop", "--uri", &q, "--token", "root:Milvus", &coll]);
        support::forget_copy(&coll, &bk);

        assert!(
            succeeded,
            "the migration completes under rate limits:\n{text}"
        );
        ok(compared);
        let said: Vec<&str> = text.lines().filter(|l| l.contains(pushed_back)).collect();
        assert_eq!(said.len(), 1, "the back-off is said once:\n{text}");
        if progress == "plain" {
            assert!(
                said[0].starts_with(&format!("warning: {pushed_back}")),
                "{}",
                said[0]
            );
        } else {
            let event: serde_json::Value = serde_json::from_str(said[0]).unwrap();
            assert_eq!(event["event"], "backoff", "{event}");
            assert_eq!(event["target"], "milvus_q", "{event}");
            assert!(
                event["message"].as_str().unwrap().starts_with(pushed_back),
                "{event}"
            );
        }
    }
}
