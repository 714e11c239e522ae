//! Running a command inside a running container (the exec API): to completion with its
//! output collected ([`Docker::exec`]), or attached, with stdin and a terminal
//! ([`Docker::exec_attach`], as `docker exec -it` does).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use http::Method;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Docker, empty_body, enc, json_body};
use crate::error::{DockerError, Result};
use crate::logs::LogLine;
use crate::transport::BoxIo;

/// What to run in a container, and how ([`Docker::exec_create_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// Give it a terminal (its output then comes as one raw stream).
    pub tty: bool,
    /// Attach its stdin ([`ExecStream`] writes go to it).
    pub stdin: bool,
    /// Run as this user (default: the container's).
    pub user: Option<String>,
    /// Run in this directory (default: the container's).
    pub working_dir: Option<String>,
    /// `KEY=VALUE` added to the container's environment.
    pub env: Vec<String>,
    /// With `tty`: the terminal's size from the start, rows and columns (engines of API
    /// 1.42 and later; older ones take it with [`Docker::exec_resize`] once started).
    pub console_size: Option<(u16, u16)>,
}

/// The largest response head read before the stream of an attached exec.
const MAX_HEAD: usize = 64 * 1024;

/// The connection of an attached exec ([`Docker::exec_attach`]): reads are its output
/// (raw with a terminal, else frames to split with [`crate::Frames`]), writes go to its
/// stdin, and closing the writing side ends its stdin.
pub struct ExecStream {
    io: BoxIo,
    /// Output read together with the response head, returned first.
    early: Vec<u8>,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream").finish_non_exhaustive()
    }
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.early.is_empty() {
            let n = buf.len().min(this.early.len());
            buf[..n].copy_from_slice(&this.early[..n]);
            this.early.drain(..n);
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// The status code and the value of `Content-Length` of a response head, if it parses.
fn parse_head(head: &[u8]) -> Option<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Some((status, length))
}

/// What `GET /exec/{id}/json` reports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecInspect {
    /// The exec id.
    #[serde(rename = "ID")]
    pub id: String,
    /// True while the command runs.
    pub running: bool,
    /// The exit code once it ended.
    pub exit_code: Option<i64>,
    /// The host PID of the command.
    pub pid: i64,
}

/// The result of [`Docker::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code.
    pub exit_code: i64,
    /// stdout and stderr lines, in order.
    pub lines: Vec<LogLine>,
}

impl ExecOutput {
    /// All stdout text, lines joined with `\n`.
    pub fn stdout(&self) -> String {
        self.text(harness_core::OutputStream::Stdout)
    }

    /// All stderr text, lines joined with `\n`.
    pub fn stderr(&self) -> String {
        self.text(harness_core::OutputStream::Stderr)
    }

    fn text(&self, s: harness_core::OutputStream) -> String {
        self.lines
            .iter()
            .filter(|l| l.line.stream == s)
            .map(|l| l.line.text().into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Docker {
    /// Creates an exec instance of `cmd` in container `id` (stdout and stderr
    /// attached, no TTY); returns the exec id.
    pub async fn exec_create(
        &self,
        id: &str,
        cmd: &[String],
        user: Option<&str>,
    ) -> Result<String> {
        let spec = ExecSpec {
            cmd: cmd.to_vec(),
            user: user.map(str::to_owned),
            ..ExecSpec::default()
        };
        self.exec_create_with(id, &spec).await
    }

    /// Creates an exec instance of `spec` in container `id` (stdout and stderr attached);
    /// returns the exec id. A container that does not run is an error of the engine
    /// (HTTP 409) naming it.
    pub async fn exec_create_with(&self, id: &str, spec: &ExecSpec) -> Result<String> {
        let path = format!("/containers/{}/exec", enc(id));
        let mut body = json!({
            "Cmd": spec.cmd,
            "AttachStdout": true,
            "AttachStderr": true,
            "AttachStdin": spec.stdin,
            "Tty": spec.tty,
        });
        if let Some(u) = &spec.user {
            body["User"] = json!(u);
        }
        if let Some(d) = &spec.working_dir {
            body["WorkingDir"] = json!(d);
        }
        if !spec.env.is_empty() {
            body["Env"] = json!(spec.env);
        }
        if let Some((rows, cols)) = spec.console_size
            && spec.tty
            && self.api_version() >= crate::ApiVersion(1, 42)
        {
            body["ConsoleSize"] = json!([rows, cols]);
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Created {
            id: String,
        }
        let c: Created = self
            .call(
                Method::POST,
                &path,
                json_body(&body),
                &format!("container {id}"),
            )
            .await?
            .json()
            .await?;
        Ok(c.id)
    }

    /// Starts an exec instance and reads its output to the end.
    pub async fn exec_start(&self, exec_id: &str) -> Result<Vec<LogLine>> {
        let path = format!("/exec/{}/start", enc(exec_id));
        let body = self
            .call(
                Method::POST,
                &path,
                json_body(&json!({"Detach": false, "Tty": false})),
                &format!("exec {exec_id}"),
            )
            .await?;
        Docker::log_stream(body, false).collect().await
    }

    /// Inspects an exec instance (running, exit code).
    pub async fn exec_inspect(&self, exec_id: &str) -> Result<ExecInspect> {
        let path = format!("/exec/{}/json", enc(exec_id));
        self.call(Method::GET, &path, empty_body(), &format!("exec {exec_id}"))
            .await?
            .json()
            .await
    }

    /// The exit code of an exec instance whose output has ended (-1 when the engine
    /// does not say): the code follows the end of the output shortly.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<i64> {
        let mut delay = std::time::Duration::from_millis(2);
        loop {
            let i = self.exec_inspect(exec_id).await?;
            if !i.running {
                return Ok(i.exit_code.unwrap_or(-1));
            }
            async_io::Timer::after(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(100));
        }
    }

    /// Runs `cmd` in container `id` to completion: its output and exit code.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        let exec_id = self.exec_create(id, cmd, None).await?;
        let lines = self.exec_start(&exec_id).await?;
        Ok(ExecOutput {
            exit_code: self.exec_exit_code(&exec_id).await?,
            lines,
        })
    }

    /// Starts exec instance `exec_id` attached: the engine hands the connection over
    /// (HTTP upgrade), so what is written to the returned stream reaches the command's
    /// stdin and its output is read from it until the command ends. `tty` must be what the
    /// instance was created with. Then [`Docker::exec_exit_code`] says how it ended.
    pub async fn exec_attach(&self, exec_id: &str, tty: bool) -> Result<ExecStream> {
        let path = format!("/v{}/exec/{}/start", self.api_version(), enc(exec_id));
        let endpoint = self.transport().to_string();
        let broken = |source: io::Error| DockerError::Unreachable {
            endpoint: endpoint.clone(),
            source,
        };
        let body = json!({"Detach": false, "Tty": tty}).to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
             Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut io = self.transport().connect().await?;
        io.write_all(request.as_bytes()).await.map_err(broken)?;
        io.flush().await.map_err(broken)?;
        // The response head, then either the stream or an error body.
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if got.len() > MAX_HEAD {
                return Err(DockerError::Invalid(format!(
                    "the engine's answer to {path} has no end of its head"
                )));
            }
            let n = io.read(&mut chunk).await.map_err(broken)?;
            if n == 0 {
                return Err(broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the engine closed the connection before answering {path}"),
                )));
            }
            got.extend_from_slice(&chunk[..n]);
        };
        let Some((status, length)) = parse_head(&got[..head_end]) else {
            return Err(DockerError::Invalid(format!(
                "the engine's answer to {path} does not parse"
            )));
        };
        let mut rest = got.split_off(head_end);
        if status == 101 || status == 200 {
            return Ok(ExecStream { io, early: rest });
        }
        // An error: its body is a JSON `message`.
        while length.is_none_or(|l| rest.len() < l) && rest.len() <= MAX_HEAD {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        #[derive(Deserialize)]
        struct Msg {
            message: String,
        }
        let message = match serde_json::from_slice::<Msg>(&rest) {
            Ok(m) => m.message,
            Err(_) => String::from_utf8_lossy(&rest).trim().to_owned(),
        };
        Err(if status == 404 {
            DockerError::NotFound {
                what: format!("exec {exec_id}"),
                message,
            }
        } else {
            DockerError::Api {
                method: "POST".into(),
                path,
                status,
                message,
            }
        })
    }

    /// Sets the terminal size of an exec instance created with a TTY.
    pub async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let path = format!("/exec/{}/resize?h={rows}&w={cols}", enc(exec_id));
        self.call(
            Method::POST,
            &path,
            empty_body(),
            &format!("exec {exec_id}"),
        )
        .await?
        .bytes()
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_parse() {
        assert_eq!(
            parse_head(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\n\r\n"),
            Some((101, None))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 409 Conflict\r\ncontent-length: 52\r\n\r\n"),
            Some((409, Some(52)))
        );
        assert_eq!(parse_head(b"garbage"), None);
    }
}
