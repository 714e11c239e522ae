//! Prometheus metrics of the daemon, served as text on an opt-in HTTP
//! listener at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The method's wire name.
    pub method: String,
    /// `ok` or the error code.
    pub outcome: String,
}

/// Labels of per-method latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The method's wire name.
    pub method: String,
}

/// Labels of the services gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceStateLabels {
    /// The project.
    pub project: String,
    /// The state label (`running`, `healthy`, ...).
    pub state: String,
}

/// Labels of refused connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// At which step: `tls`, `websocket`, `handshake`.
    pub stage: String,
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted (past the TLS and protocol handshakes).
    pub connections: Counter,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Connections refused, by stage.
    pub rejected: Family<RejectLabels, Counter>,
    /// Requests answered, by method and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency, by method.
    pub latency: Family<MethodLabels, Histogram>,
    /// Frames refused as too large.
    pub oversized_frames: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `harnessd` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("harnessd");
        let connections = Counter::default();
        let open_connections = Gauge::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 18))) as fn() -> Histogram,
        );
        let oversized_frames = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections refused before the protocol handshake completed",
            rejected.clone(),
        );
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer",
            latency.clone(),
        );
        registry.register(
            "oversized_frames",
            "Messages refused for exceeding the frame limit",
            oversized_frames.clone(),
        );
        Metrics {
            registry,
            connections,
            open_connections,
            rejected,
            requests,
            latency,
            oversized_frames,
        }
    }

    /// The registry, to add more metrics before serving.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts a refused connection.
    pub fn reject(&self, stage: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                stage: stage.to_owned(),
            })
            .inc();
    }

    /// Records an answered request.
    pub fn request(&self, method: &str, outcome: &str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        smol::spawn(async move {
            let _ = future::or(answer(stream, &metrics), async {
                async_io::Timer::after(Duration::from_secs(10)).await;
                Ok(())
            })
            .await;
        })
        .detach();
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => ("200 OK", metrics.encode()),
        (Some("GET"), Some(_)) => ("404 Not Found", "not found\n".to_owned()),
        _ => ("400 Bad Request", "bad request\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
