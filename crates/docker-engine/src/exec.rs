//! Running a command inside a running container (the exec API).

use http::Method;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Docker, empty_body, enc, json_body};
use crate::error::Result;
use crate::logs::LogLine;

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
        let path = format!("/containers/{}/exec", enc(id));
        let mut body = json!({
            "Cmd": cmd,
            "AttachStdout": true,
            "AttachStderr": true,
            "AttachStdin": false,
            "Tty": false,
        });
        if let Some(u) = user {
            body["User"] = json!(u);
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

    /// Runs `cmd` in container `id` to completion: its output and exit code.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        let exec_id = self.exec_create(id, cmd, None).await?;
        let lines = self.exec_start(&exec_id).await?;
        // The output ends when the command does; the exit code follows shortly.
        let mut delay = std::time::Duration::from_millis(2);
        loop {
            let i = self.exec_inspect(&exec_id).await?;
            if !i.running {
                return Ok(ExecOutput {
                    exit_code: i.exit_code.unwrap_or(-1),
                    lines,
                });
            }
            async_io::Timer::after(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_millis(100));
        }
    }
}
