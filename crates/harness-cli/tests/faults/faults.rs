//! The faults: which kinds there are, how one is drawn from a seeded RNG
//! (kind, moment, details) and how it is done to a running project.

use std::fmt;
use std::time::Duration;

use fastrand::Rng;

use crate::disk::{Damage, fill};
use crate::trial::{HANG, LOCAL, SERVICES, Trial, UP};

/// The kinds of fault, as counted in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    KillDuringUp,
    KillDuringDown,
    KillDuringRestart,
    DamagedState,
    FullDisk,
    ConcurrentClients,
    NodeCut,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::KillDuringUp,
        Kind::KillDuringDown,
        Kind::KillDuringRestart,
        Kind::DamagedState,
        Kind::FullDisk,
        Kind::ConcurrentClients,
        Kind::NodeCut,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::KillDuringUp => "kill -9 during up",
            Kind::KillDuringDown => "kill -9 during down",
            Kind::KillDuringRestart => "kill -9 during restart",
            Kind::DamagedState => "damaged state.json",
            Kind::FullDisk => "full disk",
            Kind::ConcurrentClients => "concurrent clients",
            Kind::NodeCut => "node cut off",
        }
    }
}

/// A verb of the CLI a fault hits or a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Up,
    Down,
    /// `restart` of these services.
    Restart(Vec<&'static str>),
    Status,
}

impl Verb {
    fn args(&self) -> Vec<&'static str> {
        match self {
            Verb::Up => UP.to_vec(),
            Verb::Down => vec!["down"],
            Verb::Status => vec!["status", "--json"],
            Verb::Restart(s) => std::iter::once("restart")
                .chain(s.iter().copied())
                .collect(),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verb::Up => f.write_str("up"),
            Verb::Down => f.write_str("down"),
            Verb::Restart(s) => write!(f, "restart {}", s.join(" ")),
            Verb::Status => f.write_str("status"),
        }
    }
}

/// When the disk fills up, in relation to `up` (the daemon runs already:
/// one that cannot write its address file does not start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMoment {
    /// Before it.
    Before,
    /// While it runs.
    During,
    /// After it, followed by a restart (so the state must be saved).
    After,
}

/// What happens while the node is cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meanwhile {
    Nothing,
    Restart(Vec<&'static str>),
    /// The daemon is killed with SIGKILL and a new one started.
    NewDaemon,
}

/// One fault, drawn from a seed.
#[derive(Debug, Clone)]
pub enum Fault {
    /// SIGKILL of the daemon `after` the verb began (for `up`, after its
    /// daemon answers; `fresh`: `up` starts the daemon itself).
    Kill {
        during: Verb,
        after: Duration,
        fresh: bool,
    },
    /// SIGKILL of the daemon `after` the project is up, then the state file
    /// (and maybe its last-good copy) damaged before a new daemon starts.
    Damage {
        damage: Damage,
        last_good_too: bool,
        after: Duration,
    },
    /// The state directory, a small tmpfs, fills up `after` the moment.
    FullDisk {
        moment: DiskMoment,
        after: Duration,
        restart: Vec<&'static str>,
        /// Whether space comes back before `down`.
        freed_before_down: bool,
    },
    /// Clients sending verbs at once: each a list of (pause, verb).
    Concurrent { clients: Vec<Vec<(Duration, Verb)>> },
    /// The node cut off its network `after` `up` began (or ended), for `hold`.
    NodeCut {
        during_up: bool,
        after: Duration,
        hold: Duration,
        meanwhile: Meanwhile,
    },
}

fn millis(rng: &mut Rng, max: u64) -> Duration {
    Duration::from_millis(rng.u64(0..=max))
}

/// All of `from` or a few of them, in their order.
fn some_of(rng: &mut Rng, from: &[&'static str]) -> Vec<&'static str> {
    if rng.bool() {
        return from.to_vec();
    }
    let mut picked: Vec<&'static str> = from.iter().copied().filter(|_| rng.bool()).collect();
    if picked.is_empty() {
        picked.push(from[rng.usize(..from.len())]);
    }
    picked
}

impl Fault {
    /// Draws a fault of `kind`.
    pub fn draw(kind: Kind, rng: &mut Rng) -> Fault {
        match kind {
            Kind::KillDuringUp => Fault::Kill {
                during: Verb::Up,
                after: millis(rng, 1200),
                fresh: rng.bool(),
            },
            Kind::KillDuringDown => Fault::Kill {
                during: Verb::Down,
                after: millis(rng, 1500),
                fresh: false,
            },
            Kind::KillDuringRestart => Fault::Kill {
                during: Verb::Restart(some_of(rng, &SERVICES)),
                after: millis(rng, 1500),
                fresh: false,
            },
            Kind::DamagedState => Fault::Damage {
                damage: [Damage::Truncated, Damage::Garbage, Damage::Empty][rng.usize(..3)],
                last_good_too: rng.bool(),
                after: millis(rng, 1500),
            },
            Kind::FullDisk => Fault::FullDisk {
                moment: [DiskMoment::Before, DiskMoment::During, DiskMoment::After][rng.usize(..3)],
                after: millis(rng, 800),
                restart: some_of(rng, &SERVICES),
                freed_before_down: rng.bool(),
            },
            Kind::ConcurrentClients => {
                let clients = (0..rng.usize(2..=4))
                    .map(|_| {
                        (0..rng.usize(1..=3))
                            .map(|_| {
                                let verb = match rng.usize(..4) {
                                    0 => Verb::Up,
                                    1 => Verb::Down,
                                    2 => Verb::Restart(some_of(rng, &SERVICES)),
                                    _ => Verb::Status,
                                };
                                (millis(rng, 600), verb)
                            })
                            .collect()
                    })
                    .collect();
                Fault::Concurrent { clients }
            }
            Kind::NodeCut => Fault::NodeCut {
                during_up: rng.bool(),
                after: millis(rng, 1000),
                hold: Duration::from_millis(rng.u64(1000..=8000)),
                meanwhile: match rng.usize(..3) {
                    0 => Meanwhile::Nothing,
                    1 => Meanwhile::Restart(some_of(rng, &LOCAL)),
                    _ => Meanwhile::NewDaemon,
                },
            },
        }
    }

    /// The size of the tmpfs the state directory is, if the fault needs one.
    pub fn tmpfs_size(&self) -> Option<&'static str> {
        matches!(self, Fault::FullDisk { .. }).then_some("4m")
    }

    /// Brings the project up and does the fault to it. What it finds wrong
    /// on the way is recorded in `t`.
    pub fn inject(&self, t: &mut Trial) {
        match self {
            Fault::Kill {
                during,
                after,
                fresh,
            } => {
                if *during == Verb::Up {
                    if !fresh && !t.ensure_daemon() {
                        return;
                    }
                } else if !t.expect_ok(&UP) {
                    return;
                }
                let verb = t.env.spawn(&during.args());
                if t.wait_daemon().is_none() {
                    t.violation(format!("no daemon answers for `{during}`"));
                }
                std::thread::sleep(*after);
                t.kill_daemon();
                if let Err(hang) = verb.finish_within(HANG) {
                    t.violation(format!("`{during}` after its daemon was killed: {hang}"));
                }
            }
            Fault::Damage {
                damage,
                last_good_too,
                after,
            } => {
                if !t.expect_ok(&UP) {
                    return;
                }
                std::thread::sleep(*after);
                t.kill_daemon();
                let sd = harness_protocol::StateDir::new(t.state());
                damage.apply(&sd.state_file());
                if *last_good_too {
                    damage.apply(&sd.last_good_state_file());
                }
            }
            Fault::FullDisk {
                moment,
                after,
                restart,
                ..
            } => {
                let filler = t.state().join("filler");
                match moment {
                    DiskMoment::Before => {
                        if !t.ensure_daemon() {
                            return;
                        }
                        std::thread::sleep(*after);
                        fill(&filler);
                        t.expect_ok(&UP);
                    }
                    DiskMoment::During => {
                        // A daemon that cannot write its address file does not start.
                        if !t.ensure_daemon() {
                            return;
                        }
                        let up = t.env.spawn(&UP);
                        std::thread::sleep(*after);
                        fill(&filler);
                        match up.finish_within(HANG) {
                            Ok(r) if r.code != 0 => t.violation(format!(
                                "up on a full disk failed: {}",
                                r.stderr.trim()
                            )),
                            Ok(_) => {}
                            Err(hang) => t.violation(format!("up on a full disk: {hang}")),
                        }
                    }
                    DiskMoment::After => {
                        if !t.expect_ok(&UP) {
                            return;
                        }
                        std::thread::sleep(*after);
                        fill(&filler);
                        t.expect_ok(&Verb::Restart(restart.clone()).args());
                        // The state changed and cannot be saved: status says so.
                        let shown = (0..50).any(|_| {
                            std::thread::sleep(Duration::from_millis(200));
                            t.status_warnings().contains("cannot save its state")
                        });
                        if !shown {
                            t.violation("status shows no warning that the state cannot be saved");
                        }
                    }
                }
            }
            Fault::Concurrent { clients } => {
                if !t.expect_ok(&UP) {
                    return;
                }
                let hangs: Vec<String> = std::thread::scope(|s| {
                    let env = &t.env;
                    let running: Vec<_> = clients
                        .iter()
                        .map(|ops| {
                            s.spawn(move || {
                                let mut hangs = Vec::new();
                                for (pause, verb) in ops {
                                    std::thread::sleep(*pause);
                                    if let Err(hang) = env.run_limited(&verb.args(), HANG) {
                                        hangs.push(format!("`{verb}` hung: {hang}"));
                                    }
                                }
                                hangs
                            })
                        })
                        .collect();
                    running
                        .into_iter()
                        .flat_map(|h| h.join().expect("a client thread"))
                        .collect()
                });
                for h in hangs {
                    t.violation(h);
                }
            }
            Fault::NodeCut {
                during_up,
                after,
                hold,
                meanwhile,
            } => {
                let up = if *during_up {
                    Some(t.env.spawn(&UP))
                } else if t.expect_ok(&UP) {
                    None
                } else {
                    return;
                };
                std::thread::sleep(*after);
                let cut = t.cut_node();
                match meanwhile {
                    Meanwhile::Nothing => {}
                    Meanwhile::Restart(services) => {
                        let verb = Verb::Restart(services.clone());
                        if let Err(hang) = t.harness(&verb.args()) {
                            t.violation(format!("`{verb}` while the node is cut off: {hang}"));
                        }
                    }
                    Meanwhile::NewDaemon => {
                        t.kill_daemon();
                        t.ensure_daemon();
                    }
                }
                std::thread::sleep(*hold);
                drop(cut);
                if let Some(up) = up
                    && let Err(hang) = up.finish_within(HANG)
                {
                    t.violation(format!("`up` while the node was cut off: {hang}"));
                }
            }
        }
    }

    /// What the fault does just before `down`, if anything.
    pub fn before_down(&self, t: &mut Trial) {
        if let Fault::FullDisk {
            freed_before_down: true,
            ..
        } = self
        {
            let _ = std::fs::remove_file(t.state().join("filler"));
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill {
                during,
                after,
                fresh,
            } => {
                write!(f, "kill -9 of the daemon {after:?} into `{during}`")?;
                if *during == Verb::Up && *fresh {
                    f.write_str(" (started by it)")?;
                }
                Ok(())
            }
            Fault::Damage {
                damage,
                last_good_too,
                after,
            } => write!(
                f,
                "kill -9 {after:?} after up, state.json {damage:?}{}",
                if *last_good_too {
                    " and its last-good copy too"
                } else {
                    ""
                }
            ),
            Fault::FullDisk {
                moment,
                after,
                restart,
                freed_before_down,
            } => {
                let when = match moment {
                    DiskMoment::Before => "after the daemon started, before `up`",
                    DiskMoment::During => "into `up`",
                    DiskMoment::After => "after `up`",
                };
                write!(f, "disk filled {after:?} {when}")?;
                if *moment == DiskMoment::After {
                    write!(f, " then `{}`", Verb::Restart(restart.clone()))?;
                }
                if *freed_before_down {
                    f.write_str(", freed before down")?;
                }
                Ok(())
            }
            Fault::Concurrent { clients } => {
                let c: Vec<String> = clients
                    .iter()
                    .map(|ops| {
                        let o: Vec<String> = ops
                            .iter()
                            .map(|(p, v)| format!("{}ms {v}", p.as_millis()))
                            .collect();
                        format!("[{}]", o.join(", "))
                    })
                    .collect();
                write!(f, "{} clients at once: {}", clients.len(), c.join(" "))
            }
            Fault::NodeCut {
                during_up,
                after,
                hold,
                meanwhile,
            } => write!(
                f,
                "node cut off {after:?} {} for {hold:?}, meanwhile {meanwhile:?}",
                if *during_up { "into up" } else { "after up" }
            ),
        }
    }
}
