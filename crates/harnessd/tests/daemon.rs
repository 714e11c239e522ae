//! The daemon as a client sees it: real `harnessd` processes, each in its
//! own temporary state directory.

mod support;

use std::io::{Read, Write};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use harness_protocol::{
    Client, ClientError, ErrorCode, Method, Outcome, ServerMessage, ServicesParams, StateDir,
    UpParams,
};
use support::*;

fn connect(d: &TestDaemon) -> Client {
    smol::block_on(Client::connect(&d.state)).expect("client connects")
}

fn error_code(m: Option<ServerMessage>) -> (u64, ErrorCode) {
    match m {
        Some(ServerMessage::Response(r)) => match r.outcome {
            Outcome::Error(e) => (r.id, e.code),
            other => panic!("expected an error, got {other:?}"),
        },
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn handshake_and_daemon_status() {
    let d = TestDaemon::start();
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        assert_eq!(c.welcome().pid, d.pid());
        assert_eq!(c.welcome().protocol, harness_protocol::PROTOCOL_VERSION);
        let info = c.daemon_status().await.unwrap();
        assert_eq!(info.pid, d.pid());
        assert_eq!(info.address, d.address().to_string());
        assert_eq!(info.state_dir, d.state);
        assert!(info.connections >= 1);
        c.ping().await.unwrap();
        assert!(
            c.status(ServicesParams::default())
                .await
                .unwrap()
                .is_empty()
        );
    });
    // Certificates and keys are in the state dir, keys private.
    let certs = d.certs();
    for key in [&certs.ca_key, &certs.server_key, &certs.client_key] {
        assert_eq!(file_mode(key), 0o600, "{}", key.display());
    }
    assert!(d.state.join("harnessd.log").exists());
}

#[test]
fn client_works_under_tokio() {
    let d = TestDaemon::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let project = write_project(d.dir.path(), "tokio", 1, true);
    let mut guard = Pids(Vec::new());
    rt.block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let info = c.daemon_status().await.unwrap();
        assert_eq!(info.pid, d.pid());
        let st = c
            .up(UpParams {
                project,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        let mut events = c.events(ServicesParams::default()).unwrap();
        events.cancel().unwrap();
        match events.next().await {
            Some(Err(e)) => assert_eq!(e.remote().map(|e| e.code), Some(ErrorCode::Cancelled)),
            other => panic!("expected cancelled, got {other:?}"),
        }
        c.down(ServicesParams::default()).await.unwrap();
    });
}

#[test]
fn version_mismatch_is_rejected() {
    let d = TestDaemon::start();
    smol::block_on(async {
        let tls = harness_protocol::tls::client_config(&d.certs()).unwrap();
        let mut ws = raw_ws(d.address(), tls).await.unwrap();
        ws.send(Message::text(
            r#"{"type":"hello","protocol":999,"client":"future"}"#,
        ))
        .await
        .unwrap();
        match next_message(&mut ws).await {
            Some(ServerMessage::Rejected { error }) => {
                assert_eq!(error.code, ErrorCode::VersionMismatch);
                assert!(error.message.contains("999"), "{}", error.message);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(
            next_message(&mut ws).await.is_none(),
            "connection must close"
        );

        // A request before hello is refused too.
        let tls = harness_protocol::tls::client_config(&d.certs()).unwrap();
        let mut ws = raw_ws(d.address(), tls).await.unwrap();
        ws.send(Message::text(
            r#"{"type":"request","id":1,"method":"ping"}"#,
        ))
        .await
        .unwrap();
        assert!(matches!(
            next_message(&mut ws).await,
            Some(ServerMessage::Rejected { .. })
        ));
    });
}

/// Connects with a TLS config that lacks a valid client certificate and
/// checks that no WebSocket/protocol exchange succeeds.
fn assert_refused(d: &TestDaemon, tls: std::sync::Arc<rustls::ClientConfig>) {
    smol::block_on(async {
        match raw_ws(d.address(), tls).await {
            Err(_) => {}
            Ok(mut ws) => {
                // TLS 1.3 finishes the client side before the server checks
                // the certificate: then the first read must fail.
                let _ = ws
                    .send(Message::text(harness_protocol::encode(
                        &harness_protocol::codec::hello("intruder"),
                    )))
                    .await;
                assert!(next_message(&mut ws).await.is_none(), "got a message");
            }
        }
    });
}

/// Sends raw bytes over plain TCP and returns what came back before the
/// daemon closed the connection.
fn plain_tcp_exchange(d: &TestDaemon, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(d.address()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    // Read to EOF (or a reset): the daemon must close, not wait.
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn mtls_rejects_clients_without_a_valid_certificate() {
    let d = TestDaemon::start();
    let certs = d.certs();
    let provider = harness_protocol::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in harness_protocol::tls::load_certs(&certs.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }

    // 1. No client certificate.
    let no_cert = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    assert_refused(&d, std::sync::Arc::new(no_cert));

    // 2. A client certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let foreign = CertPathsExt::foreign(other.path());
    let wrong_ca = harness_protocol::tls::client_config_from(
        &certs.ca_cert,
        &foreign.client_cert,
        &foreign.client_key,
    )
    .unwrap();
    assert_refused(&d, wrong_ca);

    // 3. Plain TCP bytes, 4. plain HTTP, 5. plain WebSocket without TLS.
    for bytes in [
        &b"hello daemon\n"[..],
        &b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &b"{\"type\":\"hello\",\"protocol\":1,\"client\":\"x\"}\n"[..],
    ] {
        let got = plain_tcp_exchange(&d, bytes);
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("HTTP/"), "plain text answer: {text}");
        assert!(!text.contains("welcome"), "protocol answer: {text}");
    }
    let plain_ws = smol::block_on(async {
        let tcp = async_net::TcpStream::connect(d.address()).await.unwrap();
        futures_lite::future::or(
            async {
                async_tungstenite::client_async(
                    format!("ws://localhost:{}/v1", d.address().port()),
                    tcp,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            },
            async {
                async_io::Timer::after(DEADLINE).await;
                panic!("plain WebSocket handshake neither failed nor succeeded");
            },
        )
        .await
    });
    assert!(plain_ws.is_err(), "plain WebSocket must be refused");

    // The daemon is unharmed.
    let c = connect(&d);
    smol::block_on(c.ping()).unwrap();
}

/// Makes a certificate set of another CA (same file names) under `dir`.
struct CertPathsExt;
impl CertPathsExt {
    fn foreign(dir: &std::path::Path) -> harness_protocol::CertPaths {
        let paths = harness_protocol::CertPaths::in_dir(dir);
        let certs = harness_protocol::tls::generate_certificates("someone else's CA").unwrap();
        harness_protocol::tls::write_certificates(&paths, &certs).unwrap();
        paths
    }
}

#[test]
fn malformed_messages_and_unknown_methods_get_errors() {
    let d = TestDaemon::start();
    smol::block_on(async {
        let mut ws = handshaken(&d).await;
        ws.send(Message::text("{nope")).await.unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (0, ErrorCode::BadRequest)
        );

        ws.send(Message::text(r#"{"type":"request","id":5,"method":"fly"}"#))
            .await
            .unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (5, ErrorCode::UnknownMethod)
        );

        ws.send(Message::text(
            r#"{"type":"request","id":6,"method":"logs","params":{"tail":"many"}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (6, ErrorCode::BadRequest)
        );

        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (0, ErrorCode::BadRequest)
        );

        ws.send(Message::text("\"just a string\"")).await.unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (0, ErrorCode::BadRequest)
        );

        ws.send(Message::text(
            r#"{"type":"request","id":7,"method":"status","params":{"project":{"name":"nope"}}}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            error_code(next_message(&mut ws).await),
            (7, ErrorCode::NotFound)
        );

        // The same connection still works.
        ws.send(Message::text(
            r#"{"type":"request","id":8,"method":"ping"}"#,
        ))
        .await
        .unwrap();
        match next_message(&mut ws).await {
            Some(ServerMessage::Response(r)) => {
                assert_eq!(r.id, 8);
                assert_eq!(r.outcome, Outcome::Result(serde_json::Value::Null));
            }
            other => panic!("expected pong, got {other:?}"),
        }
    });
}

#[test]
fn oversized_frames_are_refused_and_the_daemon_lives_on() {
    let d = TestDaemon::start_with(&["--metrics", "127.0.0.1:0"]);
    smol::block_on(async {
        let mut ws = handshaken(&d).await;
        let huge = format!(
            r#"{{"type":"request","id":1,"method":"ping","pad":"{}"}}"#,
            "x".repeat(harness_protocol::MAX_FRAME_BYTES + 1)
        );
        // Our own side enforces the limit too; send it as raw frames the
        // peer must refuse: the write may fail locally or be refused remotely.
        let sent = ws.send(Message::text(huge)).await;
        if sent.is_ok() {
            match next_message(&mut ws).await {
                None => {}
                Some(m) => assert_eq!(error_code(Some(m)).1, ErrorCode::FrameTooLarge),
            }
            assert!(
                next_message(&mut ws).await.is_none(),
                "connection must close"
            );
        }
        let c = Client::connect(&d.state).await.unwrap();
        c.ping().await.unwrap();
        // The daemon itself refused the message.
        let addr = c.daemon_status().await.unwrap().metrics_address.unwrap();
        let body = http_get(&addr, "/metrics");
        assert!(body.contains("harnessd_oversized_frames_total 1"), "{body}");
    });
    let mut d = d;
    assert!(d.alive());
}

#[test]
fn hundred_concurrent_clients() {
    let d = TestDaemon::start();
    let state = d.state.clone();
    let results: Vec<Result<u32, ClientError>> = smol::block_on(async {
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let state = state.clone();
                smol::spawn(async move {
                    let c = Client::connect(&state).await?;
                    c.ping().await?;
                    let info = c.daemon_status().await?;
                    Ok(info.pid)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    for r in results {
        assert_eq!(r.unwrap(), d.pid());
    }
}

#[test]
fn many_requests_multiplex_over_one_connection_and_streams_cancel() {
    let d = TestDaemon::start();
    let project = write_project(d.dir.path(), "mux", 1, true);
    let mut guard = Pids(Vec::new());
    smol::block_on(async {
        let c = Client::connect(&d.state).await.unwrap();
        let st = c
            .up(UpParams {
                project,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        let mut events = c.events(ServicesParams::default()).unwrap();
        // While the stream is open, other requests on the same connection are answered.
        let pings: Vec<_> = (0..200).map(|_| c.ping()).collect();
        for p in pings {
            p.await.unwrap();
        }
        let id = events.id();
        c.cancel(id).await.unwrap();
        match events.next().await {
            Some(Err(e)) => assert_eq!(e.remote().map(|e| e.code), Some(ErrorCode::Cancelled)),
            other => panic!("expected cancelled, got {other:?}"),
        }
        assert!(events.next().await.is_none());
        // Cancelling what is not in flight is not_found.
        let e = c.cancel(id).await.unwrap_err();
        assert_eq!(e.remote().map(|e| e.code), Some(ErrorCode::NotFound));
        // A dropped stream is cancelled for us; the connection stays usable.
        drop(c.events(ServicesParams::default()).unwrap());
        c.call(Method::Ping).await.unwrap();
        c.down(ServicesParams::default()).await.unwrap();
    });
}

#[test]
fn daemon_stop_exits_and_leaves_no_address() {
    let mut d = TestDaemon::start();
    let c = connect(&d);
    smol::block_on(c.daemon_stop()).unwrap();
    assert!(d.wait_exit().success());
    assert!(!StateDir::new(&d.state).address_file().exists());
    // A new daemon takes over the same state dir with the same certificates.
    let ca = std::fs::read(&d.certs().ca_cert).unwrap();
    d.spawn(&[]);
    assert_eq!(std::fs::read(&d.certs().ca_cert).unwrap(), ca);
    smol::block_on(connect(&d).ping()).unwrap();
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut d = TestDaemon::start();
    let c = connect(&d);
    d.signal(rustix::process::Signal::TERM);
    assert!(d.wait_exit().success());
    // The open connection learns it is closed.
    let r = smol::block_on(c.ping());
    assert!(r.is_err());
}

#[test]
fn one_daemon_per_state_dir() {
    let d = TestDaemon::start();
    let out = d.command(&[]).output().expect("run a second harnessd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs"), "{err}");
    assert!(err.contains(&d.pid().to_string()), "{err}");
    // The first one is unharmed.
    smol::block_on(connect(&d).ping()).unwrap();
}

#[test]
fn metrics_are_served_when_asked_for() {
    let d = TestDaemon::start_with(&["--metrics", "127.0.0.1:0"]);
    let c = connect(&d);
    smol::block_on(c.ping()).unwrap();
    let info = smol::block_on(c.daemon_status()).unwrap();
    let addr = info.metrics_address.expect("metrics address");
    let body = http_get(&addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("harnessd_requests_total"), "{body}");
    assert!(body.contains("method=\"ping\""), "{body}");
    assert!(body.contains("harnessd_open_connections"), "{body}");
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));
}

#[test]
fn random_garbage_never_kills_the_daemon() {
    let mut d = TestDaemon::start();
    smol::block_on(async {
        let mut ws = handshaken(&d).await;
        // A small deterministic generator: printable noise, JSON-ish fragments
        // and near-miss requests.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let fragments = [
            "{",
            "}",
            "[",
            "]",
            "\"type\"",
            ":",
            "\"request\"",
            ",",
            "\"id\"",
            "1",
            "-1",
            "1e400",
            "\"method\"",
            "\"logs\"",
            "\"params\"",
            "null",
            "{\"project\":",
            "\"\\u0000\"",
            "18446744073709551616",
            "\"cancel\"",
            "true",
        ];
        for _ in 0..300 {
            let n = (next() % 24) as usize;
            let text: String = (0..n)
                .map(|_| fragments[(next() % fragments.len() as u64) as usize])
                .collect();
            ws.send(Message::text(text)).await.unwrap();
            match next_message(&mut ws).await {
                Some(ServerMessage::Response(r)) => {
                    assert!(matches!(r.outcome, Outcome::Error(_) | Outcome::Result(_)));
                }
                other => panic!("expected an answer, got {other:?}"),
            }
        }
    });
    assert!(d.alive());
    smol::block_on(connect(&d).ping()).unwrap();
}

#[test]
fn env_and_status_over_a_client_on_the_callers_executor() {
    let d = TestDaemon::start();
    let file = d.dir.path().join("env.yaml");
    std::fs::write(
        &file,
        "name: envp\nservices:\n  web:\n    type: process\n    binary: sleep\n    args: ['600']\n    env:\n      GREETING: hello\n      SELF: \"${web.host}\"\n      FROM_CLIENT: ${CLIENT_VAR}\n",
    )
    .unwrap();
    let mut guard = Pids(Vec::new());
    smol::block_on(async {
        let spawner: harness_core::SharedSpawner =
            std::sync::Arc::new(|t: harness_core::BoxTask| smol::spawn(t).detach());
        let c = Client::connect_with(
            &d.state,
            harness_protocol::ClientOptions {
                spawner: Some(spawner),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let project = harness_protocol::ProjectRef {
            files: vec![file.clone()],
            env: [("CLIENT_VAR".to_owned(), "from the CLI".to_owned())].into(),
            ..Default::default()
        };
        let st = c
            .up(UpParams {
                project,
                wait: true,
                timeout_ms: Some(30_000),
                ..UpParams::default()
            })
            .await
            .unwrap();
        guard.0.extend(st.services.iter().filter_map(|s| s.pid));
        assert_eq!(st.project.as_str(), "envp");
        let web = harness_core::ServiceName::new("web").unwrap();
        let env = c
            .env(harness_protocol::EnvParams {
                project: harness_protocol::ProjectRef::named(st.project.clone()),
                service: web.clone(),
            })
            .await
            .unwrap();
        assert_eq!(env.env["GREETING"], "hello");
        assert_eq!(env.env["SELF"], "localhost");
        assert_eq!(env.env["FROM_CLIENT"], "from the CLI");
        let e = c
            .env(harness_protocol::EnvParams {
                project: harness_protocol::ProjectRef::named(st.project.clone()),
                service: harness_core::ServiceName::new("nope").unwrap(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.remote().map(|e| e.code), Some(ErrorCode::NotFound));
        let info = c.daemon_status().await.unwrap();
        assert_eq!(info.projects, vec![st.project.clone()]);
        let down = c.down(ServicesParams::default()).await.unwrap();
        assert!(down.services.iter().all(|s| !s.state.is_alive()));
    });
}
