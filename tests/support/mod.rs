//! Shared test helpers: the real servers and how to demand them, the `planrun` binary, plan steps.
#![allow(dead_code)]

pub mod clients;
pub mod migrate;
pub mod scenario;
pub mod stores;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

/// The `planrun` binary, for every test that runs it: without colours, with the EC2 metadata
/// service out of reach (`AWS_EC2_METADATA_DISABLED`), and without `RUST_LOG` or any `PLANRUN_*`
/// variable the test process carries (`PLANRUN_CRASH`, `PLANRUN_PAUSE`, `PLANRUN_LOG`,
/// `PLANRUN_STATE_DIR`, ...), which would change what it does or prints. A test sets what it
/// needs (env, stdin, directory) on the returned command; `tokio::process::Command::from` and
/// `assert_cmd::Command::from_std` take it as it is.
pub fn planrun() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_planrun"));
    c.env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (key, _) in std::env::vars_os() {
        if key == "RUST_LOG" || key.to_string_lossy().starts_with("PLANRUN_") {
            c.env_remove(key);
        }
    }
    c
}

/// `planrun ARGS` (see [`planrun`]), run to its end.
pub fn run(args: &[&str]) -> Output {
    planrun().args(args).output().expect("run planrun")
}

/// What a command printed: its stdout, then its stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server the tests talk to: its name in `scripts/services.sh` and its address.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
}

pub const S3: Service = Service {
    name: "s3",
    port: 9000,
};
/// A second, separate Garage server: another S3 endpoint, with the same buckets and demo key.
pub const S3_B: Service = Service {
    name: "s3-b",
    port: 9100,
};
/// The Garage servers' demo key: read, write and owner on bucket-a and bucket-b.
pub const S3_KEY: (&str, &str) = (
    "GK706c616e72756e2d64656d6f",
    "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c",
);
/// Keys of the first Garage server that may read and write only bucket-a, only bucket-b.
pub const ONLY_A_KEY: (&str, &str) = (
    "GK6f6e6c792d612d6b65792d31",
    "6f6e6c792d612d7365637265742d6b65792d6e6f742d7265616c2d2d2d2d2d2d",
);
pub const ONLY_B_KEY: (&str, &str) = (
    "GK6f6e6c792d622d6b65792d31",
    "6f6e6c792d622d7365637265742d6b65792d6e6f742d7265616c2d2d2d2d2d2d",
);
pub const MILVUS_A: Service = Service {
    name: "milvus-a",
    port: 19530,
};
pub const MILVUS_B: Service = Service {
    name: "milvus-b",
    port: 19540,
};
/// Milvus 2.3.5 with its rate limits on and low (2 queries/s), auth on (root / Milvus).
pub const MILVUS_Q: Service = Service {
    name: "milvus-q",
    port: 19550,
};
/// Milvus Q to one test at a time: one test restarts it, another counts on its rate limits.
pub fn milvus_q_alone() -> std::sync::MutexGuard<'static, ()> {
    static Q: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Q.lock().unwrap_or_else(|e| e.into_inner())
}

pub const LITE: Service = Service {
    name: "lite",
    port: 19560,
};
/// Milvus Lite 2.5.1: no GetVersion, no databases, no partitions.
pub const LITE25: Service = Service {
    name: "lite25",
    port: 19570,
};

impl Service {
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails the calling test (never skips it) when the server is not listening.
    pub fn require(&self) -> &Self {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            panic!(
                "the `{}` test server is not listening on 127.0.0.1:{}; start it with \
                 `scripts/services.sh up {}` (or run every test with `scripts/test.sh`)",
                self.name, self.port, self.name
            );
        }
        self
    }
}

/// A name unique to this test process and call, for collections, prefixes and directories.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!("{prefix}_{}_{t}_{n}", std::process::id())
}

/// The project root, where `scripts/` and the services' `.venv` live.
pub fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The services' Python (pymilvus, boto3), installed by `scripts/services.sh up`.
pub fn python() -> std::path::PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `scripts/services.sh up` (it installs the test servers and clients)",
        py.display()
    );
    py
}

/// `scripts/milvus_data.py ARGS` (seed, dump, compare, drop, s3-list, ...) with pymilvus.
pub fn data(args: &[&str]) -> std::process::Output {
    std::process::Command::new(python())
        .arg(root().join("scripts/milvus_data.py"))
        .args(args)
        .output()
        .expect("run scripts/milvus_data.py")
}

/// Stdout of a command that must succeed; otherwise fails the test showing both streams.
pub fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The instances and buckets of the test servers, for plans written inline by tests: Milvus A
/// (auth on, data in `bucket_a:files`), Milvus B (`bucket_b:files`), Milvus Lite, and both buckets.
pub const PLAN_HEAD: &str = r#"
version = 1
name = "preview-apply"

[instances.milvus_a]
type = "milvus"
uri = "http://127.0.0.1:19530"
user = "root"
password = "Milvus"
data = "bucket_a:files"

[instances.milvus_b]
type = "milvus"
uri = "http://127.0.0.1:19540"
data = "bucket_b:files"

[instances.lite]
type = "milvus"
uri = "http://127.0.0.1:19560"
data = "bucket_b:lite"

[buckets.bucket_a]
type = "s3"
endpoint = "http://127.0.0.1:9000"
bucket = "bucket-a"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"

[buckets.bucket_b]
type = "s3"
endpoint = "http://127.0.0.1:9000"
bucket = "bucket-b"
region = "us-east-1"
access_key_id = "GK706c616e72756e2d64656d6f"
secret_access_key = "706c616e72756e2d64656d6f2d7365637265742d6b65792d6e6f742d7265616c"
"#;

/// Seeds a small collection on `server` (200 rows, one partition, one segment, no deletes; `extra`
/// adds or overrides `milvus_data.py seed` options). Fails the test saying how to start the
/// server when it is not up.
pub fn seed_small(server: &Service, token: &str, coll: &str, extra: &[&str]) {
    server.require();
    let uri = server.uri();
    let mut args = vec![
        "seed",
        "--uri",
        &uri,
        "--token",
        token,
        "--collection",
        coll,
        "--rows",
        "200",
        "--partitions",
        "1",
        "--segments",
        "1",
        "--delete-every",
        "0",
    ];
    args.extend_from_slice(extra);
    ok(data(&args));
}

/// Removes what a migration of `coll` left on Milvus B and in bucket-b: the copy `<coll>_bak`
/// and the backup at `backup/<bk>/`.
pub fn forget_copy(coll: &str, bk: &str) {
    data(&[
        "drop",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        &format!("{coll}_bak"),
    ]);
    data(&[
        "s3-clean",
        "--bucket",
        "bucket-b",
        "--prefix",
        &format!("backup/{bk}/"),
    ]);
}

/// Whether `coll` exists on `server`.
pub fn exists_on(server: &Service, token: &str, coll: &str) -> bool {
    let names = ok(data(&[
        "dump-names",
        "--uri",
        &server.uri(),
        "--token",
        token,
    ]));
    names
        .lines()
        .any(|l| l.split_whitespace().next() == Some(coll))
}

/// A `milvus_data.py` command fed `input` on stdin (`s3-put`).
pub fn data_with_input(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .arg(root().join("scripts/milvus_data.py"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The seed's steps for one collection: a binlog backup of `coll` on Milvus A into
/// `bucket_b:backup/<bk>`, restored on Milvus B as `<coll>_bak` (append to [`PLAN_HEAD`]).
pub fn backup_and_restore(coll: &str, bk: &str) -> String {
    BackupRestore::of(&[coll], bk).to_string()
}

/// The steps `backup` and `restore` of a plan (append them to its instances and buckets):
/// `collections` backed up on `source` at `location`, restored from there on `target`. By
/// default those of [`backup_and_restore`]: a binlog backup on `milvus_a` at
/// `bucket_b:backup/<bk>`, restored on `milvus_b` with the suffix `_bak`.
pub struct BackupRestore {
    collections: Vec<String>,
    source: String,
    location: String,
    rows: bool,
    target: String,
    suffix: Option<String>,
    restore_extra: String,
}

impl BackupRestore {
    pub fn of(collections: &[impl AsRef<str>], bk: &str) -> BackupRestore {
        BackupRestore {
            collections: collections.iter().map(|c| c.as_ref().to_string()).collect(),
            source: "milvus_a".into(),
            location: format!("bucket_b:backup/{bk}"),
            rows: false,
            target: "milvus_b".into(),
            suffix: Some("_bak".into()),
            restore_extra: String::new(),
        }
    }

    /// The instance the backup reads.
    pub fn source(mut self, instance: &str) -> Self {
        self.source = instance.into();
        self
    }

    /// The instance the restore writes.
    pub fn target(mut self, instance: &str) -> Self {
        self.target = instance.into();
        self
    }

    /// Where the backup is, `bucket:path` (instead of `bucket_b:backup/<bk>`).
    pub fn at(mut self, location: &str) -> Self {
        self.location = location.into();
        self
    }

    /// A backup in rows mode (`mode = "rows"`).
    pub fn rows(mut self) -> Self {
        self.rows = true;
        self
    }

    /// The restore's suffix; `None` leaves it out (the copies keep their sources' names).
    pub fn suffix(mut self, suffix: Option<&str>) -> Self {
        self.suffix = suffix.map(String::from);
        self
    }

    /// TOML lines added to the restore step (`load = true`, `database = "x"`, ...).
    pub fn restore_with(mut self, lines: &str) -> Self {
        self.restore_extra = lines.into();
        self
    }
}

impl std::fmt::Display for BackupRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = self
            .collections
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (source, location, target) = (&self.source, &self.location, &self.target);
        write!(
            f,
            "\n[steps.backup]\ntype = \"backup\"\ninstance = \"{source}\"\n\
             collections = [{list}]\nto = \"{location}\"\n"
        )?;
        if self.rows {
            writeln!(f, "mode = \"rows\"")?;
        }
        write!(
            f,
            "\n[steps.restore]\ntype = \"restore\"\ninstance = \"{target}\"\n\
             from = \"{location}\"\n"
        )?;
        if let Some(suffix) = &self.suffix {
            writeln!(f, "suffix = {suffix:?}")?;
        }
        if !self.restore_extra.is_empty() {
            writeln!(f, "{}", self.restore_extra.trim_end())?;
        }
        Ok(())
    }
}
