//! The HTTP core: one hyper HTTP/1 connection per request over a [`Transport`],
//! driven by whoever polls the response (no executor is needed).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use futures_lite::future::poll_fn;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Incoming};
use serde::de::DeserializeOwned;
use smol_hyper::rt::FuturesIo;

use crate::error::{DockerError, Result};
use crate::transport::{BoxIo, Transport};

/// The newest Engine API version this client speaks.
pub const MAX_API_VERSION: ApiVersion = ApiVersion(1, 43);
/// The oldest Engine API version this client accepts (Docker 19.03).
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 40);

/// An Engine API version, e.g. `1.41`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    /// Parses `1.41`.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.trim().split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A request body.
pub(crate) type ReqBody = BoxBody<Bytes, io::Error>;

pub(crate) fn empty_body() -> ReqBody {
    Full::new(Bytes::new()).map_err(|n| match n {}).boxed()
}

pub(crate) fn json_body(v: &serde_json::Value) -> ReqBody {
    Full::new(Bytes::from(v.to_string()))
        .map_err(|n| match n {})
        .boxed()
}

type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// A response body that drives its own connection while it is read.
pub(crate) struct DrivenBody {
    conn: Option<ConnFuture>,
    body: Incoming,
    _sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    endpoint: String,
    path: String,
}

impl DrivenBody {
    /// The next chunk of data, `None` at the end.
    pub(crate) async fn chunk(&mut self) -> Option<Result<Bytes>> {
        poll_fn(|cx| {
            if let Some(conn) = self.conn.as_mut()
                && conn.as_mut().poll(cx).is_ready()
            {
                // A connection error also surfaces as an error of the body.
                self.conn = None;
            }
            loop {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if data.is_empty() {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Some(Err(DockerError::Http {
                            endpoint: self.endpoint.clone(),
                            path: self.path.clone(),
                            source: e,
                        })));
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    }

    /// The whole body.
    pub(crate) async fn bytes(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    /// The whole body, decoded from JSON.
    pub(crate) async fn json<T: DeserializeOwned>(self) -> Result<T> {
        let path = self.path.clone();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|source| DockerError::Decode { path, source })
    }

    /// The body as a stream of newline-separated JSON values.
    pub(crate) fn json_lines(self) -> JsonLines {
        JsonLines {
            body: self,
            buf: Vec::new(),
            done: false,
        }
    }
}

/// Newline-delimited JSON values read from a streamed body.
pub(crate) struct JsonLines {
    body: DrivenBody,
    buf: Vec<u8>,
    done: bool,
}

impl JsonLines {
    /// The next value, `None` at the end of the stream.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return Some(
                    serde_json::from_slice(line).map_err(|source| DockerError::Decode {
                        path: self.body.path.clone(),
                        source,
                    }),
                );
            }
            if self.done {
                let rest = std::mem::take(&mut self.buf);
                let rest = rest.trim_ascii();
                if rest.is_empty() {
                    return None;
                }
                return Some(
                    serde_json::from_slice(rest).map_err(|source| DockerError::Decode {
                        path: self.body.path.clone(),
                        source,
                    }),
                );
            }
            match self.body.chunk().await {
                Some(Ok(c)) => self.buf.extend_from_slice(&c),
                Some(Err(e)) => {
                    self.done = true;
                    self.buf.clear();
                    return Some(Err(e));
                }
                None => self.done = true,
            }
        }
    }
}

/// A failed exchange: either no answer, or an error status with the engine's message.
pub(crate) enum Failure {
    /// Transport or protocol failure.
    Transport(DockerError),
    /// The engine answered with an error status.
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The `message` of the JSON error body (or the raw body).
        message: String,
    },
}

impl Failure {
    /// The default mapping: 404 is "not found" for `what`, anything else an API error.
    pub(crate) fn into_error(self, method: &Method, path: &str, what: &str) -> DockerError {
        match self {
            Failure::Transport(e) => e,
            Failure::Status { status, message } if status == StatusCode::NOT_FOUND => {
                DockerError::NotFound {
                    what: what.to_owned(),
                    message,
                }
            }
            Failure::Status { status, message } => DockerError::Api {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                message,
            },
        }
    }
}

impl From<DockerError> for Failure {
    fn from(e: DockerError) -> Self {
        Failure::Transport(e)
    }
}

/// A client of one Docker Engine.
///
/// Cheap to clone; every call opens its own connection, so calls can run
/// concurrently and long streams never block other calls.
#[derive(Debug, Clone)]
pub struct Docker {
    transport: Transport,
    version: ApiVersion,
}

impl Docker {
    /// Connects to the engine `DOCKER_HOST` names (default: the unix socket
    /// `/var/run/docker.sock`) and negotiates the API version.
    pub async fn from_env() -> Result<Docker> {
        Docker::connect(Transport::from_env()?).await
    }

    /// Connects through `transport` and negotiates the API version: the lower of
    /// [`MAX_API_VERSION`] and the engine's.
    pub async fn connect(transport: Transport) -> Result<Docker> {
        let mut docker = Docker {
            transport,
            version: MAX_API_VERSION,
        };
        let v = docker.version_unversioned().await?;
        let server = ApiVersion::parse(&v.api_version).ok_or_else(|| DockerError::Api {
            method: "GET".into(),
            path: "/version".into(),
            status: 200,
            message: format!("unparsable ApiVersion `{}`", v.api_version),
        })?;
        if server < MIN_API_VERSION {
            return Err(DockerError::Api {
                method: "GET".into(),
                path: "/version".into(),
                status: 200,
                message: format!(
                    "the engine speaks API {server}, older than the oldest supported ({MIN_API_VERSION})"
                ),
            });
        }
        docker.version = server.min(MAX_API_VERSION);
        Ok(docker)
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> ApiVersion {
        self.version
    }

    /// How the engine is reached.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    async fn version_unversioned(&self) -> Result<crate::system::Version> {
        let (status, body) = self
            .exchange(Method::GET, "/version".into(), empty_body(), None)
            .await?;
        if !status.is_success() {
            let message = String::from_utf8_lossy(&body.bytes().await?).into_owned();
            return Err(DockerError::Api {
                method: "GET".into(),
                path: "/version".into(),
                status: status.as_u16(),
                message,
            });
        }
        body.json().await
    }

    /// Sends one request to the versioned path (`path` starts with `/`, may hold a query).
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> std::result::Result<DrivenBody, Failure> {
        let uri = format!("/v{}{}", self.version, path);
        let (status, body) = self.exchange(method, uri, body, content_type).await?;
        if status.is_success() || status.is_redirection() {
            return Ok(body);
        }
        let raw = body.bytes().await?;
        #[derive(serde::Deserialize)]
        struct Msg {
            message: String,
        }
        let message = match serde_json::from_slice::<Msg>(&raw) {
            Ok(m) => m.message,
            Err(_) => String::from_utf8_lossy(&raw).trim().to_owned(),
        };
        Err(Failure::Status { status, message })
    }

    /// `request` with the default error mapping.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        what: &str,
    ) -> Result<DrivenBody> {
        let ct = Some("application/json");
        self.request(method.clone(), path, body, ct)
            .await
            .map_err(|f| f.into_error(&method, path, what))
    }

    async fn exchange(
        &self,
        method: Method,
        uri: String,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<(StatusCode, DrivenBody)> {
        let endpoint = self.transport.to_string();
        let io: BoxIo = self.transport.connect().await?;
        let http_err = |source| DockerError::Http {
            endpoint: endpoint.clone(),
            path: uri.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(io))
            .await
            .map_err(http_err)?;
        let mut conn: Option<ConnFuture> = Some(Box::pin(conn));
        let mut req = Request::builder()
            .method(method)
            .uri(uri.as_str())
            .header(header::HOST, "docker");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .map_err(|e| DockerError::Invalid(format!("bad request {uri}: {e}")))?;
        let mut resp = std::pin::pin!(sender.send_request(req));
        let resp = poll_fn(|cx| {
            if let Some(c) = conn.as_mut()
                && c.as_mut().poll(cx).is_ready()
            {
                conn = None;
            }
            resp.as_mut().poll(cx)
        })
        .await
        .map_err(http_err)?;
        let status = resp.status();
        Ok((
            status,
            DrivenBody {
                conn,
                body: resp.into_body(),
                _sender: sender,
                endpoint: endpoint.clone(),
                path: uri.clone(),
            },
        ))
    }
}

/// Percent-encodes a query component.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `?a=b&c=d` from pairs (empty string when there are none).
pub(crate) fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_and_parse() {
        assert_eq!(ApiVersion::parse("1.41"), Some(ApiVersion(1, 41)));
        assert!(ApiVersion(1, 41) < ApiVersion(1, 43));
        assert!(ApiVersion(1, 9) < ApiVersion(1, 10));
        assert_eq!(ApiVersion::parse("x"), None);
        assert_eq!(ApiVersion(1, 41).to_string(), "1.41");
    }

    #[test]
    fn query_is_percent_encoded() {
        assert_eq!(
            query(&[
                ("filters", r#"{"label":["a=b"]}"#.into()),
                ("t", "5".into())
            ]),
            "?filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&t=5"
        );
        assert_eq!(query(&[]), "");
    }
}
