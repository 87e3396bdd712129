//! Errors that name the real cause: a refused, dropped or silent connection, a bucket that cannot
//! be reached, a TLS file that cannot serve, a timeout. Each is reported once, at the step that
//! meets it, naming the place, the cause and what to check; the steps after it say why they cannot
//! be checked instead of inventing conflicts of their own. The plans are in tests/plans/errors/;
//! the servers that misbehave are threads of the test.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{self, MILVUS_A, MILVUS_B, S3, seed_small, unique};

/// A copy of `tests/plans/errors/<name>` and the files beside it in a fresh directory (so the
/// state dir and relative paths stay there), with every `@KEY@` replaced by its value.
fn plan(name: &str, vars: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans/errors");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir(dir.path().join("backups")).unwrap();
    let mut text = std::fs::read_to_string(src.join(name)).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(
        !text.contains("@"),
        "a placeholder is left in {name}:\n{text}"
    );
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// What one run of `planrun` printed, and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn planrun(args: &[&str], plan: &Path) -> Run {
    let out = support::planrun().args(args).arg(plan).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The lines of `text` that start with `!`: the conflicts of a preview.
fn conflicts(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('!'))
        .collect()
}

/// A port that was just free: nothing listens on it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server that accepts connections and closes each at once (`once`: only the first, and then
/// stops listening, like a server that goes away under its client).
fn dropping_server(once: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            // Take what the client sent first, so closing is not mistaken for a failed accept.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = conn.read(&mut [0u8; 64]);
            if once {
                break;
            }
        }
    });
    port
}

/// A server that accepts connections and never answers on them.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn.unwrap());
        }
    });
    port
}

/// A port where connecting never completes: a listener whose accept queue is full and that never
/// accepts, so the kernel drops further connection attempts unanswered. The runtime owns it.
///
/// The queue is filled until the kernel stops answering: on loopback an answered connect
/// completes within microseconds, so one that has no answer after a second found it full (how
/// many fit depends on the kernel, not on a guess here).
fn black_hole(rt: &tokio::runtime::Runtime) -> (u16, Vec<TcpStream>) {
    let _guard = rt.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut filled = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(conn) => filled.push(conn),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("filling the black hole's queue: {e}"),
        }
        assert!(filled.len() < 64, "the listener's queue never filled");
    }
    std::mem::forget(listener);
    (addr.port(), filled)
}

#[test]
fn an_unreachable_instance_is_one_conflict_and_later_steps_say_why_they_wait() {
    S3.require();
    MILVUS_B.require();
    let name = unique("errs_chain");
    let (_dir, path) = plan(
        "unreachable-chain.toml",
        &[
            ("A_URI", "http://127.0.0.1:1"),
            ("COLLECTION", "coll"),
            ("NAME", &name),
            ("INNER", "one"),
        ],
    );
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [
            "! cannot connect to instance `a` at http://127.0.0.1:1: connection refused; check \
             that Milvus is running there and that `instances.a.uri` is right"
        ],
        "{}",
        run.stdout
    );
    let waits = "? not checked: this step reads what step `backup` writes, and instance `a` is \
                 unreachable";
    assert_eq!(run.stdout.matches(waits).count(), 2, "{}", run.stdout);
    for invented in ["is empty", "no earlier step writes", "gRPC"] {
        assert!(!run.stdout.contains(invented), "{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("Plan: 3 step(s) to run, 0 already done, 1 conflict(s)."),
        "{}",
        run.stdout
    );

    // Apply refuses with the same one cause, and no hint about a setting the steps lack.
    let run = planrun(&["apply", "--yes"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains("not applying: 1 conflict(s) would stop the run half way"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("backup: cannot connect to instance `a`"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("on_conflict"), "{}", run.all());
}

#[test]
fn a_copy_of_the_directory_around_a_backup_waits_for_it_when_all_is_reachable() {
    S3.require();
    MILVUS_B.require();
    let coll = unique("errs_around");
    seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let (_dir, path) = plan(
        "unreachable-chain.toml",
        &[
            ("A_URI", &MILVUS_A.uri()),
            ("COLLECTION", &coll),
            ("NAME", &coll),
            ("INNER", "one"),
        ],
    );
    let run = planrun(&["plan"], &path);
    crate::support::data(&[
        "drop",
        "--uri",
        &MILVUS_A.uri(),
        "--token",
        "root:Milvus",
        &coll,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(conflicts(&run.stdout).is_empty(), "{}", run.stdout);
    assert!(
        run.stdout.contains("that earlier steps will write"),
        "the copy is estimated from the backup written inside its source:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("+ default.{coll}_bak from `{coll}`")),
        "the restore sees the backup the copy will bring:\n{}",
        run.stdout
    );
}

#[test]
fn an_instance_two_steps_use_is_reported_once() {
    let (_dir, path) = plan("unreachable-shared.toml", &[]);
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [
            "! cannot connect to instance `b` at http://127.0.0.1:1: connection refused; check \
             that Milvus is running there and that `instances.b.uri` is right"
        ],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("? not checked: instance `b` is unreachable (see step `restore`)"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unreachable_bucket_is_one_conflict_naming_its_endpoint() {
    MILVUS_A.require();
    MILVUS_B.require();
    S3.require();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let (_dir, path) = plan("closed-bucket.toml", &[("ENDPOINT", &endpoint)]);
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [format!(
            "! cannot reach bucket `bucket_a` (s3 bucket `bucket-a` at {endpoint}): connection \
             refused; check that the server is running and `buckets.bucket_a.endpoint` is right"
        )],
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("? not checked: bucket `bucket_a` is unreachable (see step `backup`)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "? not checked: this step reads what step `copy` writes, and bucket `bucket_a` is \
             unreachable"
        ),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout
            .contains("706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_bucket_that_never_accepts_says_how_long_it_waited() {
    MILVUS_A.require();
    MILVUS_B.require();
    S3.require();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _filled) = black_hole(&rt);
    let endpoint = format!("http://127.0.0.1:{port}");
    let (_dir, path) = plan("closed-bucket.toml", &[("ENDPOINT", &endpoint)]);
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [format!(
            "! cannot reach bucket `bucket_a` (s3 bucket `bucket-a` at {endpoint}): no \
             connection within 10s; check that the server is running and \
             `buckets.bucket_a.endpoint` is right"
        )],
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("timed out"), "{}", run.stdout);
}

/// `one-instance.toml` with the instance at `uri`, `retries` and extra instance keys.
fn one_instance(uri: &str, retries: &str, tls: &str) -> (tempfile::TempDir, PathBuf) {
    plan(
        "one-instance.toml",
        &[("URI", uri), ("RETRIES", retries), ("TLS", tls)],
    )
}

#[test]
fn a_connection_dropped_under_a_call_names_the_instance_not_the_transport() {
    let port = dropping_server(false);
    let uri = format!("http://127.0.0.1:{port}");
    let (_dir, path) = one_instance(&uri, "0", "");
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    let c = conflicts(&run.stdout);
    assert_eq!(c.len(), 1, "{}", run.stdout);
    // The server closes the connection as the call goes out; which side notices first decides
    // between the two wordings, both naming the instance, its uri and what to check.
    assert!(
        c[0].starts_with(&format!(
            "! the connection to instance `a` at {uri} broke during Connect: "
        )) && c[0].ends_with("; check that Milvus is still running there")
            || c[0].starts_with(&format!("! cannot connect to instance `a` at {uri}: ")),
        "{}",
        run.stdout
    );
    for noise in ["transport error", "gRPC", "operation was canceled"] {
        assert!(!c[0].contains(noise), "{}", run.stdout);
    }
}

#[test]
fn a_server_that_goes_away_is_refused_on_the_retry() {
    let port = dropping_server(true);
    let uri = format!("http://127.0.0.1:{port}");
    let (_dir, path) = one_instance(&uri, "1", "");
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [format!(
            "! cannot connect to instance `a` at {uri}: connection refused; check that Milvus \
             is running there and that `instances.a.uri` is right"
        )],
        "{}",
        run.stdout
    );
}

#[test]
fn a_silent_server_times_out_once_saying_after_how_long_and_what_to_raise() {
    let port = silent_server();
    let (_dir, path) = one_instance(&format!("http://127.0.0.1:{port}"), "0", "");
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [
            "! Connect on `a` did not answer within 1s; check that the instance is not \
             overloaded or stalled, or raise `instances.a.timeout`"
        ],
        "{}",
        run.stdout
    );
}

#[test]
fn a_connection_that_never_completes_says_how_long_it_waited() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, _filled) = black_hole(&rt);
    let uri = format!("http://127.0.0.1:{port}");
    let (_dir, path) = one_instance(&uri, "0", "");
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [format!(
            "! cannot connect to instance `a` at {uri}: no connection within 1s; check that \
             Milvus is running there and that `instances.a.uri` is right"
        )],
        "{}",
        run.stdout
    );
}

#[test]
fn a_garbage_tls_file_is_named_with_its_key_and_never_shown() {
    let uri = "https://127.0.0.1:19530";
    let cases = [
        (
            "client_cert = \"client.crt\"\nclient_key = \"garbage.key\"",
            "client_key",
            "garbage.key",
            "it holds no PEM private key (no `-----BEGIN PRIVATE KEY-----` line); give the \
             client certificate's key in PEM form",
        ),
        (
            "client_cert = \"garbage.crt\"\nclient_key = \"garbage.key\"",
            "client_cert",
            "garbage.crt",
            "it holds no PEM certificate (no `-----BEGIN CERTIFICATE-----` line); give the \
             certificate in PEM form",
        ),
        (
            "ca_cert = \"garbage.key\"",
            "ca_cert",
            "garbage.key",
            "it holds no PEM certificate (no `-----BEGIN CERTIFICATE-----` line); give the \
             certificate in PEM form",
        ),
        (
            "ca_cert = \"missing.crt\"",
            "ca_cert",
            "missing.crt",
            "cannot read it: No such file or directory (os error 2)",
        ),
    ];
    for (tls, key, file, why) in cases {
        let (dir, path) = one_instance(uri, "0", tls);
        let run = planrun(&["plan"], &path);
        assert_eq!(run.code, 1, "{}", run.all());
        let shown = dir.path().join(file);
        assert_eq!(
            conflicts(&run.stdout),
            [format!(
                "! cannot use the TLS file `{}` (`instances.a.{key}`): {why}",
                shown.display()
            )],
            "{}",
            run.stdout
        );
        assert!(!run.all().contains("invalid uri"), "{}", run.all());
        assert!(!run.all().contains("SECRET-KEY-MATERIAL"), "{}", run.all());
    }
}

#[test]
fn tls_against_a_plain_server_says_to_use_http() {
    MILVUS_A.require();
    let (_dir, path) = one_instance("https://127.0.0.1:19530", "0", "");
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        conflicts(&run.stdout),
        [
            "! cannot connect to instance `a` at https://127.0.0.1:19530: the server answered \
             without TLS; use `http://` in `instances.a.uri`, or enable TLS on the server"
        ],
        "{}",
        run.stdout
    );
}

#[test]
fn a_backup_whose_patterns_match_nothing_says_so_and_writes_nothing() {
    MILVUS_B.require();
    let (dir, p) = plan("no-match.toml", &[("URI", &MILVUS_B.uri())]);
    let shown = planrun(&["plan"], &p);
    assert_eq!(shown.code, 1, "{}", shown.all());
    assert_eq!(
        conflicts(&shown.stdout),
        ["! `collections` `zz_nomatch_*` match no collection on `a`; nothing to back up"],
        "{}",
        shown.all()
    );
    assert!(
        shown.stdout.contains("waits for step `backup`"),
        "{}",
        shown.all()
    );
    let run = planrun(&["apply", "--yes"], &p);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("match no collection on `a`"),
        "{}",
        run.all()
    );
    assert!(
        std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .next()
            .is_none(),
        "no backup was written"
    );
}

#[test]
fn a_bucket_without_keys_is_said_in_planruns_words_only() {
    S3.require();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-keys.toml");
    std::fs::write(
        &path,
        format!(
            "version = 1\nname = \"no-keys\"\n\
             [buckets.b]\ntype = \"s3\"\nendpoint = \"{0}\"\nbucket = \"bucket-a\"\n\
             [buckets.c]\ntype = \"s3\"\nendpoint = \"{0}\"\nbucket = \"bucket-b\"\n\
             [steps.copy]\ntype = \"copy\"\nfrom = \"b:x\"\nto = \"c:y\"\n",
            S3.uri()
        ),
    )
    .unwrap();
    let run = planrun(&["plan"], &path);
    assert_eq!(run.code, 1, "{}", run.all());
    let c = conflicts(&run.stdout);
    assert_eq!(c.len(), 2, "one conflict per bucket: {}", run.stdout);
    assert!(
        c[0].starts_with("! no usable credentials for bucket `b` (s3 bucket `bucket-a` at")
            && c[0].contains("the EC2 instance metadata service is not asked")
            && c[0].contains("set `buckets.b.access_key_id` and `buckets.b.secret_access_key`"),
        "{}",
        run.stdout
    );
    // Without -v, libraries keep their warnings (and their debug dumps) to themselves.
    assert_eq!(run.stderr.trim(), "", "{}", run.stderr);
}
