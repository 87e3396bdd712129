//! The state dir when things go wrong (no servers needed): Ctrl-C and kill during the read-only
//! preview leave no copy behind, a state dir deleted during a run, a damaged or unreadable sled
//! store, a full disk. Every test runs the binary with its own TMPDIR, to see every copy it makes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// A plan dir: `src` with `objects` objects of `size` bytes, an empty `dst`, a private TMPDIR,
/// the state dir `.planrun`, and `plan.toml` copying `src:b` to `dst:c` (plus `extra` TOML).
struct Dir {
    root: tempfile::TempDir,
}

impl Dir {
    fn new(objects: usize, size: usize, extra: &str) -> Dir {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src/b");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(root.path().join("dst")).unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        for i in 0..objects {
            std::fs::write(src.join(format!("o{i}")), vec![i as u8; size]).unwrap();
        }
        let from = if extra.is_empty() { "src:b" } else { "slow:b" };
        std::fs::write(
            root.path().join("plan.toml"),
            format!(
                "version = 1\nname = \"state\"\n[settings]\nconcurrency = 1\n\
                 [buckets.src]\ntype = \"local\"\npath = \"src\"\n\
                 [buckets.dst]\ntype = \"local\"\npath = \"dst\"\n{extra}\n\
                 [steps.copy]\ntype = \"copy\"\nfrom = \"{from}\"\nto = \"dst:c\"\n"
            ),
        )
        .unwrap();
        Dir { root }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    /// `planrun ARGS` run in this dir, with its TMPDIR.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::planrun();
        c.args(args)
            .current_dir(self.root.path())
            .env("TMPDIR", self.path("tmp"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Snapshot copies in this dir's TMPDIR.
    fn copies(&self) -> Vec<String> {
        std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Objects at the destination (temp files of puts cut short are not objects).
    fn copied(&self) -> usize {
        std::fs::read_dir(self.path("dst/c")).map_or(0, |d| {
            d.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".planrun-tmp.")
            })
            .count()
        })
    }
}

/// Both streams, with the error report's wrapped lines (`  │ `) joined again.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace("\n  │ ", " ")
}

/// An S3 endpoint that takes connections and never answers: the preview waits on it.
fn silent_s3() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let bucket = format!(
        "[buckets.slow]\ntype = \"s3\"\nendpoint = \"http://{}\"\nbucket = \"slow\"\n\
         region = \"us-east-1\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        l.local_addr().unwrap()
    );
    (l, bucket)
}

/// Waits until `child` connects to `l` (it is in the middle of its preview then).
fn wait_connected(l: &TcpListener, child: &mut Child) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => return s,
            Err(_) if start.elapsed() < Duration::from_secs(120) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("planrun ended ({status}) before it reached the bucket");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("planrun never reached the bucket: {e}"),
        }
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

/// A state dir with a store and no runs, so that `plan` and `apply` take a snapshot copy.
fn empty_store(d: &Dir) {
    drop(planrun::checkpoint::Store::open(&d.path(".planrun")).unwrap());
}

#[test]
fn ctrl_c_in_plan_or_the_preview_of_apply_changes_nothing_and_leaves_no_copy() {
    let (l, slow) = silent_s3();
    let d = Dir::new(0, 0, &slow);
    empty_store(&d);
    for args in [&["plan", "plan.toml"][..], &["apply", "--yes", "plan.toml"]] {
        let mut child = d.cmd(args).stderr(Stdio::piped()).spawn().unwrap();
        let _conn = wait_connected(&l, &mut child);
        let copies = d.copies();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(
            copies[0].starts_with(&format!("planrun-snapshot-{}-", child.id())),
            "{copies:?}"
        );
        signal(&child, "-INT");
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{args:?}: {err}");
        assert_eq!(err.trim(), "interrupted; nothing was changed", "{args:?}");
        assert!(d.copies().is_empty(), "{args:?} left {:?}", d.copies());
    }
    // apply never took the lock nor recorded a run.
    assert!(!d.path(".planrun/lock").exists());
    let runs = text(&d.run(&["runs", "--state-dir", ".planrun"]));
    assert_eq!(runs.lines().count(), 1, "{runs}");
}

#[test]
fn a_killed_reader_s_copy_is_removed_by_the_next_one() {
    let (l, slow) = silent_s3();
    let d = Dir::new(0, 0, &slow);
    empty_store(&d);
    let mut child = d.cmd(&["plan", "plan.toml"]).spawn().unwrap();
    let _conn = wait_connected(&l, &mut child);
    signal(&child, "-KILL");
    child.wait().unwrap();
    let left = d.copies();
    assert_eq!(left.len(), 1, "a kill leaves the copy: {left:?}");

    let out = d.run(&["runs", "--state-dir", ".planrun"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(d.copies().is_empty(), "{:?}", d.copies());
}

#[test]
fn a_state_dir_deleted_during_apply_is_reported_and_the_next_apply_reconciles() {
    let d = Dir::new(600, 200_000, "");
    let mut child = d
        .cmd(&["apply", "--yes", "--progress", "plain", "plan.toml"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("copy started") {
        assert!(err.read_line(&mut seen).unwrap() > 0, "apply ended: {seen}");
    }
    std::fs::remove_dir_all(d.path(".planrun")).unwrap();
    std::io::Read::read_to_string(&mut err, &mut seen).unwrap();
    let status = child.wait().unwrap();
    let seen = seen.replace("\n  │ ", " ");
    println!("{seen}");
    assert_eq!(status.code(), Some(1), "{seen}");
    let state = d.path(".planrun");
    let state = state.display();
    assert!(
        seen.contains(&format!(
            "copy: FAILED: the state dir `{state}` was deleted or moved away during the run: \
             nothing can be recorded there any more"
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!(
            "× the state dir `{state}` was deleted or moved away during run "
        )),
        "{seen}"
    );
    assert!(
        seen.contains(
            "the history of this run (and of any earlier run kept there) is lost; planrun \
             stopped at its next record"
        ),
        "{seen}"
    );
    assert!(
        seen.contains(
            "The next `planrun apply plan.toml` starts without records and reconciles against \
             the servers as after a crash"
        ),
        "{seen}"
    );
    let before = d.copied();
    assert!(before < 600, "the run went on after the state dir was gone");
    assert!(
        !d.path(".planrun").exists(),
        "something recreated the state dir"
    );

    let out = d.run(&["apply", "--yes", "--progress", "plain", "plan.toml"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("{before} already present")), "{t}");
    assert_eq!(d.copied(), 600);
}

#[test]
fn a_damaged_store_says_what_was_lost_and_apply_reconciles() {
    let d = Dir::new(40, 1000, "");
    let out = d.run(&["apply", "--yes", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let runs = text(&d.run(&["runs", "--state-dir", ".planrun"]));
    let id = runs
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    // sled reads its log up to damage and drops the rest without an error.
    let db = d.path(".planrun/state/db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..64].fill(0xab);
    std::fs::write(&db, bytes).unwrap();

    let out = d.run(&["plan", "plan.toml"]);
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    let state = d.path(".planrun/state");
    assert!(
        t.contains(&format!(
            "warning: the state store `{}` is damaged (truncated or corrupted): sled read it up \
             to the damage and dropped the rest without an error. Lost: ",
            state.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "1 of 1 run records (run {id}); 41 of 41 task records of run {id}."
        )),
        "{t}"
    );
    assert!(
        t.contains(
            "Apply goes on from what is left, reconciling against the servers as after a crash"
        ),
        "{t}"
    );

    let out = d.run(&["apply", "--yes", "--progress", "plain", "plan.toml"]);
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    assert!(t.contains("is damaged"), "{t}");
    assert!(t.contains("40 already present"), "{t}");
    // Reported once: the writer counts what is left from then on.
    let t = text(&d.run(&["plan", "plan.toml"]));
    assert!(!t.contains("damaged"), "{t}");
}

#[test]
fn an_unreadable_store_says_to_move_it_aside() {
    let d = Dir::new(5, 1000, "");
    assert!(d.run(&["apply", "--yes", "plan.toml"]).status.success());
    let conf = d.path(".planrun/state/conf");
    let bytes = std::fs::read(&conf).unwrap();
    std::fs::write(&conf, &bytes[..bytes.len() / 2]).unwrap();

    let out = d.run(&["plan", "plan.toml"]);
    let t = text(&out);
    println!("{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    let state = d.path(".planrun");
    let state = state.display();
    assert!(
        t.contains(&format!(
            "× the state store `{state}/state` cannot be read: sled found corrupted data in it."
        )),
        "{t}"
    );
    assert!(
        t.contains(
            "Move the state dir aside and apply again; the next apply starts without \
                    records and reconciles against the servers as after a crash:"
        ),
        "{t}"
    );
    assert!(
        t.contains(&format!("    mv {state} {state}.damaged")),
        "{t}"
    );
    assert!(d.copies().is_empty(), "{:?}", d.copies());

    std::fs::rename(d.path(".planrun"), d.path(".planrun.damaged")).unwrap();
    let out = d.run(&["apply", "--yes", "--progress", "plain", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("5 already present"), "{}", text(&out));
}

#[test]
fn a_full_disk_is_said_plainly() {
    // /dev/full fails every write with ENOSPC, as a full disk does (a real one needs root).
    let d = Dir::new(5, 1000, "");
    std::fs::create_dir_all(d.path(".planrun/state")).unwrap();
    std::os::unix::fs::symlink("/dev/full", d.path(".planrun/state/db")).unwrap();
    let out = d.run(&["apply", "--yes", "plan.toml"]);
    let t = text(&out);
    println!("{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "× no space left on the disk of the state dir `{}`: planrun cannot record its \
             progress there. Free some space and run the command again: what was recorded \
             before is kept, and apply resumes from it as after a crash.",
            d.path(".planrun").display()
        )),
        "{t}"
    );
    // sled logs its own io errors before (at the default level, set in main.rs): the report
    // itself is plain.
    let report = &t[t.find("× ").unwrap()..];
    assert!(!report.contains("os error"), "{report}");
    assert!(!Path::new(&d.path(".planrun/lock")).exists());
}

#[test]
fn a_crash_at_any_point_never_looks_like_damage() {
    let d = Dir::new(40, 1000, "");
    for crash in ["object-copied:3", "object-copied:25", "checkpoint:1"] {
        let out = d
            .cmd(&["apply", "--yes", "plan.toml"])
            .env("PLANRUN_CRASH", crash)
            .output()
            .unwrap();
        assert!(text(&out).contains("killing the process"), "{}", text(&out));
        let t = text(&d.run(&["plan", "plan.toml"]));
        assert!(!t.contains("damaged"), "after {crash}: {t}");
    }
    let out = d.run(&["apply", "--yes", "plan.toml"]);
    let t = text(&out);
    assert!(out.status.success() && !t.contains("damaged"), "{t}");
    assert_eq!(d.copied(), 40);
}
