//! Persistence across real crashes: a child process (this test binary, run
//! again in child mode) writes the registry and is killed with SIGKILL at a
//! chosen point; the parent then reopens the registry.
//!
//! A test binary of its own with `harness = false`, so that the child mode is
//! a plain `main` argument rather than a test that does nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use harness_core::{ServiceKind, ServiceName};
use service_registry::{LoadSource, Location, Registry, RegistrySnapshot, ServiceEntry, StateFile};

const DEADLINE: Duration = Duration::from_secs(30);

fn entry(n: &str) -> ServiceEntry {
    ServiceEntry::new(
        ServiceName::new(n).unwrap(),
        ServiceKind::Process,
        Location::LocalHost,
    )
    .with_ports([80])
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Blocks until the parent kills us.
fn wait_for_death() -> ! {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // The parent never writes; if stdin closes, the parent is gone: exit quietly.
    std::process::exit(3);
}

/// Child modes; each prints progress lines and blocks or loops until killed.
fn child(mode: &str, path: &Path) {
    smol::block_on(async {
        let (r, _) = Registry::open(path).await.unwrap();
        match mode {
            // Commits `committed`, then stages a state with `staged` too (temp file written
            // and fsynced) and is killed before the rename.
            "before-rename" => {
                r.upsert(entry("committed")).await.unwrap();
                let mut next = r.snapshot();
                let staged = entry("staged");
                next.entries.insert(staged.name.clone(), staged);
                let write = r.state_file().unwrap().stage(&next).unwrap();
                say(&format!("staged {}", write.temp_path().display()));
                std::mem::forget(write);
                wait_for_death();
            }
            // Writes as fast as it can; each line acknowledges a committed write.
            "busy" => {
                for i in 0.. {
                    r.upsert(entry(&format!("s{i}"))).await.unwrap();
                    say(&format!("committed {i}"));
                }
            }
            other => panic!("unknown child mode {other}"),
        }
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(mode: &str, path: &Path) -> (Killed, mpsc::Receiver<String>) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out: ChildStdout = c.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Killed(c), rx)
}

fn sigkill(mut c: Killed) {
    c.0.kill().unwrap(); // SIGKILL on Unix
    let status = c.0.wait().unwrap();
    assert!(!status.success());
}

fn killed_between_write_and_rename(dir: &Path) {
    let path = dir.join("registry.json");
    let (c, lines) = spawn_child("before-rename", &path);
    let line = lines
        .recv_timeout(DEADLINE)
        .expect("the child did not stage its write in time");
    let temp = PathBuf::from(line.strip_prefix("staged ").unwrap());
    assert!(temp.exists(), "the staged temp file exists before the kill");
    sigkill(c);

    let (r, report) = smol::block_on(Registry::open(&path)).unwrap();
    assert_eq!(report.source, LoadSource::Primary);
    assert_eq!(report.removed_temp_files, 1);
    assert!(!temp.exists(), "the leftover temp file is removed");
    assert!(r.get("committed").is_some(), "the committed state is kept");
    assert!(
        r.get("staged").is_none(),
        "the interrupted write is not seen"
    );
    println!("ok: killed between write and rename");
}

/// `jitter` delays the kill after the 30th acknowledgement, so that rounds
/// land at different points of a write (before, during and after the renames).
fn killed_while_writing_continuously(dir: &Path, jitter: Duration) {
    let path = dir.join(format!("busy-{}.json", jitter.as_micros()));
    let (c, lines) = spawn_child("busy", &path);
    let mut acked = None;
    while acked.is_none_or(|n| n < 30) {
        let line = lines
            .recv_timeout(DEADLINE)
            .expect("the child did not commit writes in time");
        acked = line
            .strip_prefix("committed ")
            .and_then(|n| n.parse::<u64>().ok());
        // A reader beside the running writer always gets a whole state holding
        // every acknowledged write.
        if let Some(n) = acked {
            let (snap, _) = StateFile::new(&path)
                .load::<RegistrySnapshot>()
                .expect("a reader never fails beside a writer");
            let len = snap
                .expect("the state exists once a write is acked")
                .entries
                .len() as u64;
            assert!(len > n, "reader saw {len} entries after s{n} was acked");
        }
    }
    std::thread::sleep(jitter);
    sigkill(c);
    let last_acked = acked.unwrap();

    let (r, report) = smol::block_on(Registry::open(&path)).unwrap();
    assert!(
        matches!(report.source, LoadSource::Primary | LoadSource::Backup),
        "{report:?}"
    );
    // Every acknowledged write is there, and the state is one the child wrote: s0..=sN.
    let n = r.list().len() as u64;
    assert!(
        n > last_acked,
        "lost acknowledged writes: {n} entries, s{last_acked} acked"
    );
    for i in 0..n {
        assert!(r.get(&format!("s{i}")).is_some(), "s{i} missing of {n}");
    }
    println!(
        "ok: killed while writing continuously, {jitter:?} after an ack ({n} entries, {last_acked} acked, loaded from {:?})",
        report.source
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2], Path::new(&args[3]));
        return;
    }
    // Under `cargo test -- --list` and friends, do nothing.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    killed_between_write_and_rename(dir.path());
    for micros in [0, 300, 700, 1500, 3000, 6000] {
        killed_while_writing_continuously(dir.path(), Duration::from_micros(micros));
    }
}
