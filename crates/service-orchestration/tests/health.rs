//! Health checks against real servers: HTTPS with a configured CA, without
//! one, and with verification skipped; HTTP status expectations; TCP; exec timeouts;
//! the start interval of a probe until it first passes in each run.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use harness_config::{Check, ServiceSpec};
use harness_core::ServiceKind;
use service_orchestration::health::{CheckEnv, TlsClient, check_once};
use service_orchestration::{ProbeTls, ProcessExecutor, ServiceExecutor, StartContext};

const LIMIT: Duration = Duration::from_secs(10);

/// A tiny HTTPS server on a free loopback port answering every request with
/// `status`; returns its port. It runs until the test process ends.
fn https_server(cert_der: Vec<u8>, key_der: Vec<u8>, status: &'static str) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(cert_der)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = async_net::TcpListener::try_from(listener).unwrap();
    smol::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            smol::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.close().await;
            })
            .detach();
        }
    })
    .detach();
    port
}

/// A real running instance (exec checks run beside it).
async fn instance(dir: &std::path::Path) -> Arc<dyn service_orchestration::ServiceInstance> {
    let spec = common::sh("probe-host", dir, "exec sleep 30");
    let ctx = StartContext {
        project: harness_core::ProjectName::new("test").unwrap(),
        env: Default::default(),
        log_dir: None,
        generation: 1,
        spawner: common::smol_spawner(),
        address: None,
    };
    let ex = ProcessExecutor::new();
    assert_eq!(ex.kind(), ServiceKind::Process);
    ex.start(&spec, &ctx).await.unwrap().instance
}

fn env(instance: Arc<dyn service_orchestration::ServiceInstance>, tls: &ProbeTls) -> CheckEnv {
    CheckEnv {
        instance,
        default_host: "127.0.0.1".into(),
        tls: TlsClient::new(tls).unwrap(),
    }
}

#[test]
fn https_checks_trust_only_what_they_are_told() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let inst = instance(dir.path()).await;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_pem = ck.cert.pem().into_bytes();
        let port = https_server(
            ck.cert.der().to_vec(),
            ck.signing_key.serialize_der(),
            "200 OK",
        );
        let check = Check::Http {
            url: format!("https://localhost:{port}/health"),
            expected_status: None,
        };

        let trusted = ProbeTls {
            ca_pem: Some(ca_pem),
            insecure_skip_verify: false,
        };
        let ok = check_once(&check, &env(inst.clone(), &trusted), LIMIT).await;
        assert!(ok.as_ref().is_ok_and(|d| d.contains("200")), "{ok:?}");

        let untrusted = check_once(&check, &env(inst.clone(), &ProbeTls::default()), LIMIT).await;
        let err = untrusted.unwrap_err();
        assert!(err.contains("TLS") && err.contains("certificate"), "{err}");

        let insecure = ProbeTls {
            ca_pem: None,
            insecure_skip_verify: true,
        };
        let ok = check_once(&check, &env(inst.clone(), &insecure), LIMIT).await;
        assert!(ok.is_ok(), "{ok:?}");
        inst.stop(harness_core::Signal::KILL, Duration::ZERO)
            .await
            .unwrap();
    });
}

#[test]
fn http_status_tcp_and_exec_checks() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let inst = instance(dir.path()).await;
        let e = env(inst.clone(), &ProbeTls::default());
        let port = common::free_port();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hi\n").unwrap();
        let mut httpd = std::process::Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(&www)
            .spawn()
            .unwrap();
        let ok_url = format!("http://127.0.0.1:{port}/index.html");
        let deadline = std::time::Instant::now() + LIMIT;
        let http = |url: String, expected_status| Check::Http {
            url,
            expected_status,
        };
        while check_once(&http(ok_url.clone(), None), &e, LIMIT)
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "httpd never answered");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        let missing = check_once(
            &http(format!("http://127.0.0.1:{port}/nope"), None),
            &e,
            LIMIT,
        )
        .await;
        assert!(
            missing.as_ref().is_err_and(|d| d.contains("404")),
            "{missing:?}"
        );
        let want_404 = check_once(
            &http(format!("http://127.0.0.1:{port}/nope"), Some(404)),
            &e,
            LIMIT,
        )
        .await;
        assert!(want_404.is_ok(), "{want_404:?}");
        let tcp = check_once(&Check::Tcp { host: None, port }, &e, LIMIT).await;
        assert!(tcp.is_ok(), "{tcp:?}");
        let _ = httpd.kill();
        let _ = httpd.wait();
        // httpd's forked request handlers may hold the socket a moment longer.
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let closed = check_once(&Check::Tcp { host: None, port }, &e, LIMIT).await;
            if closed.is_err() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{closed:?}");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }

        let slow = Check::Exec {
            command: "sleep".into(),
            args: vec!["20".into()],
        };
        let timed_out = check_once(&slow, &e, Duration::from_millis(300)).await;
        assert!(
            timed_out.as_ref().is_err_and(|d| d.contains("timed out")),
            "{timed_out:?}"
        );
        let failing = Check::Exec {
            command: "sh".into(),
            args: vec!["-c".into(), "echo nope; exit 2".into()],
        };
        let failed = check_once(&failing, &e, LIMIT).await.unwrap_err();
        assert!(
            failed.contains("exit code 2") && failed.contains("nope"),
            "{failed}"
        );
        inst.stop(harness_core::Signal::KILL, Duration::ZERO)
            .await
            .unwrap();
    });
}

#[test]
fn unsupported_target_is_an_error_naming_the_service() {
    smol::block_on(async {
        let mut spec = ServiceSpec::process(common::name("remote1"), "x", vec![]);
        spec.target = harness_config::Target::Remote {
            host: "h".into(),
            binary: "b".into(),
            args: vec![],
        };
        let ctx = StartContext {
            project: harness_core::ProjectName::new("test").unwrap(),
            env: Default::default(),
            log_dir: None,
            generation: 1,
            spawner: common::smol_spawner(),
            address: None,
        };
        let err = ProcessExecutor::new().start(&spec, &ctx).await.unwrap_err();
        assert!(err.to_string().contains("`remote1`"), "{err}");
    });
}

/// Lines in `path` (0 when it does not exist yet).
fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// A readiness probe checks every `start_interval` until it first passes, then
/// every `period`; a restarted service starts again at `start_interval`. The
/// probe appends a line to a file on each run, so the test counts runs: with a
/// one-hour period, any count above one before the first pass (and any run
/// after it) comes from the start interval.
#[test]
fn start_interval_until_the_first_pass_then_the_period() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let ready = dir.path().join("ready");
        let mut spec = common::sh("svc", dir.path(), "exec sleep 300");
        let mut probe = common::probe(
            Check::Exec {
                command: "sh".into(),
                args: vec![
                    "-c".into(),
                    format!(
                        "echo run >> '{}'; test -f '{}'",
                        runs.display(),
                        ready.display()
                    ),
                ],
            },
            1_000_000,
        );
        probe.period = Duration::from_secs(3600);
        probe.start_interval = Some(Duration::from_millis(20));
        spec.readiness = Some(probe);
        let m = common::manager(common::project(vec![spec]), common::smol_spawner());
        let _guard = common::StopOnDrop(m.clone());
        let svc = [common::name("svc")];
        let healthy = || matches!(m.state("svc"), Some(harness_core::ServiceState::Healthy));

        m.start(&svc).unwrap();
        // Not ready: the check repeats at the start interval (the period would allow one run).
        common::eventually("five runs before ready", Duration::from_secs(30), || {
            lines(&runs) >= 5
        })
        .await;
        assert!(!healthy());
        std::fs::write(&ready, "").unwrap();
        common::eventually("healthy", Duration::from_secs(30), healthy).await;
        let at_pass = lines(&runs);
        // Passed: the next run is an hour away. A window in which the start
        // interval would have run the check dozens of times shows none.
        async_io::Timer::after(Duration::from_millis(600)).await;
        assert_eq!(lines(&runs), at_pass, "the check ran again after passing");
        assert!(healthy());

        // A new run starts again at the start interval.
        std::fs::remove_file(&ready).unwrap();
        m.restart(&svc).await.unwrap();
        common::eventually(
            "five runs after the restart",
            Duration::from_secs(30),
            || lines(&runs) >= at_pass + 5,
        )
        .await;
        assert!(!healthy());
        std::fs::write(&ready, "").unwrap();
        common::eventually("healthy again", Duration::from_secs(30), healthy).await;
        m.stop_all().await;
    });
}
