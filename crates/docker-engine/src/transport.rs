//! How the client reaches an engine: a unix socket, plain TCP, or the stdio of a
//! command such as `ssh NODE docker system dial-stdio`.
//!
//! Every request opens a fresh connection through a [`Transport`], so a
//! long-running stream (events, `logs --follow`) never blocks other calls.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::DockerError;

/// A byte stream to the engine.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed connection to the engine.
pub type BoxIo = Box<dyn Io>;

/// Where the engine listens, and how to open a connection to it.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket, e.g. `/var/run/docker.sock`.
    Unix(PathBuf),
    /// Plain TCP (`tcp://host:port`, no TLS).
    Tcp(String),
    /// The stdin/stdout of a command that speaks to the engine, e.g.
    /// `["ssh", "node1", "docker", "system", "dial-stdio"]`.
    Command(Vec<String>),
}

/// The default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl Transport {
    /// The transport `DOCKER_HOST` names, or the default unix socket when it is unset.
    pub fn from_env() -> Result<Transport, DockerError> {
        match std::env::var("DOCKER_HOST") {
            Ok(v) if !v.trim().is_empty() => Transport::parse(v.trim()),
            _ => Ok(Transport::Unix(PathBuf::from(DEFAULT_SOCKET))),
        }
    }

    /// Parses a `DOCKER_HOST` value: `unix:///path`, `tcp://host:port` or
    /// `ssh://[user@]host[:port]` (through `docker system dial-stdio` on that host).
    pub fn parse(host: &str) -> Result<Transport, DockerError> {
        let bad = |why: &str| DockerError::BadHost {
            host: host.to_owned(),
            reason: why.to_owned(),
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("the socket path is empty"));
            }
            Ok(Transport::Unix(PathBuf::from(path)))
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() {
                return Err(bad("the address is empty"));
            }
            let addr = if addr.contains(':') {
                addr.to_owned()
            } else {
                format!("{addr}:2375")
            };
            Ok(Transport::Tcp(addr))
        } else if let Some(rest) = host.strip_prefix("ssh://") {
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() {
                return Err(bad("the host is empty"));
            }
            let mut argv = vec!["ssh".to_owned()];
            let (target, port) = match rest.rsplit_once(':') {
                Some((t, p)) if p.parse::<u16>().is_ok() => (t, Some(p)),
                _ => (rest, None),
            };
            if let Some(p) = port {
                argv.push("-p".into());
                argv.push(p.into());
            }
            argv.extend(
                ["--", target, "docker", "system", "dial-stdio"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            Ok(Transport::Command(argv))
        } else if host.starts_with('/') {
            Ok(Transport::Unix(PathBuf::from(host)))
        } else {
            Err(bad("use unix:///path, tcp://host:port or ssh://user@host"))
        }
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<BoxIo, DockerError> {
        let unreachable = |source: io::Error| DockerError::Unreachable {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Transport::Unix(path) => {
                let s = async_net::unix::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?;
                Ok(Box::new(s))
            }
            Transport::Tcp(addr) => {
                let s = async_net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(unreachable)?;
                Ok(Box::new(s))
            }
            Transport::Command(argv) => {
                let (prog, args) = argv.split_first().ok_or_else(|| {
                    unreachable(io::Error::new(io::ErrorKind::InvalidInput, "empty command"))
                })?;
                let mut child = async_process::Command::new(prog)
                    .args(args)
                    .stdin(async_process::Stdio::piped())
                    .stdout(async_process::Stdio::piped())
                    .stderr(async_process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(unreachable)?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err(unreachable(io::Error::other("child stdio not piped")));
                };
                let stderr = child.stderr.take();
                Ok(Box::new(ChildIo {
                    _child: child,
                    stdin: Some(stdin),
                    stdout,
                    stderr,
                    stderr_text: Vec::new(),
                    got_any: false,
                }))
            }
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Unix(p) => write!(f, "unix://{}", p.display()),
            Transport::Tcp(a) => write!(f, "tcp://{a}"),
            Transport::Command(argv) => write!(f, "`{}`", argv.join(" ")),
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A child process's stdout (read) and stdin (write) as one stream; the child
/// is killed when the stream is dropped. If the child ends before writing a
/// single byte (e.g. ssh cannot reach the host), reading fails with what it
/// wrote to stderr.
struct ChildIo {
    _child: async_process::Child,
    /// Gone once closed: the command then reads the end of its input.
    stdin: Option<async_process::ChildStdin>,
    stdout: async_process::ChildStdout,
    stderr: Option<async_process::ChildStderr>,
    stderr_text: Vec<u8>,
    got_any: bool,
}

/// How much of a failing command's stderr is kept for the error.
const STDERR_KEEP: usize = 4096;

impl AsyncRead for ChildIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.stdout).poll_read(cx, buf) {
            Poll::Ready(Ok(0)) if !this.got_any && !buf.is_empty() => {
                // Ended before answering: collect its stderr for the error.
                while let Some(err) = this.stderr.as_mut() {
                    let mut chunk = [0u8; 1024];
                    match Pin::new(err).poll_read(cx, &mut chunk) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => this.stderr = None,
                        Poll::Ready(Ok(n)) => {
                            let room = STDERR_KEEP.saturating_sub(this.stderr_text.len());
                            this.stderr_text.extend_from_slice(&chunk[..n.min(room)]);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                let text = String::from_utf8_lossy(&this.stderr_text);
                let text = text.trim();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    if text.is_empty() {
                        "the command ended without answering".to_owned()
                    } else {
                        format!("the command ended without answering: {text}")
                    },
                )))
            }
            Poll::Ready(Ok(n)) => {
                this.got_any |= n > 0;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

impl AsyncWrite for ChildIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    /// Flushes and closes the command's stdin (like a socket's shutdown of writing):
    /// reading goes on.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(stdin) = self.stdin.as_mut() {
            std::task::ready!(Pin::new(stdin).poll_close(cx))?;
        }
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_host_forms() {
        assert_eq!(
            Transport::parse("unix:///run/docker.sock").unwrap(),
            Transport::Unix("/run/docker.sock".into())
        );
        assert_eq!(
            Transport::parse("tcp://10.0.0.2").unwrap(),
            Transport::Tcp("10.0.0.2:2375".into())
        );
        assert_eq!(
            Transport::parse("ssh://me@node1:2222").unwrap(),
            Transport::Command(
                [
                    "ssh",
                    "-p",
                    "2222",
                    "--",
                    "me@node1",
                    "docker",
                    "system",
                    "dial-stdio"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert!(matches!(
            Transport::parse("npipe:////./pipe/docker"),
            Err(DockerError::BadHost { .. })
        ));
        assert!(Transport::parse("unix://").is_err());
    }
}
