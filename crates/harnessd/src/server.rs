//! The network side: accept, mutual TLS, WebSocket, the protocol
//! handshake, then requests routed to the [`Backend`] concurrently, each
//! cancellable, answered over one writer per connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::{self, Message};
use event_listener::Event;
use futures_lite::{StreamExt, future};
use futures_rustls::TlsAcceptor;
use harness_protocol::{
    ClientMessage, DaemonInfo, ErrorBody, ErrorCode, MAX_FRAME_BYTES, Method, Outcome,
    PROTOCOL_VERSION, Request, RequestId, Response, ServerMessage, StreamItem, Welcome,
    decode_client_message, encode, ws_config,
};
use serde::Serialize;

use crate::Daemon;
use crate::backend::ItemSink;

/// How long a client has for the TLS, WebSocket and protocol handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one connection may have in flight.
const MAX_IN_FLIGHT: usize = 1024;
/// Messages queued for a connection's writer.
const OUTGOING_QUEUE: usize = 1024;
/// Bytes queued for a connection's writer beyond which senders wait (one
/// message larger than this still goes out when the queue is empty).
const MAX_QUEUED_BYTES: usize = 4 << 20;
/// How long a full queue may stay full before the client counts as not reading
/// and is disconnected.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are refused with a reason.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Connections (including those still in their handshakes) beyond which new
/// ones are closed at once, before TLS.
const MAX_PENDING_CONNECTIONS: usize = 2 * MAX_CONNECTIONS;

async fn timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await
}

/// The outgoing side of one connection: a queue to its writer bounded in
/// messages and bytes. A client that stops reading makes senders wait; if it
/// does not read for [`STALL_TIMEOUT`], the connection is marked stalled, every
/// sender gives up and the connection is closed, so the daemon's memory does
/// not grow with what such a client leaves unread.
#[derive(Clone)]
struct Outgoing {
    tx: async_channel::Sender<String>,
    shared: Arc<OutgoingState>,
}

#[derive(Default)]
struct OutgoingState {
    queued: AtomicUsize,
    stalled: AtomicBool,
    /// Notified when the writer took a message, and when the connection stalled.
    changed: Event,
}

impl Outgoing {
    fn new() -> (Outgoing, async_channel::Receiver<String>) {
        let (tx, rx) = async_channel::bounded(OUTGOING_QUEUE);
        let out = Outgoing {
            tx,
            shared: Arc::default(),
        };
        (out, rx)
    }

    fn stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    fn stall(&self) {
        if !self.shared.stalled.swap(true, Ordering::SeqCst) {
            self.shared.changed.notify(usize::MAX);
        }
    }

    /// Waits until the stalled flag is set.
    async fn until_stalled(&self) {
        loop {
            let listener = self.shared.changed.listen();
            if self.stalled() {
                return;
            }
            listener.await;
        }
    }

    /// Waits until `len` more bytes fit (or the queue is empty); false if the
    /// client read nothing for [`STALL_TIMEOUT`] (the connection is then stalled).
    async fn room_for(&self, len: usize) -> bool {
        let deadline = Instant::now() + STALL_TIMEOUT;
        loop {
            if self.stalled() {
                return false;
            }
            let queued = self.shared.queued.load(Ordering::SeqCst);
            if queued == 0 || queued + len <= MAX_QUEUED_BYTES {
                return true;
            }
            let listener = self.shared.changed.listen();
            if self.shared.queued.load(Ordering::SeqCst) != queued {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if timeout(left, listener).await.is_none() {
                self.stall();
                return false;
            }
        }
    }

    /// Queues a message; false when the connection is gone or stalled.
    async fn send(&self, msg: ServerMessage) -> bool {
        let text = encode(&msg);
        drop(msg);
        let len = text.len();
        if !self.room_for(len).await {
            return false;
        }
        self.shared.queued.fetch_add(len, Ordering::SeqCst);
        match timeout(STALL_TIMEOUT, self.tx.send(text)).await {
            Some(Ok(())) => true,
            failed => {
                self.shared.queued.fetch_sub(len, Ordering::SeqCst);
                if failed.is_none() {
                    self.stall();
                }
                false
            }
        }
    }

    /// The writer took a message of `len` bytes off the queue.
    fn taken(&self, len: usize) {
        self.shared.queued.fetch_sub(len, Ordering::SeqCst);
        self.shared.changed.notify(usize::MAX);
    }
}

/// Counts a connection from accept to close.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(daemon: Arc<Daemon>, listener: TcpListener, acceptor: TlsAcceptor) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            daemon.shutdown_requested().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                if live.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_CONNECTIONS {
                    live.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(%peer, limit = MAX_PENDING_CONNECTIONS, "refused connection: too many connections");
                    daemon.metrics.reject("too_many_connections");
                    drop(stream);
                    continue;
                }
                let guard = LiveGuard(live.clone());
                let d = daemon.clone();
                let acceptor = acceptor.clone();
                smol::spawn(async move {
                    let _guard = guard;
                    tracing::debug!(%peer, "connection");
                    connection(d, stream, acceptor).await;
                })
                .detach();
            }
            Some(Err(e)) => {
                // E.g. too many open files: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the open-connection count when a connection ends.
struct OpenGuard(Arc<Daemon>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.open_connections.dec();
        self.0.connection_closed.notify(usize::MAX);
    }
}

async fn connection(daemon: Arc<Daemon>, tcp: TcpStream, acceptor: TlsAcceptor) {
    let _ = tcp.set_nodelay(true);
    // Mutual TLS: a client without a certificate of our CA fails here and
    // gets nothing more than the TLS alert.
    let tls = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::info!(error = %e, "refused connection: TLS handshake failed");
            daemon.metrics.reject("tls");
            return;
        }
        None => {
            daemon.metrics.reject("tls");
            return;
        }
    };
    let ws = match timeout(
        HANDSHAKE_TIMEOUT,
        async_tungstenite::accept_async_with_config(tls, Some(ws_config())),
    )
    .await
    {
        Some(Ok(ws)) => ws,
        _ => {
            tracing::info!("refused connection: no WebSocket handshake");
            daemon.metrics.reject("websocket");
            return;
        }
    };
    let (mut tx, mut rx) = ws.split();

    // The protocol handshake.
    let hello = timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Text(t))) => return Some(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await
    .flatten();
    let Some(hello) = hello else {
        daemon.metrics.reject("handshake");
        return;
    };
    let reject = |error: ErrorBody| Message::text(encode(&ServerMessage::Rejected { error }));
    let client_name = match decode_client_message(hello.as_str()) {
        Ok(ClientMessage::Hello(h)) if h.protocol == PROTOCOL_VERSION => h.client,
        Ok(ClientMessage::Hello(h)) => {
            daemon.metrics.reject("handshake");
            let _ = tx
                .send(reject(ErrorBody::new(
                    ErrorCode::VersionMismatch,
                    format!(
                        "client speaks protocol {}, this daemon speaks {PROTOCOL_VERSION}",
                        h.protocol
                    ),
                )))
                .await;
            let _ = tx.close(None).await;
            return;
        }
        Ok(_) | Err(_) => {
            daemon.metrics.reject("handshake");
            let _ = tx
                .send(reject(ErrorBody::new(
                    ErrorCode::BadRequest,
                    "the first message must be a hello",
                )))
                .await;
            let _ = tx.close(None).await;
            return;
        }
    };
    let welcome = ServerMessage::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        max_frame_bytes: MAX_FRAME_BYTES,
    });
    if daemon.open_connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS as u64 {
        tracing::warn!(client = %client_name, limit = MAX_CONNECTIONS, "refused connection: too many connections");
        daemon.metrics.reject("too_many_connections");
        let _ = tx
            .send(reject(ErrorBody::new(
                ErrorCode::Unavailable,
                format!("the daemon serves at most {MAX_CONNECTIONS} connections at once; try again later"),
            )))
            .await;
        let _ = tx.close(None).await;
        return;
    }
    if tx.send(Message::text(encode(&welcome))).await.is_err() {
        return;
    }
    daemon.open_connections.fetch_add(1, Ordering::SeqCst);
    daemon.metrics.connections.inc();
    daemon.metrics.open_connections.inc();
    let _guard = OpenGuard(daemon.clone());
    tracing::debug!(client = %client_name, "client connected");

    let (out_tx, out_rx) = Outgoing::new();
    let out_w = out_tx.clone();
    let writer = smol::spawn(async move {
        while let Ok(text) = out_rx.recv().await {
            let len = text.len();
            let sent = tx.send(Message::text(text)).await;
            out_w.taken(len);
            if sent.is_err() {
                return;
            }
        }
        let _ = tx.close(None).await;
    });

    let in_flight: Arc<Mutex<HashMap<RequestId, async_channel::Sender<()>>>> = Arc::default();
    loop {
        // A client that does not read its replies gets no more requests read
        // (and is closed when it stalls).
        if !out_tx.room_for(0).await {
            break;
        }
        let next = future::or(
            async { Some(rx.next().await) },
            future::or(
                async {
                    daemon.shutdown_requested().await;
                    None
                },
                async {
                    out_tx.until_stalled().await;
                    None
                },
            ),
        )
        .await;
        let Some(next) = next else { break };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let _ = out_tx
                    .send(error_response(
                        0,
                        ErrorCode::BadRequest,
                        "binary messages are not part of the protocol",
                    ))
                    .await;
                continue;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(tungstenite::Error::Capacity(e))) => {
                daemon.metrics.oversized_frames.inc();
                tracing::info!(error = %e, "refused an oversized message; closing the connection");
                let _ = out_tx
                    .send(error_response(
                        0,
                        ErrorCode::FrameTooLarge,
                        format!("message exceeds the limit of {MAX_FRAME_BYTES} bytes"),
                    ))
                    .await;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "connection error");
                break;
            }
        };
        let arrived = Instant::now();
        let request = match decode_client_message(text.as_str()) {
            Ok(ClientMessage::Request(r)) => r,
            Ok(ClientMessage::Hello(_)) => {
                let _ = out_tx
                    .send(error_response(
                        0,
                        ErrorCode::BadRequest,
                        "hello was already received",
                    ))
                    .await;
                continue;
            }
            Err(e) => {
                daemon
                    .metrics
                    .request("invalid", &e.error.code.to_string(), arrived.elapsed());
                let _ = out_tx
                    .send(ServerMessage::Response(Response {
                        id: e.id.unwrap_or(0),
                        outcome: Outcome::Error(e.error),
                    }))
                    .await;
                continue;
            }
        };
        let id = request.id;
        if let Method::Cancel(c) = &request.method {
            let found = in_flight.lock().ok().and_then(|mut m| m.remove(&c.id));
            let outcome = match found {
                // Closing the channel cancels the request; its handler answers `cancelled`.
                Some(cancel) => {
                    cancel.close();
                    Outcome::Result(serde_json::Value::Null)
                }
                None => Outcome::Error(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!("no request {} in flight", c.id),
                )),
            };
            daemon
                .metrics
                .request("cancel", outcome_label(&outcome), arrived.elapsed());
            let _ = out_tx
                .send(ServerMessage::Response(Response { id, outcome }))
                .await;
            continue;
        }
        let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
        let refused = match in_flight.lock() {
            Ok(m) if m.contains_key(&id) => Some(ErrorBody::new(
                ErrorCode::Conflict,
                format!("request id {id} is already in flight"),
            )),
            Ok(m) if m.len() >= MAX_IN_FLIGHT => Some(ErrorBody::new(
                ErrorCode::Unavailable,
                format!("too many requests in flight (limit {MAX_IN_FLIGHT})"),
            )),
            Ok(mut m) => {
                m.insert(id, cancel_tx);
                None
            }
            Err(_) => Some(ErrorBody::new(
                ErrorCode::Internal,
                "request table poisoned",
            )),
        };
        if let Some(error) = refused {
            let _ = out_tx
                .send(ServerMessage::Response(Response {
                    id,
                    outcome: Outcome::Error(error),
                }))
                .await;
            continue;
        }
        let d = daemon.clone();
        let out = out_tx.clone();
        let table = in_flight.clone();
        smol::spawn(async move {
            let name = request.method.name();
            let handle = async {
                // A bug in a handler answers `internal`; it never takes the daemon down.
                let handled = futures_lite::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                    route(&d, request, &out),
                ))
                .await;
                Some(handled.unwrap_or_else(|_| {
                    tracing::error!(request = id, "request handler panicked");
                    Outcome::Error(ErrorBody::new(
                        ErrorCode::Internal,
                        format!("request {id} failed inside the daemon"),
                    ))
                }))
            };
            let outcome = future::or(handle, async {
                let _ = cancel_rx.recv().await;
                None
            })
            .await
            .unwrap_or_else(|| {
                Outcome::Error(ErrorBody::new(
                    ErrorCode::Cancelled,
                    format!("request {id} was cancelled"),
                ))
            });
            if let Ok(mut m) = table.lock() {
                m.remove(&id);
            }
            d.metrics
                .request(name, outcome_label(&outcome), arrived.elapsed());
            let _ = out
                .send(ServerMessage::Response(Response { id, outcome }))
                .await;
        })
        .detach();
    }
    // The connection is over: cancel what is still running, let the
    // writer flush what is queued (unless the client stopped reading).
    if let Ok(mut m) = in_flight.lock() {
        m.clear();
    }
    if out_tx.stalled() {
        tracing::warn!(
            client = %client_name,
            queued_bytes = out_tx.shared.queued.load(Ordering::SeqCst),
            "closed connection: the client read nothing for {STALL_TIMEOUT:?}"
        );
        daemon.metrics.reject("stalled");
        drop(writer);
        return;
    }
    drop(out_tx);
    let _ = timeout(Duration::from_secs(5), writer).await;
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Result(_) => "ok",
        Outcome::Error(e) => match e.code {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ServiceFailed => "service_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Other => "other",
        },
    }
}

fn error_response(id: RequestId, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Response(Response {
        id,
        outcome: Outcome::Error(ErrorBody::new(code, message)),
    })
}

fn to_outcome<T: Serialize>(r: Result<T, ErrorBody>) -> Outcome {
    match r {
        Ok(v) => match serde_json::to_value(v) {
            Ok(v) => Outcome::Result(v),
            Err(e) => Outcome::Error(ErrorBody::new(ErrorCode::Internal, e.to_string())),
        },
        Err(e) => Outcome::Error(e),
    }
}

/// Runs a streaming operation, forwarding its items as they come.
async fn streamed<T: Serialize, F: Future<Output = Result<T, ErrorBody>>>(
    id: RequestId,
    out: &Outgoing,
    op: impl FnOnce(ItemSink) -> F,
) -> Outcome {
    let (sink, items) = ItemSink::new(256);
    let forward = async {
        while let Ok(item) = items.recv().await {
            let item: StreamItem = item;
            if !out.send(ServerMessage::Item { id, item }).await {
                break;
            }
        }
    };
    let work = op(sink);
    // The operation drops its sink when done; the forwarder then drains
    // what is left and ends.
    let (r, ()) = future::zip(work, forward).await;
    to_outcome(r)
}

async fn route(daemon: &Arc<Daemon>, request: Request, out: &Outgoing) -> Outcome {
    let id = request.id;
    let b = daemon.backend.clone();
    match request.method {
        Method::Ping => Outcome::Result(serde_json::Value::Null),
        Method::DaemonStatus => to_outcome::<DaemonInfo>(Ok(daemon.info())),
        Method::DaemonStop => {
            tracing::info!("stop requested by a client");
            daemon.request_shutdown();
            Outcome::Result(serde_json::Value::Null)
        }
        Method::Cancel(_) => Outcome::Error(ErrorBody::new(
            ErrorCode::Internal,
            "cancel is handled by the connection",
        )),
        Method::Up(p) => streamed(id, out, |sink| async move { b.up(p, sink).await }).await,
        Method::Logs(p) => streamed(id, out, |sink| async move { b.logs(p, sink).await }).await,
        Method::Events(p) => streamed(id, out, |sink| async move { b.events(p, sink).await }).await,
        Method::Down(p) => to_outcome(b.down(p).await),
        Method::Start(p) => to_outcome(b.start(p).await),
        Method::Stop(p) => to_outcome(b.stop(p).await),
        Method::Restart(p) => to_outcome(b.restart(p).await),
        Method::Status(p) => to_outcome(b.status(p).await),
        Method::Env(p) => to_outcome(b.env(p).await),
        Method::Exec(p) => to_outcome(b.exec(p).await),
        Method::Projects => to_outcome(b.project_summaries().await),
    }
}
