//! The migration of the end-to-end tests (`e2e.rs`, `verify.rs`): an example plan of `plans/`
//! with names of its own, its seeded collections, and the row-by-row check of the copies.

use std::path::PathBuf;

use serde_json::Value;

use super::{MILVUS_A, MILVUS_B, S3, data, ok, root, unique};

/// An example plan made unique: its collections (seeded on Milvus A), backup and state dir.
pub struct Scenario {
    _dir: tempfile::TempDir,
    pub plan: PathBuf,
    pub state: PathBuf,
    pub coll: String,
    pub backup: String,
}

impl Scenario {
    /// An example plan with unique names; `collections` gets a second, varchar-keyed collection.
    pub fn new(example: &str) -> Scenario {
        Self::edited(example, |t| t)
    }

    /// Like `new`, with the example plan's text changed by `edit` first.
    pub fn edited(example: &str, edit: impl Fn(String) -> String) -> Scenario {
        for s in [&S3, &MILVUS_A, &MILVUS_B] {
            s.require();
        }
        let coll = unique("e2e");
        let backup = unique("bk");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let text = edit(std::fs::read_to_string(root().join("plans").join(example)).unwrap());
        let text = text
            .replace("collection = \"coll\"", &format!("collection = \"{coll}\""))
            .replace("backup = \"my_backup\"", &format!("backup = \"{backup}\""))
            .replace(
                "collections = [\"{{ vars.collection }}\"]",
                "collections = [\"{{ vars.collection }}\", \"{{ vars.collection }}_str\"]",
            );
        assert!(
            text.contains(&coll) && text.contains(&backup),
            "example plan changed shape"
        );
        let text = format!("{text}\n[settings]\nstate_dir = \"{}\"\n", state.display());
        let plan = dir.path().join(example);
        std::fs::write(&plan, text).unwrap();
        let s = Scenario {
            _dir: dir,
            plan,
            state,
            coll,
            backup,
        };
        s.seed();
        s
    }

    fn seed(&self) {
        let int = ok(data(&[
            "seed",
            "--collection",
            &self.coll,
            "--rows",
            "2400",
        ]));
        let str_coll = format!("{}_str", self.coll);
        let s = ok(data(&[
            "seed",
            "--collection",
            &str_coll,
            "--pk",
            "varchar",
            "--rows",
            "900",
            "--partitions",
            "2",
            "--segments",
            "3",
            "--delete-every",
            "5",
            // A partition-key collection: its partitions are made by Milvus, not by planrun.
            "--partition-key",
            "4",
        ]));
        for out in [int, s] {
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            assert!(v["deleted"].as_u64().unwrap() > 0, "seed deletes rows: {v}");
        }
    }

    pub fn plan_path(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    /// Row-by-row comparison of both source collections with their restored copies on B.
    pub fn assert_restored(&self) {
        for c in [self.coll.clone(), format!("{}_str", self.coll)] {
            let out = data(&[
                "compare",
                "--collection",
                &c,
                "--target-collection",
                &format!("{c}_bak"),
            ]);
            let report = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "`{c}_bak` on Milvus B differs from `{c}`: {report}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_str(report.trim()).unwrap();
            assert!(v["source_rows"].as_u64().unwrap() > 0, "{v}");
            assert_eq!(v["source_rows"], v["target_rows"], "{v}");
            assert_eq!(v["source_partitions"], v["target_partitions"], "{v}");
            assert_eq!(v["source_indexes"], v["target_indexes"], "{v}");
        }
    }

    pub fn cleanup(&self) {
        for c in [self.coll.clone(), format!("{}_str", self.coll)] {
            data(&["drop", &c]);
            data(&[
                "drop",
                "--uri",
                &MILVUS_B.uri(),
                "--token",
                "",
                &format!("{c}_bak"),
            ]);
        }
        for b in ["bucket-a", "bucket-b"] {
            data(&[
                "s3-clean",
                "--bucket",
                b,
                "--prefix",
                &format!("backup/{}/", self.backup),
            ]);
        }
    }
}
