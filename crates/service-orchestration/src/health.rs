//! Health checks: exec, HTTP(S), TCP connect (log-line checks are matched by
//! the manager on the output it already reads).
//!
//! [`check_once`] runs one attempt of a check, bounded by its timeout.
//! [`ProbeRunner`] runs a [`Probe`] periodically and reports each change of
//! verdict (after the success or failure threshold): the first attempt runs at
//! once, failures within `start_period` before a first pass do not count;
//! attempts follow every `start_interval` until the probe first passes, then
//! every `period`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

use harness_config::{Check, Probe};

use crate::executor::ServiceInstance;

/// How HTTPS checks verify servers. No system roots are used (they may be
/// unavailable offline): trust comes from configured CA certificates, or
/// verification is skipped when explicitly asked for.
#[derive(Debug, Clone, Default)]
pub struct ProbeTls {
    /// PEM-encoded CA certificates that HTTPS checks trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Skip certificate verification altogether (only for self-signed test setups).
    pub insecure_skip_verify: bool,
}

/// Why a TLS setting is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file holds no usable certificate.
    #[error("CA certificates for HTTPS checks: {0}")]
    Ca(String),
    /// rustls refused the configuration.
    #[error("TLS configuration for HTTPS checks: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A ready-to-use TLS client configuration for HTTPS checks.
#[derive(Clone)]
pub struct TlsClient(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Builds the client configuration (ring provider only).
    pub fn new(tls: &ProbeTls) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = if tls.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(pem) = &tls.ca_pem {
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| TlsSetupError::Ca(e.to_string()))?;
                    roots.add(cert)?;
                }
                if roots.is_empty() {
                    return Err(TlsSetupError::Ca("no certificate in the PEM data".into()));
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(TlsClient(Arc::new(config)))
    }
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a check needs besides its own definition.
#[derive(Clone)]
pub struct CheckEnv {
    /// The running instance (exec checks run where it runs).
    pub instance: Arc<dyn ServiceInstance>,
    /// The host TCP checks connect to when they name none.
    pub default_host: String,
    /// The TLS client for HTTPS checks.
    pub tls: TlsClient,
}

/// The verdict of one attempt: `Ok(detail)` passes, `Err(detail)` fails.
pub type CheckResult = Result<String, String>;

/// Runs one attempt of `check`, failing it when it takes longer than `timeout`.
/// Log-line checks cannot be run this way (they watch output) and fail here.
pub async fn check_once(check: &Check, env: &CheckEnv, timeout: Duration) -> CheckResult {
    let attempt = async {
        match check {
            Check::Exec { command, args } => {
                match env.instance.exec(command, args, timeout).await {
                    Ok(out) if out.success => Ok(out.detail),
                    Ok(out) => Err(out.detail),
                    Err(e) => Err(e.to_string()),
                }
            }
            Check::Http {
                url,
                expected_status,
            } => http_check(url, *expected_status, &env.tls).await,
            Check::Tcp { host, port } => {
                let host = host.as_deref().unwrap_or(&env.default_host);
                match async_net::TcpStream::connect((host, *port)).await {
                    Ok(_) => Ok(format!("connected to {host}:{port}")),
                    Err(e) => Err(format!("cannot connect to {host}:{port}: {e}")),
                }
            }
            Check::LogLine { pattern } => Err(format!(
                "log line /{}/ is matched on output, not polled",
                pattern.as_str()
            )),
        }
    };
    let timer = async {
        async_io::Timer::at(Instant::now() + timeout).await;
        Err(format!(
            "timed out after {}",
            harness_core::duration::format_duration(timeout)
        ))
    };
    futures_lite::future::or(attempt, timer).await
}

async fn http_check(url: &str, expected: Option<u16>, tls: &TlsClient) -> CheckResult {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL `{url}`: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") | None => false,
        Some("https") => true,
        Some(other) => return Err(format!("unsupported scheme `{other}` in `{url}`")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in `{url}`"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "harness-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("bad request for `{url}`: {e}"))?;
    let tcp = async_net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let status = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad TLS server name `{host}`: {e}"))?;
        let stream = futures_rustls::TlsConnector::from(tls.0.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        send(smol_hyper::rt::FuturesIo::new(stream), req).await
    } else {
        send(smol_hyper::rt::FuturesIo::new(tcp), req).await
    }
    .map_err(|e| format!("GET {url}: {e}"))?;
    let ok = match expected {
        Some(want) => status.as_u16() == want,
        None => status.is_success() || status.is_redirection(),
    };
    if ok {
        Ok(format!("GET {url}: {status}"))
    } else {
        Err(format!("GET {url}: {status}"))
    }
}

async fn send<T>(
    io: T,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::StatusCode, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // Drive the connection until the response head arrives. The connection may
    // finish first (the server closes right after answering): the response is
    // then already waiting for the request future.
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    let mut request = std::pin::pin!(sender.send_request(req));
    let response = std::future::poll_fn(|cx| {
        if !conn_done && let std::task::Poll::Ready(r) = conn.as_mut().poll(cx) {
            conn_done = true;
            if let Err(e) = r {
                return std::task::Poll::Ready(Err(e));
            }
        }
        request.as_mut().poll(cx)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(response.status())
}

/// A change of verdict reported by a [`ProbeRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True: the check passes (success threshold reached); false: it fails (failure threshold reached).
    pub passed: bool,
    /// The detail of the attempt that decided it.
    pub detail: String,
}

/// Counts consecutive results against a probe's thresholds: pure.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    successes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl Thresholds {
    /// Records one result; returns the new verdict when it changes.
    pub fn record(&mut self, probe: &Probe, passed: bool) -> Option<bool> {
        if passed {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= probe.success_threshold.max(1) && self.verdict != Some(true) {
                self.verdict = Some(true);
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= probe.failure_threshold.max(1) && self.verdict != Some(false) {
                self.verdict = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// Runs a probe until cancelled, reporting verdict changes.
pub struct ProbeRunner {
    /// The probe (its templates expanded).
    pub probe: Probe,
    /// What checks need.
    pub env: CheckEnv,
    /// Where to keep what the latest attempt said (passed or not), if anywhere.
    pub last: Option<Arc<std::sync::Mutex<Option<String>>>>,
    /// Set when the port the check connects to was held by another process
    /// before the service started: why a connection proves nothing. Every
    /// attempt then fails with this reason.
    pub taken: Option<String>,
}

impl ProbeRunner {
    /// Runs the probe: the first attempt at once, then every `start_interval`
    /// until it first passes, every `period` from then on (also when it fails
    /// again later: a runner serves one run of a service, the next run gets a
    /// fresh one). As in compose, failures within `start_period`
    /// ([`Probe::initial_delay`]) before the first pass do not count, while a
    /// pass counts at once. Calls `report` on each change of verdict and stops
    /// when it returns false or `cancel` is closed.
    pub async fn run<F, Fut>(self, cancel: async_channel::Receiver<()>, mut report: F)
    where
        F: FnMut(Verdict) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let work = async {
            let grace_until = Instant::now() + self.probe.initial_delay;
            let mut passed_once = false;
            let mut thresholds = Thresholds::default();
            let mut interval = self.probe.period_until_passed();
            loop {
                let started = Instant::now();
                let result = match &self.taken {
                    Some(why) => Err(why.clone()),
                    None => check_once(&self.probe.check, &self.env, self.probe.timeout).await,
                };
                let passed = result.is_ok();
                let detail = match result {
                    Ok(d) | Err(d) => d,
                };
                if let Some(last) = &self.last {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail.clone());
                }
                passed_once |= passed;
                let counts = passed || passed_once || Instant::now() >= grace_until;
                if counts && let Some(v) = thresholds.record(&self.probe, passed) {
                    if v {
                        interval = self.probe.period;
                    }
                    if !report(Verdict { passed: v, detail }).await {
                        return;
                    }
                }
                async_io::Timer::at(started + interval).await;
            }
        };
        let cancelled = async {
            let _ = cancel.recv().await;
        };
        futures_lite::future::or(work, cancelled).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_report_changes_only() {
        let mut p = Probe::new(Check::Tcp {
            host: None,
            port: 1,
        });
        p.success_threshold = 2;
        p.failure_threshold = 3;
        let mut t = Thresholds::default();
        let seq = [true, true, true, false, false, false, false, true, true];
        let got: Vec<_> = seq.iter().map(|r| t.record(&p, *r)).collect();
        assert_eq!(
            got,
            vec![
                None,
                Some(true),
                None,
                None,
                None,
                Some(false),
                None,
                None,
                Some(true)
            ]
        );
    }
}
