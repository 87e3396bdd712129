//! A link to Milvus that stalls while planrun polls an import. Milvus 2.3.5's proxy dies of a
//! cancelled GetImportState, so planrun must wait through the stall without cancelling its poll
//! (no short deadline, no second poll, no keepalive closing the connection), say that it is
//! waiting, and finish the restore once the link is back, with Milvus still up.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use planrun::milvus::pb::common::ImportState;
use planrun::milvus::{MilvusClient, MilvusConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{self, MILVUS_A, MILVUS_B, S3, data};

/// How long the link stays stalled: the stimulus itself, not a wait for anything. Longer than the
/// per-call deadline polls used to have (30 s, after which the poll was cancelled) and than
/// hyper's default keepalive limit (a ping after 30 s of silence, 20 s for its answer, after
/// which the connection was closed). Under a minute so that the server's own keepalive, which
/// planrun does not control, stays out of the picture.
const STALL: Duration = Duration::from_secs(55);

/// A TCP proxy in front of one upstream port whose forwarding can be paused: while paused it
/// delivers nothing in either direction but keeps every socket open, which is what a stalled
/// link looks like to both ends (TCP itself stays happy, so only timers notice).
struct StallProxy {
    port: u16,
    paused: watch::Sender<bool>,
    /// Connections accepted so far: a reconnect during the stall shows here.
    accepted: Arc<AtomicUsize>,
    /// Bytes the client has sent so far (all connections).
    sent: Arc<AtomicUsize>,
}

impl StallProxy {
    async fn start(upstream: u16) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (paused, rx) = watch::channel(false);
        let accepted = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let up = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_r, client_w) = client.into_split();
                let (server_r, server_w) = server.into_split();
                tokio::spawn(pipe(client_r, server_w, rx.clone(), Some(up.clone())));
                tokio::spawn(pipe(server_r, client_w, rx.clone(), None));
            }
        });
        StallProxy {
            port,
            paused,
            accepted,
            sent,
        }
    }

    fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Copies one direction. The pause is checked after each read, so bytes that arrive during a
/// stall are held (in hand or in the kernel's buffers) until it ends; an end of stream is
/// passed on only then too. `counted` adds up the bytes read.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    counted: Option<Arc<AtomicUsize>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if let Some(c) = &counted {
            c.fetch_add(n, Ordering::SeqCst);
        }
        if paused.wait_for(|p| !*p).await.is_err() || n == 0 {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn plan(dir: &Path, proxy_port: u16, coll: &str, bk: &str) -> String {
    let direct = format!("uri = \"{}\"", MILVUS_B.uri());
    let head =
        support::PLAN_HEAD.replace(&direct, &format!("uri = \"http://127.0.0.1:{proxy_port}\""));
    assert_ne!(
        head,
        support::PLAN_HEAD,
        "PLAN_HEAD names Milvus B by `{direct}`"
    );
    let text = format!(
        "{head}\n[settings]\nstate_dir = \"{}\"\n{}",
        dir.join("state").display(),
        support::backup_and_restore(coll, bk)
    );
    let path = dir.join("stall.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_stalled_while_an_import_is_polled_is_waited_through_without_cancelling() {
    for s in [&S3, &MILVUS_A, &MILVUS_B] {
        s.require();
    }
    let coll = support::unique("stall");
    let target = format!("{coll}_bak");
    let bk = support::unique("bk");
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let proxy = StallProxy::start(MILVUS_B.port).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), proxy.port, &coll, &bk);

    let started = Instant::now();
    let child = tokio::process::Command::from(support::planrun())
        .args(["apply", "--yes", "--progress", "plain", &plan])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let run = tokio::spawn(child.wait_with_output());

    // B itself, not through the proxy: the import task appears there when planrun starts it,
    // and planrun polls it from then on.
    let b = MilvusClient::connect(&MilvusConfig::new("milvus_b", MILVUS_B.uri()))
        .await
        .unwrap();
    let quiet = |_: String| {};
    let task = loop {
        assert!(
            !run.is_finished(),
            "planrun ended before it started an import"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no import into `{target}` on Milvus B within 300 s"
        );
        if let Ok(tasks) = b.list_import_tasks(&target, 0).await
            && let Some(t) = tasks.into_iter().next()
        {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // B made the task, so the Import request was all sent by now.
    let sent = proxy.sent();
    // The stall must catch the polls, not Import's answer: wait until planrun speaks again
    // (the answer's flow-control update or a poll), which it does only once that answer has
    // reached it.
    while proxy.sent() == sent {
        assert!(
            !run.is_finished() && started.elapsed() < Duration::from_secs(300),
            "planrun sent nothing after Milvus B made import task {}",
            task.id
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = b.get_import_state(task.id, &quiet).await.unwrap();
    let connections = proxy.accepted();
    proxy.pause(true);
    let import_seen = started.elapsed();
    assert_ne!(
        before.state,
        ImportState::ImportCompleted,
        "the import finished before the link stalled, so no poll was stalled"
    );
    tokio::time::sleep(STALL).await;
    proxy.pause(false);
    let out = run.await.unwrap().unwrap();
    let total = started.elapsed();
    let reconnected = proxy.accepted() - connections;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "import seen {import_seen:.1?} after start, link stalled {STALL:?}, run took \
         {total:.1?}:\n{text}"
    );
    // After the run, before the checks, so that a failed check leaves nothing behind; B must
    // still be up to answer these.
    let healthy = b.check_health().await;
    let after = b.get_import_state(task.id, &quiet).await;
    data(&["drop", &coll]);
    support::forget_copy(&coll, &bk);

    assert!(out.status.success(), "the run fails: {text}");
    assert!(text.contains("200 rows imported"), "{text}");
    assert!(
        text.contains(&format!("restore: warning: import task {}", task.id))
            && text.contains("no answer from `milvus_b` to GetImportState for 30 s; still waiting"),
        "the stall is reported as a warning: {text}"
    );
    assert_eq!(
        reconnected, 0,
        "the connection lived through the stall (no keepalive close, no reconnect): {text}"
    );
    healthy.expect("Milvus B is healthy after the stall");
    let after = after.expect("Milvus B answers GetImportState after the stall");
    assert_eq!(after.state, ImportState::ImportCompleted);
    assert_eq!(after.row_count, 200);
}
