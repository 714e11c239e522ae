//! A seeded fault suite: the real `harness` and `harnessd` run a mixed
//! project (three local processes, one forking a child; a container; a
//! process on an sshd node), and again and again, for a time budget, one
//! fault drawn from a seed hits it at a random moment:
//!
//! - the daemon killed with SIGKILL during `up`, `down` or `restart`, and a
//!   new daemon started on the same state directory;
//! - `state.json` (and maybe its last-good copy) truncated, emptied or
//!   garbled while no daemon runs;
//! - a full disk: the state directory is a small tmpfs that fills up;
//! - several clients sending `up`, `down` and `restart` at once;
//! - the node cut off its network, then reconnected.
//!
//! After each fault settles: every process, container and remote process of
//! the project is known to the daemon with the same pid, no service has two,
//! and `status` matches `/proc`, the engine and the node; then `up` brings
//! every service up, and after `down` nothing of the project is left on any
//! host.
//!
//! `HARNESS_FAULT_BUDGET_SECS` sets the budget (default 100 s; a run that
//! began finishes); `HARNESS_FAULT_SEED` replays one seed. Every run prints
//! its seed, every violation names it, and a summary line ends the suite.
//! Skipped with a printed reason when Docker, the test images or ssh are
//! missing; a failure under `HARNESS_REQUIRE_DOCKER=1`/`HARNESS_REQUIRE_SSH=1`.
//! The full-disk fault needs to mount a tmpfs: where it cannot, it is left
//! out with a printed reason, a failure under `CI`.

#[path = "../../../harnessd/tests/support/disk.rs"]
mod disk;
mod faults;
#[path = "../../../service-orchestration/tests/remote_support/mod.rs"]
mod remote_support;
#[path = "../support/mod.rs"]
mod support;
mod trial;
mod world;

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use faults::{Fault, Kind};
use remote_support::{Nodes, docker, nodes_available, required};
use trial::Trial;

/// The default time budget (new runs begin until it is spent).
const DEFAULT_BUDGET: Duration = Duration::from_secs(100);
/// The image of the container service.
const IMAGE: &str = "harness-test/busybox:latest";

/// `HARNESS_FAULT_BUDGET_SECS` and `HARNESS_FAULT_SEED`.
struct Config {
    budget: Duration,
    seed: Option<u64>,
}

impl Config {
    fn from_env() -> Config {
        let budget = match std::env::var("HARNESS_FAULT_BUDGET_SECS") {
            Ok(v) => Duration::from_secs(v.trim().parse().unwrap_or_else(|e| {
                panic!("HARNESS_FAULT_BUDGET_SECS={v:?} is not a number of seconds: {e}")
            })),
            Err(_) => DEFAULT_BUDGET,
        };
        let seed = std::env::var("HARNESS_FAULT_SEED").ok().map(|v| {
            let t = v.trim();
            let parsed = match t.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|e| {
                panic!("HARNESS_FAULT_SEED={v:?} is not a number (decimal or 0x hex): {e}")
            })
        });
        Config { budget, seed }
    }
}

/// What the suite did and found.
#[derive(Default)]
struct Figures {
    runs: usize,
    faults: BTreeMap<Kind, usize>,
    violations: Vec<String>,
}

impl Figures {
    fn summary(&self, wall: Duration, left_out: &[(Kind, String)]) -> String {
        let faults: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {}", k.label(), self.faults.get(k).unwrap_or(&0)))
            .collect();
        let mut line = format!(
            "fault suite: {} runs in {:.0}s; faults: {}; {} invariant violations",
            self.runs,
            wall.as_secs_f64(),
            faults.join(", "),
            self.violations.len()
        );
        for (k, why) in left_out {
            line.push_str(&format!(" ({} left out: {why})", k.label()));
        }
        line
    }
}

/// True when the container image is here; otherwise prints why the suite is
/// skipped (or panics when Docker is required).
fn image_available() -> bool {
    if docker(&["image", "inspect", IMAGE]).is_ok() {
        return true;
    }
    let why = format!("the image {IMAGE} is missing (run docker-test-env/build.sh)");
    if required() {
        panic!("{why}, and HARNESS_REQUIRE_DOCKER/HARNESS_REQUIRE_SSH is set");
    }
    eprintln!("skipping: {why}");
    false
}

/// Whether a tmpfs can be mounted here (for the full-disk fault): why not.
fn tmpfs_unavailable() -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    match disk::Tmpfs::mount(&dir.path().join("probe"), "1m") {
        Ok(_) => None,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("cannot mount a tmpfs for the full-disk fault under CI: {why}")
        }
        Err(why) => {
            eprintln!("leaving out the full-disk fault: cannot mount a tmpfs ({why})");
            Some(format!("cannot mount a tmpfs: {why}"))
        }
    }
}

/// One run: draws the fault from `seed`, brings the project up, does the
/// fault, checks. The violations it found.
fn run(seed: u64, kinds: &[Kind], nodes: &Nodes, n: usize) -> (Kind, Vec<String>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let kind = kinds[rng.usize(..kinds.len())];
    let fault = Fault::draw(kind, &mut rng);
    eprintln!(
        "[faults] run {n}: seed {seed:#018x} (HARNESS_FAULT_SEED={seed:#x} replays it): {fault}"
    );
    let mut t = match Trial::new(seed, fault.to_string(), nodes, fault.tmpfs_size()) {
        Ok(t) => t,
        Err(why) => {
            return (
                kind,
                vec![format!("seed {seed:#018x} ({fault}): cannot set up: {why}")],
            );
        }
    };
    fault.inject(&mut t);
    if t.ensure_daemon() {
        t.check("after the fault");
        t.up_and_check("up after the fault");
        fault.before_down(&mut t);
        t.down_and_check_gone();
    }
    (kind, t.violations().to_vec())
}

#[test]
fn seeded_faults_leave_no_service_untracked_doubled_or_behind() {
    if !nodes_available() || !image_available() {
        return;
    }
    support::ensure_workspace_binaries();
    let config = Config::from_env();
    let mut left_out = Vec::new();
    if let Some(why) = tmpfs_unavailable() {
        left_out.push((Kind::FullDisk, why));
    }
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !left_out.iter().any(|(l, _)| l == k))
        .collect();
    let nodes = Nodes::start(1);
    nodes.wait_answering();

    let began = Instant::now();
    let mut figures = Figures::default();
    loop {
        let seed = match config.seed {
            Some(s) if figures.runs == 0 => s,
            Some(_) => break,
            None if figures.runs > 0 && began.elapsed() >= config.budget => break,
            None => fastrand::u64(..),
        };
        figures.runs += 1;
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| run(seed, &kinds, &nodes, figures.runs)));
        match outcome {
            Ok((kind, violations)) => {
                *figures.faults.entry(kind).or_default() += 1;
                figures.violations.extend(violations);
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                figures
                    .violations
                    .push(format!("seed {seed:#018x}: the run panicked: {what}"));
            }
        }
    }
    let summary = figures.summary(began.elapsed(), &left_out);
    // Past the test harness's capture, so a passing run shows its figures too.
    let _ = writeln!(std::io::stderr(), "{summary}");
    assert!(
        figures.violations.is_empty(),
        "{summary}:\n{}",
        figures.violations.join("\n")
    );
}
