//! Helpers for end-to-end tests: run the built `harness` binary as a user would, each test
//! in its own project directory and daemon state directory, and clean up afterwards.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `harness` binary under test.
pub fn harness_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harness"))
}

/// Makes sure `harnessd` (and the demo binaries) are built next to `harness`, the way
/// `cargo build --workspace` leaves them: `cargo test -p harness-cli` alone builds only
/// this package's binaries.
pub fn ensure_workspace_binaries() {
    ensure_workspace_binaries_for(None);
}

/// [`ensure_workspace_binaries`] with the cargo profile to build with (`Some("bench")` from a
/// benchmark, whose binaries share `target/release` with the `release` profile); `None`
/// picks `dev` or `release` from where `harness` is.
pub fn ensure_workspace_binaries_for(profile: Option<&str>) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = harness_bin();
        let profile_dir = exe.parent().expect("the binary is in a profile directory");
        let target_dir = profile_dir
            .parent()
            .expect("the profile directory is in a target directory");
        let profile =
            profile.unwrap_or(if profile_dir.file_name().is_some_and(|n| n == "release") {
                "release"
            } else {
                "dev"
            });
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "harnessd", "-p", "harness-demo"])
            .args(["--profile", profile])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let out = cmd.output().expect("cargo runs");
        if !out.status.success() {
            // A binary from an earlier build still lets the tests run; say so loudly.
            assert!(
                profile_dir.join("harnessd").exists(),
                "building harnessd failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "warning: rebuilding harnessd failed, testing the existing binary:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            profile_dir.join("harnessd").exists(),
            "harnessd is not next to harness in {}",
            profile_dir.display()
        );
    });
}

/// The result of one `harness` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless it succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }
}

/// A test's own project directory and state directory; stops its daemon and services on drop.
pub struct Env {
    /// The project directory (the working directory of every run).
    pub dir: tempfile::TempDir,
    /// The daemon's state directory.
    pub state: tempfile::TempDir,
    /// More environment of every run (and so of a daemon a run starts).
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A fresh environment.
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("harness-e2e-")
                .tempdir()
                .expect("temp dir"),
            state: tempfile::Builder::new()
                .prefix("harness-state-")
                .tempdir()
                .expect("temp dir"),
            vars: Vec::new(),
        }
    }

    /// A fresh environment whose daemon will be started (builds harnessd if needed).
    pub fn with_daemon() -> Env {
        ensure_workspace_binaries();
        Env::new()
    }

    /// Writes a file into the project directory; returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write file");
        p
    }

    /// A `harness` command in this environment (not run yet).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(harness_bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("HARNESS_STATE_DIR", self.state.path())
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Runs `harness ARGS` to completion (with a generous deadline).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_within(args, Duration::from_secs(120))
    }

    /// Runs `harness ARGS` to completion with `input` on its stdin (then its end).
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn harness");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        // Written on a thread of its own, so a command that does not read cannot block it.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for harness");
        let _ = writer.join();
        Run::from(out)
    }

    /// Runs `harness ARGS` to completion; kills it and fails the test if it takes longer than `limit`.
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Run {
        self.run_limited(args, limit)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `harness ARGS` to completion; kills it and says so if it takes longer than `limit`.
    pub fn run_limited(&self, args: &[&str], limit: Duration) -> Result<Run, String> {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn harness");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(out) => Ok(Run::from(out.expect("wait for harness"))),
            Err(_) => {
                kill(pid, libc_sigkill());
                Err(format!("harness {args:?} did not finish within {limit:?}"))
            }
        }
    }

    /// The daemon's pid, from its address file.
    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.state.path().join("harnessd.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let r = self.run(&["status", "--json"]).ok();
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", r.stdout))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort, also when the test failed: stop services, then the daemon.
        let mut pids: Vec<u32> = Vec::new();
        if self.daemon_pid().is_some() {
            if let Ok(out) = self.cmd(&["status", "--json"]).output()
                && let Ok(rows) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            {
                pids.extend(
                    rows.iter()
                        .filter_map(|r| r["pid"].as_u64())
                        .map(|p| p as u32),
                );
            }
            let _ = self.cmd(&["down"]).output();
            let _ = self.cmd(&["daemon", "stop"]).output();
            if let Some(pid) = self.daemon_pid()
                && alive(pid)
            {
                kill(pid, libc_sigkill());
            }
        }
        for pid in pids {
            if alive(pid) {
                // Services run in their own process group.
                kill_group(pid);
            }
        }
    }
}

/// SIGKILL's number.
pub fn libc_sigkill() -> i32 {
    9
}

/// Sends `sig` to `pid` (through the `kill` utility: tests need no unsafe code).
pub fn kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs the process group `pgid`.
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .arg("-9")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status();
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sh -c` process service in YAML, indented for the `services:` map. `$` in the script
/// is escaped (`$$`) so it reaches the shell instead of being interpolated at load time.
pub fn sh_service(name: &str, script: &str, extra: &str) -> String {
    let script = script.replace('\'', "''").replace('$', "$$");
    let mut s =
        format!("  {name}:\n    type: process\n    binary: sh\n    args: [\"-c\", '{script}']\n");
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("    ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// A path as a `&str` (temp paths are UTF-8 here).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A `harness` run in the background: its stdout lines as they come, its stderr kept whole.
pub struct Background {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: Vec<String>,
    /// The indices of the lines [`Background::try_line`] returned.
    returned: std::collections::BTreeSet<usize>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that failed half-way leaves no `harness` behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Background {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `timeout`) for a stdout line matching `pred`; panics with what was
    /// seen when none comes.
    #[track_caller]
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.try_line(timeout, pred) {
            Some(l) => l,
            None => {
                let _ = self.child.kill();
                panic!("no such line within {timeout:?}; stdout: {:?}", self.stdout);
            }
        }
    }

    /// Waits (up to `timeout`) for a stdout line matching `pred` that no earlier call
    /// returned; `None` when none comes (the process keeps running).
    pub fn try_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = (0..self.stdout.len())
                .find(|i| !self.returned.contains(i) && pred(&self.stdout[*i]))
            {
                self.returned.insert(i);
                return Some(self.stdout[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.lines.recv_timeout(left).ok()?;
            self.stdout.push(l);
        }
    }

    /// Waits (up to `timeout`) for the process to exit; panics (after killing it) if it
    /// does not.
    #[track_caller]
    pub fn finish(self, timeout: Duration) -> Run {
        self.finish_within(timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (up to `timeout`) for the process to exit; kills it and says so if it does not.
    pub fn finish_within(mut self, timeout: Duration) -> Result<Run, String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait().expect("wait for harness") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    return Err(format!("harness did not exit within {timeout:?}"));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.stdout.extend(self.lines.iter());
        Ok(Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.join("\n"),
            stderr: self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
        })
    }
}

impl Env {
    /// Starts `harness ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Background {
        use std::io::{BufRead, BufReader, Read};
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn harness");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Background {
            child,
            lines,
            stdout: Vec::new(),
            returned: Default::default(),
            stderr: Some(stderr),
        }
    }
}

impl Env {
    /// Runs `harness ARGS` in a new pseudo-terminal of `rows` x `cols` to completion
    /// (within 60 s): everything it wrote to the terminal, and its exit code.
    pub fn run_in_pty(&self, args: &[&str], rows: u16, cols: u16) -> (String, u32) {
        use portable_pty::{CommandBuilder, PtySize, native_pty_system};
        use std::io::Read;
        let pty = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(harness_bin());
        cmd.args(args);
        cmd.cwd(self.dir.path());
        cmd.env("HARNESS_STATE_DIR", self.state.path());
        let mut child = pty.slave.spawn_command(cmd).expect("spawn harness");
        drop(pty.slave);
        let mut reader = pty
            .master
            .try_clone_reader()
            .expect("the terminal's output");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = reader.read_to_end(&mut all);
            let _ = tx.send(all);
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for harness") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("harness {args:?} did not end within 60s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(pty.master);
        let out = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        (
            String::from_utf8_lossy(&out).into_owned(),
            status.exit_code(),
        )
    }
}

/// A `services.yaml` of project `name` with `sh -c` services: (name, script, extra
/// configuration) each, as [`sh_service`] writes them.
pub fn sh_project(name: &str, services: &[(&str, &str, &str)]) -> String {
    let mut y = format!("name: {name}\nservices:\n");
    for (service, script, extra) in services {
        y += &sh_service(service, script, extra);
    }
    y
}
