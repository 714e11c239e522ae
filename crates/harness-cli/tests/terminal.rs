//! `harness up` in a real pseudo-terminal, against a real daemon: what the live progress
//! view draws (the screen is read as the terminal receives it, escape sequences removed).

mod support;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use support::{Env, harness_bin, kill, sh_project};

const LONG: Duration = Duration::from_secs(60);

const ROWS: u16 = 30;
const COLS: u16 = 120;

/// The terminal as the user sees it: a terminal emulator fed with everything `harness`
/// writes. Each time the screen changes, any row that draws `forbidden` (a predicate on a
/// row) is recorded, so "never drawn" covers every frame, not only the ones a test polls.
#[derive(Clone)]
struct Screen {
    rows: Arc<Mutex<Vec<String>>>,
    forbidden_seen: Arc<Mutex<Vec<String>>>,
}

impl Screen {
    /// Feeds the terminal from `reader` on a thread of its own until it closes.
    fn follow(mut reader: Box<dyn Read + Send>, forbidden: fn(&str) -> bool) -> Screen {
        let screen = Screen {
            rows: Arc::default(),
            forbidden_seen: Arc::default(),
        };
        let out = screen.clone();
        std::thread::spawn(move || {
            let size = |n| std::num::NonZeroU16::new(n).expect("a terminal has a size");
            let mut parser = vt100::Parser::new(size(ROWS), size(COLS), 0);
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.process(&buf[..n]);
                let rows: Vec<String> = parser.screen().rows(0, COLS).collect();
                out.forbidden_seen
                    .lock()
                    .unwrap()
                    .extend(rows.iter().filter(|r| forbidden(r)).cloned());
                *out.rows.lock().unwrap() = rows;
            }
        });
        screen
    }

    fn rows(&self) -> Vec<String> {
        self.rows.lock().unwrap().clone()
    }

    /// Waits until a row of the screen satisfies `pred`; returns it.
    #[track_caller]
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(r) = self.rows().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "never drawn: {what}; screen:\n{}",
                self.rows().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The elapsed time drawn on a progress line (`850ms`, `2s`, `1m05s`).
fn elapsed_of(line: &str) -> Option<&str> {
    line.split_whitespace().find(|w| {
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == 'm')
            && (w.ends_with("ms") || w.ends_with('s'))
    })
}

#[test]
fn the_progress_view_ticks_shows_output_and_ticks_only_ready_services() {
    let env = Env::with_daemon();
    // `slow` prints a line and never gets ready; `broken` runs (no readiness check) and
    // fails after a while, which ends the waiting.
    let y = sh_project(
        "pty",
        &[
            (
                "slow",
                "echo compiling step 1; exec sleep 300",
                "readiness:\n  command: \"false\"\n  interval: 0.2s",
            ),
            (
                "broken",
                "echo broken output; sleep 3; exit 3",
                "restart: \"no\"",
            ),
        ],
    );
    env.write("services.yaml", &y);

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: ROWS,
            cols: COLS,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut cmd = CommandBuilder::new(harness_bin());
    cmd.args(["up", "--timeout", "60s"]);
    cmd.cwd(env.dir.path());
    cmd.env("HARNESS_STATE_DIR", env.state.path());
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("NO_COLOR");
    cmd.env_remove("CLICOLOR_FORCE");
    let mut child = pty.slave.spawn_command(cmd).expect("spawn harness up");
    drop(pty.slave);
    let reader = pty.master.try_clone_reader().expect("read the terminal");
    let screen = Screen::follow(reader, |row| row.contains('✔'));

    // While `slow` starts: its last output line is on its progress line, and its time ticks.
    let first = screen.wait_for("slow with its output line", |r| {
        r.contains(" slow ") && r.contains("compiling step 1") && !r.contains('|')
    });
    let t1 = elapsed_of(&first)
        .unwrap_or_else(|| panic!("no elapsed time in {first:?}"))
        .to_string();
    let second = screen.wait_for("slow with a later time", |r| {
        r.contains(" slow ")
            && r.contains("compiling step 1")
            && elapsed_of(r).is_some_and(|t| t != t1)
    });
    assert_ne!(
        elapsed_of(&second),
        Some(t1.as_str()),
        "{first:?} / {second:?}"
    );

    // `broken` runs without a readiness check: marked running, not ready.
    screen.wait_for("broken running", |r| r.starts_with("● broken"));
    // Then `broken` fails, which ends the waiting: it is drawn failed, and `slow`, never
    // ready, not ready; neither is ever drawn with ✔.
    screen.wait_for("broken failed", |r| r.starts_with("✖ broken"));
    screen.wait_for("slow not ready", |r| r.starts_with("○ slow"));
    let seen = screen.forbidden_seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "drawn as ready: {seen:?}");

    // Ctrl-C ends the attached `up` (and stops the project).
    if let Some(pid) = child.process_id() {
        kill(pid, 2);
    }
    let deadline = Instant::now() + LONG;
    while child.try_wait().expect("wait for harness").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("harness up did not exit after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
