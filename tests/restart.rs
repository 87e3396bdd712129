//! A target Milvus killed (SIGKILL, every process) in the middle of its imports and started
//! again on its data: the run rides through the outage or fails naming it, and at most one more
//! apply ends with every collection exact.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use planrun::milvus::{MilvusClient, MilvusConfig};
use planrun::secret::Secret;

use crate::support::{self, MILVUS_A, MILVUS_Q, S3, data, ok, unique};

/// Kills every process of Milvus Q at once, as a crash would, and starts it again on its data.
fn crash_and_restart_q() {
    let services = std::env::var_os("PLANRUN_SERVICES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| support::root().join(".services"));
    let pgid = std::fs::read_to_string(services.join("milvus-q.pgid"))
        .expect("Milvus Q was started by scripts/services.sh");
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", pgid.trim())])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL of Milvus Q's process group");
    let up = Command::new(support::root().join("scripts/services.sh"))
        .args(["up", "milvus-q"])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "Milvus Q starts again: {}",
        support::text(&up)
    );
}

/// Waits until Milvus Q has an import into one of `targets` in flight, at most 10 min.
fn wait_for_an_import_on_q(targets: &[String]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = MilvusConfig::new("milvus_q", MILVUS_Q.uri());
    cfg.user = Some("root".into());
    cfg.password = Some(Secret::new("Milvus"));
    rt.block_on(async {
        let client = MilvusClient::connect(&cfg)
            .await
            .expect("connect to Milvus Q");
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            for target in targets {
                // Not there yet until the restore creates it.
                let tasks = client
                    .list_import_tasks(target, 0)
                    .await
                    .unwrap_or_default();
                if tasks.iter().any(|t| t.state.in_flight()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no import started on Milvus Q");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_target_restarted_during_its_imports_ends_exact_within_one_more_apply() {
    for s in [&S3, &MILVUS_A, &MILVUS_Q] {
        s.require();
    }
    let _alone = support::milvus_q_alone();
    let dir = tempfile::tempdir().unwrap();
    let colls: Vec<String> = (0..4).map(|i| unique(&format!("restart{i}"))).collect();
    let bk = unique("restart_bk");
    for c in &colls {
        support::seed_small(
            &MILVUS_A,
            "root:Milvus",
            c,
            &["--rows", "20000", "--partitions", "2", "--segments", "2"],
        );
    }
    let plan = format!(
        "{head}\n[instances.milvus_q]\ntype = \"milvus\"\nuri = \"{q}\"\nuser = \"root\"\n\
         password = \"Milvus\"\ndata = \"bucket_b:files-q\"\n\n[settings]\nstate_dir = \"{state}\"\n\
         imports = 4\n{steps}",
        head = support::PLAN_HEAD,
        q = MILVUS_Q.uri(),
        state = dir.path().join("state").display(),
        steps = support::BackupRestore::of(&colls, &bk).target("milvus_q")
    );
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let apply = || {
        support::planrun()
            .args(["apply", "--yes"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let first = apply();
    let targets: Vec<String> = colls.iter().map(|c| format!("{c}_bak")).collect();
    wait_for_an_import_on_q(&targets);
    crash_and_restart_q();
    let first = first.wait_with_output().unwrap();
    let mut said = support::text(&first);
    assert!(
        said.contains("`milvus_q` cannot be reached"),
        "the outage is said:\n{said}"
    );
    let mut applies = 1;
    if !first.status.success() {
        let second = apply().wait_with_output().unwrap();
        said.push_str(&support::text(&second));
        applies += 1;
        assert!(
            second.status.success(),
            "at most one more apply ends the migration:\n{said}"
        );
    }
    let token = "root:Milvus";
    for c in &colls {
        let compared = data(&[
            "compare",
            "--uri",
            &MILVUS_A.uri(),
            "--token",
            token,
            "--collection",
            c,
            "--target-uri",
            &MILVUS_Q.uri(),
            "--target-token",
            token,
            "--target-collection",
            &format!("{c}_bak"),
        ]);
        data(&[
            "drop",
            "--uri",
            &MILVUS_Q.uri(),
            "--token",
            token,
            &format!("{c}_bak"),
        ]);
        data(&["drop", "--uri", &MILVUS_A.uri(), "--token", token, c]);
        let compared = ok(compared);
        assert!(!compared.is_empty(), "{c}: {said}");
    }
    data(&[
        "s3-clean",
        "--bucket",
        "bucket-b",
        "--prefix",
        &format!("backup/{bk}/"),
    ]);
    eprintln!("{applies} apply(s):\n{said}");
}
