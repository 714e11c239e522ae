//! The client: one mutually authenticated connection to a daemon, many
//! requests in flight over it, matched to their answers by id.
//!
//! ```no_run
//! # async fn demo() -> Result<(), harness_protocol::ClientError> {
//! use harness_protocol::{Client, ServicesParams};
//! let state_dir = harness_protocol::resolve_state_dir(None)?;
//! let client = Client::connect(&state_dir).await?;
//! for project in client.status(ServicesParams::default()).await? {
//!     println!("{}: {} services", project.project, project.services.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_net::TcpStream;
use async_tungstenite::tungstenite::Message;
use futures_lite::{Stream, StreamExt, future};
use harness_core::{SharedSpawner, ThreadSpawner};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;

use crate::codec::{encode, hello, ws_config};
use crate::state_dir::{StateDir, StateDirError};
use crate::tls::{CertPaths, TlsError, client_config, server_name};
use crate::wire::{
    CancelParams, ClientMessage, DaemonInfo, EnvParams, EnvResult, ErrorBody, ExecParams, ExecPlan,
    LogsParams, Method, Outcome, ProjectStatus, ProjectSummary, Request, RequestId, ServerMessage,
    ServicesParams, StreamItem, UpParams, Welcome,
};

/// An error of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The state directory has no running daemon's address, or unreadable files.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The daemon could not be reached or the TLS/WebSocket handshake failed.
    #[error("connecting to harnessd at {address}: {message}")]
    Connect {
        /// The address.
        address: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The daemon refused the handshake (e.g. another protocol version).
    #[error("harnessd refused the connection: {0}")]
    Rejected(ErrorBody),
    /// The daemon answered the request with an error.
    #[error("{0}")]
    Remote(ErrorBody),
    /// The connection closed before the answer came.
    #[error("connection to harnessd closed")]
    Disconnected,
    /// The daemon sent something this client does not understand.
    #[error("unexpected message from harnessd: {0}")]
    Protocol(String),
    /// A deadline passed.
    #[error("timed out {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// The daemon's error, if this is one.
    pub fn remote(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Remote(e) | ClientError::Rejected(e) => Some(e),
            _ => None,
        }
    }
}

/// How to connect.
#[derive(Clone)]
pub struct ClientOptions {
    /// Who the client is (sent in the handshake, shown in the daemon's log).
    pub client_name: String,
    /// Where the connection's background I/O runs. By default a thread of
    /// its own, so the client works under any runtime or none.
    pub spawner: Option<SharedSpawner>,
    /// Deadline for TCP, TLS, WebSocket and protocol handshakes together.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_name: format!("harness-protocol/{}", env!("CARGO_PKG_VERSION")),
            spawner: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("client_name", &self.client_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

enum Event {
    Item(StreamItem),
    Done(Outcome),
}

struct Inner {
    next_id: AtomicU64,
    pending: Mutex<HashMap<RequestId, async_channel::Sender<Event>>>,
    outgoing: async_channel::Sender<Message>,
    closed: AtomicBool,
    welcome: Welcome,
}

impl Inner {
    fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the senders tells every waiter the connection is gone.
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
        self.outgoing.close();
    }
}

/// A connection to a daemon. Cheap to clone; all clones share the
/// connection, which closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.inner.welcome)
            .finish_non_exhaustive()
    }
}

type Ws = async_tungstenite::WebSocketStream<futures_rustls::client::TlsStream<TcpStream>>;

async fn with_timeout<T>(
    d: Duration,
    what: &'static str,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    future::or(f, async {
        async_io::Timer::after(d).await;
        Err(ClientError::Timeout(what))
    })
    .await
}

impl Client {
    /// Connects to the daemon of a state directory: reads its address and
    /// the client certificate from there.
    pub async fn connect(state_dir: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with(state_dir, ClientOptions::default()).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with(
        state_dir: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let state = StateDir::new(state_dir.as_ref());
        let paths = CertPaths::of(&state);
        let (address, tls) = blocking::unblock(move || -> Result<_, ClientError> {
            let address = state.read_address()?.address;
            Ok((address, client_config(&paths)?))
        })
        .await?;
        Client::connect_to(address, tls, options).await
    }

    /// Connects to a daemon at `address` with an explicit TLS configuration.
    pub async fn connect_to(
        address: SocketAddr,
        tls: Arc<ClientConfig>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let timeout = options.connect_timeout;
        let (ws, welcome) = with_timeout(timeout, "connecting to harnessd", async {
            let err = |m: String| ClientError::Connect {
                address,
                message: m,
            };
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| err(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let tls = futures_rustls::TlsConnector::from(tls)
                .connect(server_name(), tcp)
                .await
                .map_err(|e| err(format!("TLS: {e}")))?;
            let url = format!("wss://localhost:{}/v1", address.port());
            let (mut ws, _) =
                async_tungstenite::client_async_with_config(url, tls, Some(ws_config()))
                    .await
                    .map_err(|e| err(format!("WebSocket: {e}")))?;
            ws.send(Message::text(encode(&hello(options.client_name.clone()))))
                .await
                .map_err(|e| err(format!("sending hello: {e}")))?;
            let welcome = read_welcome(&mut ws).await?;
            Ok((ws, welcome))
        })
        .await?;

        let (out_tx, out_rx) = async_channel::unbounded::<Message>();
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            outgoing: out_tx,
            closed: AtomicBool::new(false),
            welcome,
        });
        let spawner = options
            .spawner
            .unwrap_or_else(|| Arc::new(ThreadSpawner) as SharedSpawner);
        let weak = Arc::downgrade(&inner);
        spawner.spawn(Box::pin(drive(ws, out_rx, weak)));
        Ok(Client { inner })
    }

    /// The daemon's answer to the handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// True once the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    fn send(
        &self,
        method: Method,
    ) -> Result<(RequestId, async_channel::Receiver<Event>), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::unbounded();
        self.inner
            .pending
            .lock()
            .map_err(|_| ClientError::Disconnected)?
            .insert(id, tx);
        let msg = encode(&ClientMessage::Request(Request { id, method }));
        self.inner
            .outgoing
            .try_send(Message::text(msg))
            .map_err(|_| ClientError::Disconnected)?;
        Ok((id, rx))
    }

    /// Sends a request and waits for its result (items of a streaming
    /// method are skipped).
    pub async fn call(&self, method: Method) -> Result<serde_json::Value, ClientError> {
        let (_, rx) = self.send(method)?;
        loop {
            match rx.recv().await {
                Ok(Event::Item(_)) => continue,
                Ok(Event::Done(Outcome::Result(v))) => return Ok(v),
                Ok(Event::Done(Outcome::Error(e))) => return Err(ClientError::Remote(e)),
                Err(_) => return Err(ClientError::Disconnected),
            }
        }
    }

    /// [`Client::call`], reading the result as `T`.
    pub async fn call_as<T: DeserializeOwned>(&self, method: Method) -> Result<T, ClientError> {
        let v = self.call(method).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request and returns the stream of its items. The stream ends
    /// when the request ends; see [`ResponseStream`].
    pub fn stream(&self, method: Method) -> Result<ResponseStream, ClientError> {
        let (id, rx) = self.send(method)?;
        Ok(ResponseStream {
            id,
            rx: Box::pin(rx),
            client: self.clone(),
            finished: false,
            result: None,
        })
    }

    /// Cancels a request in flight by id.
    pub async fn cancel(&self, id: RequestId) -> Result<(), ClientError> {
        self.call(Method::Cancel(CancelParams { id }))
            .await
            .map(|_| ())
    }

    /// Does nothing, round trip.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(Method::Ping).await.map(|_| ())
    }

    /// [`Method::Up`] without following its progress.
    pub async fn up(&self, params: UpParams) -> Result<ProjectStatus, ClientError> {
        self.call_as(Method::Up(params)).await
    }

    /// [`Method::Down`].
    pub async fn down(&self, params: ServicesParams) -> Result<ProjectStatus, ClientError> {
        self.call_as(Method::Down(params)).await
    }

    /// [`Method::Start`].
    pub async fn start(&self, params: ServicesParams) -> Result<ProjectStatus, ClientError> {
        self.call_as(Method::Start(params)).await
    }

    /// [`Method::Stop`].
    pub async fn stop(&self, params: ServicesParams) -> Result<ProjectStatus, ClientError> {
        self.call_as(Method::Stop(params)).await
    }

    /// [`Method::Restart`].
    pub async fn restart(&self, params: ServicesParams) -> Result<ProjectStatus, ClientError> {
        self.call_as(Method::Restart(params)).await
    }

    /// [`Method::Status`].
    pub async fn status(&self, params: ServicesParams) -> Result<Vec<ProjectStatus>, ClientError> {
        self.call_as(Method::Status(params)).await
    }

    /// [`Method::Logs`], as a stream of [`StreamItem::Log`]s.
    pub fn logs(&self, params: LogsParams) -> Result<ResponseStream, ClientError> {
        self.stream(Method::Logs(params))
    }

    /// [`Method::Events`], as a stream of [`StreamItem::Event`]s.
    pub fn events(&self, params: ServicesParams) -> Result<ResponseStream, ClientError> {
        self.stream(Method::Events(params))
    }

    /// [`Method::Env`].
    pub async fn env(&self, params: EnvParams) -> Result<EnvResult, ClientError> {
        self.call_as(Method::Env(params)).await
    }

    /// [`Method::Exec`].
    pub async fn exec(&self, params: ExecParams) -> Result<ExecPlan, ClientError> {
        self.call_as(Method::Exec(params)).await
    }

    /// [`Method::Projects`].
    pub async fn projects(&self) -> Result<Vec<ProjectSummary>, ClientError> {
        self.call_as(Method::Projects).await
    }

    /// [`Method::DaemonStatus`].
    pub async fn daemon_status(&self) -> Result<DaemonInfo, ClientError> {
        self.call_as(Method::DaemonStatus).await
    }

    /// [`Method::DaemonStop`]: the daemon answers, then exits; services keep running.
    pub async fn daemon_stop(&self) -> Result<(), ClientError> {
        self.call(Method::DaemonStop).await.map(|_| ())
    }
}

async fn read_welcome(ws: &mut Ws) -> Result<Welcome, ClientError> {
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(ClientError::Protocol(format!("during handshake: {e}"))),
            None => return Err(ClientError::Disconnected),
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(ClientError::Disconnected),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
        };
        return match serde_json::from_str::<ServerMessage>(text.as_str()) {
            Ok(ServerMessage::Welcome(w)) => Ok(w),
            Ok(ServerMessage::Rejected { error }) => Err(ClientError::Rejected(error)),
            Ok(other) => Err(ClientError::Protocol(format!(
                "expected a welcome, got {other:?}"
            ))),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        };
    }
}

/// The connection's background work: writes queued messages, reads and
/// dispatches the daemon's messages. Ends when the connection closes.
async fn drive(ws: Ws, outgoing: async_channel::Receiver<Message>, inner: std::sync::Weak<Inner>) {
    let (mut tx, mut rx) = ws.split();
    let reader_inner = inner.clone();
    let reader = async move {
        while let Some(msg) = rx.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some(inner) = reader_inner.upgrade() else {
                break;
            };
            let Ok(msg) = serde_json::from_str::<ServerMessage>(text.as_str()) else {
                continue;
            };
            let Ok(mut pending) = inner.pending.lock() else {
                break;
            };
            match msg {
                ServerMessage::Item { id, item } => {
                    if let Some(tx) = pending.get(&id) {
                        let _ = tx.try_send(Event::Item(item));
                    }
                }
                ServerMessage::Response(r) => {
                    if let Some(tx) = pending.remove(&r.id) {
                        let _ = tx.try_send(Event::Done(r.outcome));
                    }
                }
                ServerMessage::Welcome(_) | ServerMessage::Rejected { .. } => {}
            }
        }
        if let Some(inner) = reader_inner.upgrade() {
            inner.fail_all();
        }
    };
    let writer = async move {
        while let Ok(msg) = outgoing.recv().await {
            if tx.send(msg).await.is_err() {
                break;
            }
        }
        let _ = tx.close(None).await;
    };
    // The writer ends when every Client is dropped (or the reader closed
    // the queue); the reader when the daemon closes the connection.
    future::zip(reader, writer).await;
    if let Some(inner) = inner.upgrade() {
        inner.fail_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.outgoing.close();
    }
}

/// The items of a streamed request. Ends (`None`) after the daemon's final
/// answer; a final error is yielded as the last `Err` item. Dropping an
/// unfinished stream cancels the request.
pub struct ResponseStream {
    id: RequestId,
    rx: Pin<Box<async_channel::Receiver<Event>>>,
    client: Client,
    finished: bool,
    result: Option<serde_json::Value>,
}

impl std::fmt::Debug for ResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ResponseStream {
    /// The request id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Asks the daemon to end the stream; it then ends with
    /// [`crate::ErrorCode::Cancelled`]. Does not wait for the answer.
    pub fn cancel(&self) -> Result<(), ClientError> {
        if self.finished {
            return Ok(());
        }
        // The answer to the cancel request itself is not awaited.
        let (cancel_id, _rx) = self
            .client
            .send(Method::Cancel(CancelParams { id: self.id }))?;
        if let Ok(mut p) = self.client.inner.pending.lock() {
            p.remove(&cancel_id);
        }
        Ok(())
    }

    /// The final result, once the stream has ended successfully.
    pub fn result(&self) -> Option<&serde_json::Value> {
        self.result.as_ref()
    }
}

impl Stream for ResponseStream {
    type Item = Result<StreamItem, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match Stream::poll_next(self.rx.as_mut(), cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Event::Item(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Some(Event::Done(Outcome::Result(v)))) => {
                self.finished = true;
                self.result = Some(v);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Event::Done(Outcome::Error(e)))) => {
                self.finished = true;
                Poll::Ready(Some(Err(ClientError::Remote(e))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(ClientError::Disconnected)))
            }
        }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.cancel();
            if let Ok(mut p) = self.client.inner.pending.lock() {
                p.remove(&self.id);
            }
        }
    }
}
