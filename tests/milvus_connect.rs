//! Connecting to Milvus and what goes wrong there: auth, wrong ports and passwords, missing
//! collections and databases, the database header, TLS settings, GC control, and a server that
//! comes late or goes away.

use std::time::Duration;

use planrun::milvus::pb::common::ConsistencyLevel;
use planrun::milvus::{MilvusClient, MilvusConfig, MilvusError, pause_gc, resume_gc};
use planrun::secret::Secret;

use crate::support::clients::{client_a, config_a, small_schema};
use crate::support::{MILVUS_A, MILVUS_B, unique};

#[tokio::test]
async fn milvus_b_without_auth() {
    let cfg = MilvusConfig::new("milvus_b", MILVUS_B.require().uri());
    let c = MilvusClient::connect(&cfg).await.unwrap();
    assert!(c.server_version().contains("2.3.5"));
    c.check_health().await.unwrap();
    c.show_collections().await.unwrap();
}

#[tokio::test]
async fn error_wrong_port_names_instance_and_cause() {
    let mut cfg = MilvusConfig::new("milvus_a", "http://127.0.0.1:1");
    cfg.retries = 1;
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot connect to instance `milvus_a` at http://127.0.0.1:1: connection refused; check \
         that Milvus is running there and that `instances.milvus_a.uri` is right"
    );
    assert!(e.is_transient());
}

#[tokio::test]
async fn error_wrong_password_never_shows_it() {
    let mut cfg = config_a();
    cfg.password = Some(Secret::new("not-the-password-42"));
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "`milvus_a` rejected the credentials of user `root`: check `instances.milvus_a.password`"
    );
    assert!(!e.is_transient());
    let all = format!("{e} {e:?} {cfg:?}");
    assert!(!all.contains("not-the-password-42"), "{all}");

    let mut none = config_a();
    none.user = None;
    none.password = None;
    let e = MilvusClient::connect(&none).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "`milvus_a` rejected a request without credentials: set `instances.milvus_a.user`"
        ),
        "{e}"
    );

    let mut tok = config_a();
    tok.user = None;
    tok.password = None;
    tok.token = Some(Secret::new("root:Milvus"));
    let c = MilvusClient::connect(&tok)
        .await
        .expect("a user:password token works");
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("Milvus\"") && !dbg.contains("cm9vdDpNaWx2dXM"),
        "{dbg}"
    );
}

#[tokio::test]
async fn error_missing_collection_and_database() {
    let c = client_a().await;
    let missing = unique("pr_missing");
    let e = c.describe_collection(&missing).await.unwrap_err();
    assert!(matches!(e, MilvusError::CollectionNotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("collection `{missing}` does not exist on `milvus_a`: check the name")
    );
    let e = c.show_partitions(&missing).await.unwrap_err();
    assert!(e.to_string().contains(&format!("`{missing}`")), "{e}");

    let e = c
        .with_database("pr_no_such_db")
        .show_collections()
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "database `pr_no_such_db` does not exist on `milvus_a`: check the name or create it first"
    );
    // Connect already checks the configured database.
    let mut cfg = config_a();
    cfg.database = Some("pr_no_such_db".into());
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert!(matches!(e, MilvusError::DatabaseNotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn milvus_a_database_header() {
    let c = client_a().await;
    let db = unique("pr_db");
    c.create_database(&db).await.unwrap();
    assert!(c.list_databases().await.unwrap().contains(&db));
    let in_db = c.with_database(&db);
    assert_eq!(in_db.database(), db);
    let name = unique("pr_in_db");
    in_db
        .create_collection(&name, &small_schema(), 1, ConsistencyLevel::Strong, &[])
        .await
        .unwrap();
    assert_eq!(in_db.show_collections().await.unwrap(), vec![name.clone()]);
    assert!(!c.has_collection(&name).await.unwrap());
    // A database given in the config reaches Connect too.
    let mut cfg = config_a();
    cfg.database = Some(db.clone());
    let direct = MilvusClient::connect(&cfg).await.unwrap();
    assert!(direct.has_collection(&name).await.unwrap());
    in_db.drop_collection(&name).await.unwrap();
    c.drop_database(&db).await.unwrap();
    assert!(!c.list_databases().await.unwrap().contains(&db));
}

#[tokio::test]
async fn tls_settings_fail_before_connecting() {
    let mut cfg = MilvusConfig::new("secure", "https://127.0.0.1:19530");
    cfg.ca_cert = Some("/nonexistent/ca.pem".into());
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "cannot use the TLS file `/nonexistent/ca.pem` (`instances.secure.ca_cert`): \
                 cannot read it:"
        ),
        "{e}"
    );
    let mut cfg = MilvusConfig::new("secure", "https://127.0.0.1:19530");
    cfg.client_cert = Some("/nonexistent/client.pem".into());
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("needs both `client_cert` and `client_key`"),
        "{e}"
    );
    let cfg = MilvusConfig::new("secure", "grpc://127.0.0.1:19530");
    let e = MilvusClient::connect(&cfg).await.unwrap_err();
    assert!(e.to_string().contains("must be http:// or https://"), "{e}");
}

#[tokio::test]
async fn gc_pause_is_unsupported_on_2_3_5() {
    MILVUS_A.require();
    let e = pause_gc("http://127.0.0.1:9091", 60).await.unwrap_err();
    assert!(
        matches!(e, MilvusError::GcUnsupported { status: 404, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cannot pause GC"), "{e}");
    assert!(matches!(
        resume_gc("http://127.0.0.1:9091").await.unwrap_err(),
        MilvusError::GcUnsupported { .. }
    ));
    let e = pause_gc("http://127.0.0.1:1", 60).await.unwrap_err();
    assert!(e.to_string().contains("cannot reach it"), "{e}");
}

/// A TCP relay to Milvus B that refuses connections until `delay` has passed and then relays,
/// until told to stop. Its port is bound (not listening, so connecting is refused) from the
/// start: nobody else can take it in between. `stop` answers once the relay is gone.
async fn late_relay(
    delay: Duration,
) -> (
    String,
    tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop_tx, mut stop_rx) =
        tokio::sync::oneshot::channel::<tokio::sync::oneshot::Sender<()>>();
    tokio::spawn(async move {
        // The client's first attempts are refused: the delay is the stimulus, not a wait.
        tokio::time::sleep(delay).await;
        let listener = socket.listen(128).unwrap();
        let mut conns = Vec::new();
        let done = loop {
            tokio::select! {
                done = &mut stop_rx => break done.ok(),
                Ok((mut inbound, _)) = listener.accept() => {
                    conns.push(tokio::spawn(async move {
                        let mut outbound =
                            tokio::net::TcpStream::connect(("127.0.0.1", MILVUS_B.port)).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }));
                }
            }
        };
        // Dropping the listener and aborting the relays looks like the server going away.
        drop(listener);
        for c in conns {
            c.abort();
            let _ = c.await;
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    });
    (format!("http://{addr}"), stop_tx)
}

#[tokio::test]
async fn connect_retries_until_the_server_listens_and_reports_it_gone() {
    MILVUS_B.require();
    let (uri, stop) = late_relay(Duration::from_millis(500)).await;
    let mut cfg = MilvusConfig::new("milvus_b", uri.clone());
    cfg.retries = 4;
    // Gone for good here: no wait for it to come back (the default waits for a restart).
    cfg.outage = Duration::ZERO;
    let c = MilvusClient::connect(&cfg)
        .await
        .expect("refused connections are retried with backoff");
    c.show_collections().await.unwrap();

    let (gone_tx, gone) = tokio::sync::oneshot::channel();
    stop.send(gone_tx).unwrap();
    gone.await.expect("the relay stops");
    let e = c.show_collections().await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            == format!(
                "cannot connect to instance `milvus_b` at {uri}: connection refused; check that \
                 Milvus is running there and that `instances.milvus_b.uri` is right"
            ),
        "{e}"
    );
}
