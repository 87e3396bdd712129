//! The run machinery on local buckets (no servers needed): apply, crash, resume, changed plans,
//! `runs`/`status`/`resume`, the lock, and secrets kept out of output and the state dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{self, text};

const SECRET: &str = "sup3r-s3cret-Pa55";

struct Local {
    dir: tempfile::TempDir,
    plan: PathBuf,
}

impl Local {
    /// A copy plan between two local directories, 40 objects in nested folders.
    fn new(to: &str) -> Local {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let p = dir.path().join(format!("src/backup/b1/d{}/obj{i}", i % 4));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("object {i} ").repeat(100 + i)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("dst")).unwrap();
        let l = Local {
            plan: dir.path().join("plan.toml"),
            dir,
        };
        l.write(to);
        l
    }

    fn write(&self, to: &str) {
        let text = format!(
            r#"version = 1
name = "local-copy"

[instances.unused]
type = "milvus"
uri = "http://127.0.0.1:1"
user = "root"
password = "{{{{ env.PLANRUN_TEST_PASSWORD }}}}"

[buckets.src]
type = "local"
path = "src"

[buckets.dst]
type = "local"
path = "dst"

[buckets.s3]
type = "s3"
endpoint = "http://127.0.0.1:1"
bucket = "never-used"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "{{{{ env.PLANRUN_TEST_PASSWORD }}}}"

[steps.copy]
type = "copy"
from = "src:backup/b1"
to = "dst:{to}"
"#
        );
        std::fs::write(&self.plan, text).unwrap();
    }

    /// `planrun ARGS PLAN` with the plan's password in its env, killed at `crash` if given;
    /// fails the test if the password shows in its output.
    fn planrun(&self, args: &[&str], crash: Option<&str>) -> Output {
        let mut c = support::planrun();
        c.args(args)
            .arg(&self.plan)
            .env("PLANRUN_TEST_PASSWORD", SECRET);
        if let Some(crash) = crash {
            c.env("PLANRUN_CRASH", crash);
        }
        let out = c.output().unwrap();
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(SECRET),
                "a secret reached the output of {args:?}"
            );
        }
        out
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join(".planrun")
    }

    fn copied(&self, to: &str) -> usize {
        walk(&self.dir.path().join("dst").join(to)).len()
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            } else if !e.to_string_lossy().contains(".planrun-tmp.") {
                // Temp files of puts that a kill interrupted are not objects.
                out.push(e);
            }
        }
    }
    out
}

#[test]
fn crash_then_resume_copies_everything_once() {
    let l = Local::new("copy1");
    let out = l.planrun(&["apply", "--yes"], Some("object-copied:15"));
    assert!(!out.status.success());
    assert!(text(&out).contains("PLANRUN_CRASH"), "{}", text(&out));
    let partial = l.copied("copy1");
    assert!(
        (14..40).contains(&partial),
        "copied before the kill: {partial}"
    );

    // The dry run sees the unfinished run and what it did.
    let p = l.planrun(&["plan"], None);
    assert!(p.status.success(), "{}", text(&p));
    let t = text(&p);
    assert!(t.contains("An unfinished run"), "{t}");
    assert!(t.contains("already present at the destination"), "{t}");

    let out = l.planrun(&["apply", "--yes", "--progress", "plain"], None);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("resuming run"), "{t}");
    assert_eq!(l.copied("copy1"), 40);
    // Objects recorded before the kill were not copied again.
    assert!(t.contains("already present"), "{t}");
    assert!(!t.contains(" 0 already present"), "{t}");

    let again = l.planrun(&["apply", "--yes"], None);
    assert!(again.status.success());
    assert!(text(&again).contains("nothing to do"), "{}", text(&again));

    // runs and status read the state dir without changing it.
    let runs = l.planrun(&["runs", "--plan"], None);
    assert!(text(&runs).contains("done"), "{}", text(&runs));
    let status = l.planrun(&["status", "--plan"], None);
    assert!(text(&status).contains("copy: done"), "{}", text(&status));

    for f in walk(&l.state()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "a secret reached the state dir: {}",
            f.display()
        );
    }
}

#[test]
fn a_changed_plan_stops_until_restart() {
    let l = Local::new("copy1");
    let out = l.planrun(&["apply", "--yes"], Some("object-copied:5"));
    assert!(!out.status.success());
    l.write("copy2");
    let out = l.planrun(&["apply", "--yes"], None);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("the plan changed since run"), "{t}");
    assert!(t.contains("steps.copy.to"), "{t}");
    assert!(t.contains("--restart"), "{t}");
    assert_eq!(l.copied("copy2"), 0, "nothing ran");

    let out = l.planrun(&["apply", "--yes", "--restart"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(l.copied("copy2"), 40);
}

#[test]
fn resume_by_run_id_and_the_lock() {
    let l = Local::new("copy1");
    let out = l.planrun(&["apply", "--yes"], Some("object-copied:7"));
    assert!(!out.status.success());
    let runs = text(&l.planrun(&["runs", "--plan"], None));
    let id = runs
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a run is listed")
        .to_string();
    assert!(
        runs.contains("running") || runs.contains("interrupted"),
        "{runs}"
    );

    // A lock held by a live process refuses a second apply, naming the holder.
    let lock = l.state().join("lock");
    std::fs::write(
        &lock,
        format!("{{\"pid\":{},\"started\":0}}", std::process::id()),
    )
    .unwrap();
    let out = l.planrun(&["apply", "--yes"], None);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("pid {}", std::process::id())), "{t}");
    std::fs::remove_file(&lock).unwrap();

    let out = support::planrun()
        .args(["resume", &id, "--yes", "--plan"])
        .arg(&l.plan)
        .env("PLANRUN_TEST_PASSWORD", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(l.copied("copy1"), 40);
}

#[test]
fn ctrl_c_stops_records_progress_and_exits_130() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/b");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.path().join("dst")).unwrap();
    let blob = vec![7u8; 200_000];
    for i in 0..600 {
        std::fs::write(src.join(format!("o{i}")), &blob).unwrap();
    }
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "version = 1\nname = \"c\"\n[settings]\nconcurrency = 1\n\
         [buckets.src]\ntype = \"local\"\npath = \"src\"\n\
         [buckets.dst]\ntype = \"local\"\npath = \"dst\"\n\
         [steps.copy]\ntype = \"copy\"\nfrom = \"src:b\"\nto = \"dst:c\"\n",
    )
    .unwrap();
    let mut child = support::planrun()
        .args(["apply", "--yes", "--progress", "plain"])
        .arg(&plan)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "apply ended early: {seen}"
        );
        seen += &line;
        if line.contains("copy started") {
            break;
        }
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("Resume with: planrun apply"), "{rest}");
    let done_before = walk(&dir.path().join("dst/c")).len();
    assert!(done_before < 600, "the copy was not interrupted");

    let out = support::planrun()
        .args(["apply", "--yes", "--progress", "plain"])
        .arg(&plan)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("resuming run"), "{t}");
    assert_eq!(walk(&dir.path().join("dst/c")).len(), 600);
}

#[test]
fn a_missing_bucket_is_one_conflict_and_nothing_runs() {
    let l = Local::new("backup/b1");
    std::fs::remove_dir(l.dir.path().join("dst")).unwrap();
    let plan = text(&l.planrun(&["plan"], None));
    assert_eq!(
        plan.matches("does not exist: create it or fix `buckets.dst.path`")
            .count(),
        1,
        "the missing bucket should be named once:\n{plan}"
    );
    let out = l.planrun(&["apply", "--yes"], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not applying: 1 conflict(s)"),
        "{}",
        text(&out)
    );
    assert!(
        !l.dir.path().join("dst").exists(),
        "apply created the bucket"
    );
}
