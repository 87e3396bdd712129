//! A target that restarts in the middle of its imports: Milvus Q killed (SIGKILL, every process)
//! while a binlog restore imports into it, and started again on its data. The run waits for it
//! or fails naming it, and at most one more apply ends with every collection exact.

use std::process::Command;
use std::time::{Duration, Instant};

use planrun::milvus::{MilvusClient, MilvusConfig};
use planrun::secret::Secret;

use crate::support::{self, MILVUS_A, MILVUS_Q, S3, data, ok, unique};

/// Runs `scripts/services.sh ARGS` (the servers of this checkout).
fn services(args: &[&str]) -> std::process::Output {
    Command::new(support::root().join("scripts/services.sh"))
        .args(args)
        .output()
        .expect("run scripts/services.sh")
}

/// Kills every process of Milvus Q at once, as a power cut or an OOM kill would.
fn kill_q() {
    let pgid_file = support::root().join(".services/milvus-q.pgid");
    let pgid = std::fs::read_to_string(&pgid_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (is milvus-q started by scripts/services.sh?)",
            pgid_file.display()
        )
    });
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", pgid.trim())])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL the group of milvus-q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Milvus Q is held for the whole test; the only other holder is a test of its own thread.
#[allow(clippy::await_holding_lock)]
async fn a_target_restarted_during_its_imports_ends_exact_within_one_more_apply() {
    for s in [&S3, &MILVUS_A, &MILVUS_Q] {
        s.require();
    }
    let _alone = support::milvus_q_alone();
    let colls: Vec<String> = (0..4).map(|i| unique(&format!("restart{i}"))).collect();
    let bk = unique("restart_bk");
    for c in &colls {
        support::seed_small(&MILVUS_A, "root:Milvus", c, &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = format!(
        "{head}\n[instances.milvus_q]\ntype = \"milvus\"\nuri = \"{q}\"\nuser = \"root\"\n\
         password = \"Milvus\"\ndata = \"bucket_b:files-q\"\n\n[settings]\nstate_dir = \"{state}\"\n\
         imports = 4\n{steps}",
        head = support::PLAN_HEAD,
        q = MILVUS_Q.uri(),
        state = dir.path().join("state").display(),
        steps = support::BackupRestore::of(&colls, &bk).target("milvus_q")
    );
    let path = dir.path().join("restart.toml");
    std::fs::write(&path, plan).unwrap();

    let apply = || {
        tokio::process::Command::from(support::planrun())
            .args(["apply", "--yes", "--progress", "plain"])
            .arg(&path)
            .kill_on_drop(true)
            .output()
    };
    let first = tokio::spawn(apply());
    // Kill Q while an import of this run is in flight on it.
    let mut cfg = MilvusConfig::new("milvus_q", MILVUS_Q.uri());
    cfg.user = Some("root".into());
    cfg.password = Some(Secret::new("Milvus"));
    let q = MilvusClient::connect(&cfg).await.unwrap();
    let started = Instant::now();
    'seen: loop {
        assert!(
            !first.is_finished(),
            "the first apply ended before any import was in flight"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no import on milvus-q in 300 s"
        );
        for c in &colls {
            let tasks = q
                .list_import_tasks(&format!("{c}_bak"), 0)
                .await
                .unwrap_or_default();
            if tasks.iter().any(|t| t.state.in_flight()) {
                break 'seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill_q();
    // `down` forgets the killed group once it is gone; `up` starts Q again on its data.
    ok(services(&["down", "milvus-q"]));
    ok(services(&["up", "milvus-q"]));
    let first = first.await.unwrap().unwrap();
    let first_text = support::text(&first);
    eprintln!("first apply:\n{first_text}");
    let mut last = (first.status.success(), first_text.clone());
    if !first.status.success() {
        // It failed naming the server; one more apply finishes the work.
        assert!(first_text.contains("milvus_q"), "{first_text}");
        let second = apply().await.unwrap();
        last = (second.status.success(), support::text(&second));
        eprintln!("second apply:\n{}", last.1);
    }
    let mut compared = Vec::new();
    for c in &colls {
        compared.push(data(&[
            "compare",
            "--collection",
            c,
            "--target-uri",
            &MILVUS_Q.uri(),
            "--target-token",
            "root:Milvus",
            "--target-collection",
            &format!("{c}_bak"),
        ]));
    }
    for c in &colls {
        data(&["drop", c]);
        data(&[
            "drop",
            "--uri",
            &MILVUS_Q.uri(),
            "--token",
            "root:Milvus",
            &format!("{c}_bak"),
        ]);
    }
    data(&[
        "s3-clean",
        "--bucket",
        "bucket-b",
        "--prefix",
        &format!("backup/{bk}/"),
    ]);

    assert!(last.0, "at most one more apply ends the run:\n{}", last.1);
    for c in compared {
        ok(c);
    }
    // The outage was seen by the first apply, said with the server's name.
    assert!(
        first_text.contains("`milvus_q` cannot be reached")
            || first_text.contains("on `milvus_q`")
            || first_text.contains("importing it again"),
        "{first_text}"
    );
}
