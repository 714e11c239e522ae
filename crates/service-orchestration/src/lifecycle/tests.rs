use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_core::{ExitStatus, ServiceName, ServiceState};
use proptest::prelude::*;

use super::*;

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn policy() -> LifecyclePolicy {
    LifecyclePolicy {
        restart: RestartMode::OnFailure,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        },
        max_restarts: Some(3),
        job: false,
        success_exit_codes: vec![],
        has_readiness: true,
        has_liveness: true,
        startup_timeout: Some(Duration::from_secs(5)),
        stop_signal: harness_core::Signal::TERM,
        stop_grace: Duration::from_secs(1),
    }
}

fn lc_in(phase: Phase, now: Instant) -> ServiceLifecycle {
    let mut lc = ServiceLifecycle::new(Arc::new(policy()), 7);
    lc.ready_in_run = matches!(phase, Phase::Healthy | Phase::Unhealthy);
    lc.phase = phase;
    lc.run_started = Some(now);
    lc
}

fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("start", Event::StartRequested { unmet: vec![] }),
        (
            "start[a]",
            Event::StartRequested {
                unmet: vec![name("a")],
            },
        ),
        ("ready(a)", Event::DependencyReady(name("a"))),
        (
            "depfail(a)",
            Event::DependencyFailed {
                dep: name("a"),
                reason: "boom".into(),
            },
        ),
        ("spawned", Event::Spawned),
        ("spawnfail", Event::SpawnFailed("no such file".into())),
        ("rpass", Event::ReadinessPassed),
        ("rfail", Event::ReadinessFailed),
        ("lfail", Event::LivenessFailed),
        ("exit0", Event::Exited(ExitStatus::Code(0))),
        ("exit1", Event::Exited(ExitStatus::Code(1))),
        ("timeout", Event::StartupTimeout { last_check: None }),
        ("backoff", Event::BackoffElapsed),
        ("stop", Event::StopRequested),
        ("stopdone", Event::StopCompleted),
        (
            "adopted",
            Event::Adopted {
                running_for: Duration::ZERO,
            },
        ),
        ("lost", Event::Lost("gone".into())),
        (
            "unreach",
            Event::Unreachable("node `n1` is unreachable".into()),
        ),
        ("reach", Event::Reachable),
    ]
}

fn phases(now: Instant) -> Vec<(&'static str, Phase)> {
    vec![
        ("pending", Phase::Pending),
        (
            "waiting",
            Phase::Waiting {
                on: VecDeque::from(vec![name("a")]),
            },
        ),
        ("starting", Phase::Starting),
        ("running", Phase::Running),
        ("healthy", Phase::Healthy),
        ("unhealthy", Phase::Unhealthy),
        (
            "stopping(stop)",
            Phase::Stopping {
                then: AfterStop::Stop,
            },
        ),
        (
            "stopping(restart)",
            Phase::Stopping {
                then: AfterStop::Restart {
                    reason: "liveness".into(),
                },
            },
        ),
        (
            "stopping(fail)",
            Phase::Stopping {
                then: AfterStop::Fail {
                    reason: "timeout".into(),
                },
            },
        ),
        ("stopped", Phase::Stopped),
        ("completed", Phase::Completed),
        ("failed", Phase::Failed { reason: "x".into() }),
        (
            "restarting",
            Phase::Restarting {
                attempt: 1,
                at: now + Duration::from_millis(100),
                reason: "exited with code 1".into(),
            },
        ),
    ]
}

/// Expected outcome per (phase, event), in the order of `events()`:
/// the next state label, then the effects (Notify excluded) as short codes:
/// sp = Spawn, pr = StartProbes, xp = StopProbes, kill = StopProcess,
/// rs = ScheduleRestart, to = ScheduleTimeout.
#[rustfmt::skip]
const TABLE: &[(&str, [&str; 19])] = &[
    //                  start            start[a]   ready(a)         depfail(a) spawned          spawnfail       rpass      rfail        lfail                exit0           exit1              timeout              backoff          stop                 stopdone  adopted lost unreach reach
    ("pending",         ["starting sp to", "waiting", "pending",     "pending", "pending",       "pending",      "pending", "pending",   "pending",           "pending",      "pending",         "pending",           "pending",       "stopped",           "pending", "running pr", "failed", "pending", "pending"]),
    ("waiting",         ["waiting",      "waiting",   "starting sp to", "failed", "waiting",     "waiting",      "waiting", "waiting",   "waiting",           "waiting",      "waiting",         "waiting",           "waiting",       "stopped",           "waiting", "waiting", "waiting", "waiting", "waiting"]),
    ("starting",        ["starting",     "starting",  "starting",    "starting", "running pr",   "restarting rs", "starting", "starting", "starting",          "completed xp", "restarting xp rs", "stopping xp kill", "starting",      "stopping xp kill",  "starting", "starting", "starting", "unknown", "starting"]),
    ("running",         ["running",      "running",   "running",     "running", "running",       "running",      "healthy pl", "running", "running",  "completed xp", "restarting xp rs", "stopping xp kill", "running",       "stopping xp kill",  "running", "running", "running", "unknown", "running"]),
    ("healthy",         ["healthy",      "healthy",   "healthy",     "healthy", "healthy",       "healthy",      "healthy", "unhealthy", "stopping xp kill",  "completed xp", "restarting xp rs", "healthy",          "healthy",       "stopping xp kill",  "healthy", "healthy", "healthy", "unknown", "healthy"]),
    ("unhealthy",       ["unhealthy",    "unhealthy", "unhealthy",   "unhealthy", "unhealthy",   "unhealthy",    "healthy", "unhealthy", "stopping xp kill",  "completed xp", "restarting xp rs", "unhealthy",        "unhealthy",     "stopping xp kill",  "unhealthy", "unhealthy", "unhealthy", "unknown", "unhealthy"]),
    ("stopping(stop)",  ["stopping",     "stopping",  "stopping",    "stopping", "stopping kill", "stopped",     "stopping", "stopping",  "stopping",          "stopped",      "stopped",         "stopping",          "stopping",      "stopping",          "stopped", "stopping", "stopping", "stopping", "stopping"]),
    ("stopping(restart)", ["stopping",   "stopping",  "stopping",    "stopping", "stopping kill", "restarting rs", "stopping", "stopping", "stopping",         "restarting rs", "restarting rs",  "stopping",          "stopping",      "stopping",          "restarting rs", "stopping", "stopping", "stopping", "stopping"]),
    ("stopping(fail)",  ["stopping",     "stopping",  "stopping",    "stopping", "stopping kill", "failed",      "stopping", "stopping",  "stopping",          "failed",       "failed",          "stopping",          "stopping",      "stopping",          "failed", "stopping", "stopping", "stopping", "stopping"]),
    ("stopped",         ["starting sp to", "waiting", "stopped",     "stopped", "stopped",       "stopped",      "stopped", "stopped",   "stopped",           "stopped",      "stopped",         "stopped",           "stopped",       "stopped",           "stopped", "running pr", "failed", "stopped", "stopped"]),
    ("completed",       ["starting sp to", "waiting", "completed",   "completed", "completed",   "completed",    "completed", "completed", "completed",       "completed",    "completed",       "completed",         "completed",     "stopped",           "completed", "running pr", "failed", "completed", "completed"]),
    ("failed",          ["starting sp to", "waiting", "failed",      "failed",  "failed",        "failed",       "failed",  "failed",    "failed",            "failed",       "failed",          "failed",            "failed",        "stopped",           "failed", "running pr", "failed", "failed", "failed"]),
    ("restarting",      ["restarting",   "restarting", "restarting", "restarting", "restarting", "restarting",   "restarting", "restarting", "restarting",    "restarting",   "restarting",      "restarting",        "starting sp to", "stopped",          "restarting", "restarting", "restarting", "restarting", "restarting"]),
];

fn code(e: &Effect) -> Option<&'static str> {
    Some(match e {
        Effect::Spawn { .. } => "sp",
        Effect::StartReadiness => "pr",
        Effect::StartLiveness => "pl",
        Effect::StopProbes => "xp",
        Effect::StopProcess { .. } => "kill",
        Effect::ScheduleRestart { .. } => "rs",
        Effect::ScheduleTimeout { .. } => "to",
        Effect::Notify(_) | Effect::Report(_) => return None,
    })
}

#[test]
fn every_phase_event_pair_follows_the_table() {
    let now = Instant::now();
    let phases = phases(now);
    let events = events();
    assert_eq!(TABLE.len(), phases.len(), "the table covers every phase");
    let mut checked = 0;
    for ((pname, phase), (tname, row)) in phases.iter().zip(TABLE) {
        assert_eq!(pname, tname);
        for ((ename, event), want) in events.iter().zip(row.iter()) {
            let lc = lc_in(phase.clone(), now);
            let (next, fx) = reduce(&lc, event.clone(), now);
            let mut got = vec![next.state(now).label().to_owned()];
            got.extend(fx.iter().filter_map(code).map(str::to_owned));
            assert_eq!(got.join(" "), *want, "{pname} + {ename}");
            let changed = next.state(now) != lc.state(now);
            let notified = fx.iter().any(|e| matches!(e, Effect::Notify(_)));
            assert_eq!(
                changed, notified,
                "{pname} + {ename}: Notify iff the state changed"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13 * 19);
}

/// The phases of a run while its host is unreachable, per event in the order of
/// `events()`: shown as `unknown`, check verdicts ignored (no restart, no second
/// start), an exit or a stop handled as usual, `reach` back to the phase with fresh checks.
#[rustfmt::skip]
const UNREACHABLE_TABLE: &[(&str, [&str; 19])] = &[
    //           start      start[a]   ready(a)   depfail(a) spawned    spawnfail        rpass      rfail      lfail      exit0           exit1               timeout             backoff    stop                stopdone   adopted    lost       unreach    reach
    ("starting",  ["unknown", "unknown", "unknown", "unknown", "unknown", "restarting rs", "unknown", "unknown", "unknown", "completed xp", "restarting xp rs", "stopping xp kill", "unknown", "stopping xp kill", "unknown", "unknown", "unknown", "unknown", "starting"]),
    ("running",   ["unknown", "unknown", "unknown", "unknown", "unknown", "unknown",       "unknown", "unknown", "unknown", "completed xp", "restarting xp rs", "stopping xp kill", "unknown", "stopping xp kill", "unknown", "unknown", "unknown", "unknown", "running pr"]),
    ("healthy",   ["unknown", "unknown", "unknown", "unknown", "unknown", "unknown",       "unknown", "unknown", "unknown", "completed xp", "restarting xp rs", "unknown",          "unknown", "stopping xp kill", "unknown", "unknown", "unknown", "unknown", "healthy pr pl"]),
    ("unhealthy", ["unknown", "unknown", "unknown", "unknown", "unknown", "unknown",       "unknown", "unknown", "unknown", "completed xp", "restarting xp rs", "unknown",          "unknown", "stopping xp kill", "unknown", "unknown", "unknown", "unknown", "unhealthy pr pl"]),
];

#[test]
fn every_event_on_an_unreachable_run_follows_the_table() {
    let now = Instant::now();
    let events = events();
    let run_phases = [
        ("starting", Phase::Starting),
        ("running", Phase::Running),
        ("healthy", Phase::Healthy),
        ("unhealthy", Phase::Unhealthy),
    ];
    let reason = "node `n1` is unreachable: connection timed out".to_owned();
    for ((pname, phase), (tname, row)) in run_phases.iter().zip(UNREACHABLE_TABLE) {
        assert_eq!(pname, tname);
        for ((ename, event), want) in events.iter().zip(row.iter()) {
            let mut lc = lc_in(phase.clone(), now);
            lc.unreachable = Some(reason.clone());
            assert!(lc.is_unreachable());
            let (next, fx) = reduce(&lc, event.clone(), now);
            let mut got = vec![next.state(now).label().to_owned()];
            got.extend(fx.iter().filter_map(code).map(str::to_owned));
            assert_eq!(got.join(" "), *want, "{pname} (unreachable) + {ename}");
            let changed = next.state(now) != lc.state(now);
            let notified = fx.iter().any(|e| matches!(e, Effect::Notify(_)));
            assert_eq!(changed, notified, "{pname} (unreachable) + {ename}");
            assert_eq!(
                next.generation, lc.generation,
                "{pname} + {ename}: a new run"
            );
            if !next.is_unreachable() {
                assert_eq!(
                    next.unreachable, None,
                    "{pname} + {ename}: stale reason kept"
                );
            }
        }
    }
}

#[test]
fn unreachable_shows_unknown_with_the_reason_and_keeps_the_phase() {
    let now = Instant::now();
    let lc = lc_in(Phase::Healthy, now);
    let why = "node `n2` is unreachable: connection timed out";
    let (lc, fx) = reduce(&lc, Event::Unreachable(why.into()), now);
    assert_eq!(lc.state(now), ServiceState::Unknown { reason: why.into() });
    assert_eq!(lc.phase, Phase::Healthy);
    assert!(lc.is_ready(), "dependents keep what they relied on");
    assert!(fx.contains(&Effect::Notify(ServiceState::Unknown {
        reason: why.into()
    })));
    // A new reason is a new visible state; the same one is not.
    let (lc2, fx) = reduce(&lc, Event::Unreachable("other".into()), now);
    assert!(fx.iter().any(|e| matches!(e, Effect::Notify(_))));
    let (_, fx) = reduce(&lc2, Event::Unreachable("other".into()), now);
    assert!(fx.is_empty(), "{fx:?}");
    // Back: healthy again, with fresh checks, same run.
    let (back, fx) = reduce(&lc, Event::Reachable, now);
    assert_eq!(back.state(now), ServiceState::Healthy);
    assert_eq!(back.generation, lc.generation);
    assert!(fx.contains(&Effect::StartReadiness));
    assert!(fx.contains(&Effect::Notify(ServiceState::Healthy)));
    // It died meanwhile: the exit follows the reconnection and the policy restarts it.
    let (after, fx) = reduce(&back, Event::Exited(ExitStatus::Code(1)), now);
    assert!(matches!(after.phase, Phase::Restarting { .. }));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::ScheduleRestart { .. }))
    );
}

#[test]
fn waiting_tracks_each_dependency() {
    let now = Instant::now();
    let lc = ServiceLifecycle::new(Arc::new(policy()), 1);
    let (lc, _) = reduce(
        &lc,
        Event::StartRequested {
            unmet: vec![name("a"), name("b")],
        },
        now,
    );
    assert_eq!(lc.state(now), ServiceState::Waiting { on: name("a") });
    let (lc, fx) = reduce(&lc, Event::DependencyReady(name("a")), now);
    assert_eq!(lc.state(now), ServiceState::Waiting { on: name("b") });
    assert!(fx.iter().any(|e| matches!(e, Effect::Notify(_))));
    // A failure of a dependency it does not wait on (any more) is not its concern.
    let (lc, _) = reduce(
        &lc,
        Event::DependencyFailed {
            dep: name("a"),
            reason: "x".into(),
        },
        now,
    );
    assert_eq!(lc.state(now), ServiceState::Waiting { on: name("b") });
    let (lc, _) = reduce(
        &lc,
        Event::DependencyFailed {
            dep: name("b"),
            reason: "exited with exit code 3".into(),
        },
        now,
    );
    match lc.state(now) {
        ServiceState::Failed { reason } => {
            assert!(
                reason.contains("`b`") && reason.contains("exit code 3"),
                "{reason}"
            )
        }
        s => panic!("expected failed, got {s}"),
    }
}

#[test]
fn job_completes_on_success_and_fails_on_error() {
    let now = Instant::now();
    let mut p = policy();
    p.job = true;
    p.has_readiness = false;
    p.restart = RestartMode::No;
    let lc = ServiceLifecycle::new(Arc::new(p), 1);
    let (lc, _) = reduce(&lc, Event::StartRequested { unmet: vec![] }, now);
    let (lc, _) = reduce(&lc, Event::Spawned, now);
    assert!(
        lc.is_started() && !lc.is_ready(),
        "a running job is not ready yet"
    );
    let (done, _) = reduce(&lc, Event::Exited(ExitStatus::Code(0)), now);
    assert_eq!(done.state(now), ServiceState::Completed);
    assert!(done.is_ready());
    let (failed, _) = reduce(&lc, Event::Exited(ExitStatus::Code(2)), now);
    assert_eq!(
        failed.state(now),
        ServiceState::Failed {
            reason: "exited with code 2 after 0s".into()
        }
    );
}

#[test]
fn success_exit_codes_are_honoured() {
    let mut p = policy();
    p.success_exit_codes = vec![0, 3];
    assert!(p.is_success(ExitStatus::Code(3)));
    assert!(!p.is_success(ExitStatus::Code(1)));
    assert!(!p.is_success(ExitStatus::Signal(9)));
}

#[test]
fn restart_always_restarts_a_clean_exit_but_no_does_not() {
    let now = Instant::now();
    for (mode, want) in [
        (RestartMode::Always, "restarting"),
        (RestartMode::OnFailure, "completed"),
        (RestartMode::No, "completed"),
    ] {
        let mut p = policy();
        p.restart = mode;
        let mut lc = ServiceLifecycle::new(Arc::new(p), 1);
        lc.phase = Phase::Running;
        let (lc, _) = reduce(&lc, Event::Exited(ExitStatus::Code(0)), now);
        assert_eq!(lc.state(now).label(), want, "{mode:?}");
    }
}

#[test]
fn liveness_failure_without_restart_marks_unhealthy() {
    let now = Instant::now();
    let mut p = policy();
    p.restart = RestartMode::No;
    let mut lc = ServiceLifecycle::new(Arc::new(p), 1);
    lc.phase = Phase::Healthy;
    lc.ready_in_run = true;
    let (lc, fx) = reduce(&lc, Event::LivenessFailed, now);
    assert_eq!(lc.state(now), ServiceState::Unhealthy);
    assert!(!fx.iter().any(|e| matches!(e, Effect::StopProcess { .. })));
}

/// Crash loop: delays grow by the multiplier up to the cap; max_restarts ends it.
#[test]
fn crash_loop_backs_off_and_gives_up() {
    let mut now = Instant::now();
    let mut p = policy();
    p.max_restarts = Some(6);
    let lc = ServiceLifecycle::new(Arc::new(p), 1);
    let (mut lc, _) = reduce(&lc, Event::StartRequested { unmet: vec![] }, now);
    let mut delays = vec![];
    loop {
        let (l, _) = reduce(&lc, Event::Spawned, now);
        let (l, fx) = reduce(&l, Event::Exited(ExitStatus::Code(1)), now);
        lc = l;
        let Some(after) = fx.iter().find_map(|e| match e {
            Effect::ScheduleRestart { after } => Some(*after),
            _ => None,
        }) else {
            break;
        };
        delays.push(after.as_millis());
        now += after;
        let (l, _) = reduce(&lc, Event::BackoffElapsed, now);
        lc = l;
    }
    assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000]);
    assert_eq!(lc.restarts, 6);
    match lc.state(now) {
        ServiceState::Failed { reason } => assert!(
            reason.contains("exited with code 1") && reason.contains("6 restarts"),
            "{reason}"
        ),
        s => panic!("expected failed, got {s}"),
    }
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let mut now = Instant::now();
    let lc = ServiceLifecycle::new(Arc::new(policy()), 1);
    let (lc, _) = reduce(&lc, Event::StartRequested { unmet: vec![] }, now);
    let (lc, _) = reduce(&lc, Event::Spawned, now);
    let (lc, _) = reduce(&lc, Event::Exited(ExitStatus::Code(1)), now);
    now += Duration::from_millis(100);
    let (lc, _) = reduce(&lc, Event::BackoffElapsed, now);
    let (lc, _) = reduce(&lc, Event::Spawned, now);
    assert_eq!(lc.consecutive, 1);
    now += Duration::from_secs(61);
    let (lc, fx) = reduce(&lc, Event::Exited(ExitStatus::Code(1)), now);
    assert_eq!(
        lc.consecutive, 1,
        "the long run reset the count before this restart"
    );
    assert_eq!(lc.restarts, 2);
    assert!(fx.contains(&Effect::ScheduleRestart {
        after: Duration::from_millis(100)
    }));
}

#[test]
fn backoff_delay_handles_odd_values() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: f64::NAN,
        jitter: 5.0,
        reset_after: Duration::ZERO,
    };
    assert!(backoff_delay(&b, 1, 0.99) <= Duration::from_secs(1));
    assert!(backoff_delay(&b, u32::MAX, f64::INFINITY) <= Duration::from_secs(1));
    let b = Backoff {
        multiplier: 3.0,
        jitter: 0.0,
        ..b
    };
    assert_eq!(backoff_delay(&b, 2, 0.3), Duration::from_millis(300));
    let b = Backoff { jitter: 0.5, ..b };
    let spread: Vec<_> = [0.0, 0.5, 0.999]
        .iter()
        .map(|r| backoff_delay(&b, 1, *r).as_millis())
        .collect();
    assert_eq!(spread[0], 100);
    assert!(
        spread[1] == 75 && spread[2] >= 50 && spread[2] < 75,
        "jitter only shortens a delay: {spread:?}"
    );
}

fn arb_event() -> impl Strategy<Value = Event> {
    let dep = prop_oneof![Just(name("a")), Just(name("b"))];
    prop_oneof![
        proptest::collection::vec(dep.clone(), 0..3)
            .prop_map(|unmet| Event::StartRequested { unmet }),
        dep.clone().prop_map(Event::DependencyReady),
        dep.prop_map(|dep| Event::DependencyFailed {
            dep,
            reason: "r".into()
        }),
        Just(Event::Spawned),
        Just(Event::SpawnFailed("e".into())),
        Just(Event::ReadinessPassed),
        Just(Event::ReadinessFailed),
        Just(Event::LivenessFailed),
        (0i32..3).prop_map(|c| Event::Exited(ExitStatus::Code(c))),
        Just(Event::Exited(ExitStatus::Signal(9))),
        Just(Event::StartupTimeout { last_check: None }),
        Just(Event::BackoffElapsed),
        Just(Event::StopRequested),
        Just(Event::StopCompleted),
        Just(Event::Adopted {
            running_for: Duration::ZERO
        }),
        Just(Event::Lost("l".into())),
        Just(Event::Unreachable("u".into())),
        Just(Event::Unreachable("v".into())),
        Just(Event::Reachable),
    ]
}

fn arb_policy() -> impl Strategy<Value = LifecyclePolicy> {
    (
        prop_oneof![
            Just(RestartMode::No),
            Just(RestartMode::Always),
            Just(RestartMode::OnFailure)
        ],
        proptest::option::of(0u32..5),
        any::<bool>(),
        any::<bool>(),
        0.0f64..1.0,
        1.0f64..4.0,
    )
        .prop_map(
            |(restart, max_restarts, job, has_readiness, jitter, multiplier)| {
                let mut p = policy();
                p.restart = restart;
                p.max_restarts = max_restarts;
                p.job = job;
                p.has_readiness = has_readiness;
                p.backoff.jitter = jitter;
                p.backoff.multiplier = multiplier;
                p
            },
        )
}

fn check_invariants(
    lc: &ServiceLifecycle,
    fx: &[Effect],
    prev_gen: u64,
) -> Result<(), TestCaseError> {
    if let Phase::Waiting { on } = &lc.phase {
        prop_assert!(!on.is_empty(), "waiting on nothing");
    }
    prop_assert!(lc.restarts >= lc.consecutive);
    if let Some(max) = lc.policy.max_restarts {
        prop_assert!(
            lc.consecutive <= max,
            "{} restarts > max {}",
            lc.consecutive,
            max
        );
    }
    if let Phase::Restarting { attempt, .. } = lc.phase {
        prop_assert_eq!(attempt, lc.consecutive);
    }
    if lc.unreachable.is_some() {
        prop_assert!(
            lc.is_unreachable(),
            "unreachable outside a run: {:?}",
            lc.phase
        );
        prop_assert!(
            matches!(lc.state(Instant::now()), ServiceState::Unknown { .. }),
            "unreachable but not shown as unknown"
        );
        prop_assert!(
            !fx.contains(&Effect::StartReadiness) && !fx.contains(&Effect::StartLiveness),
            "checks started while unreachable"
        );
    }
    if fx.contains(&Effect::StartLiveness) {
        prop_assert!(lc.ready_in_run, "liveness started before the run was ready");
    }
    for e in fx {
        match e {
            Effect::Spawn { generation } => {
                prop_assert_eq!(*generation, prev_gen + 1);
                prop_assert_eq!(lc.generation, *generation);
            }
            Effect::ScheduleRestart { after } => {
                let b = &lc.policy.backoff;
                let base = (b.initial.as_secs_f64() * b.multiplier.powi(lc.consecutive as i32 - 1))
                    .min(b.max.as_secs_f64());
                let lo = base * (1.0 - b.jitter) - 1e-6;
                let hi = (base * (1.0 + b.jitter)).min(b.max.as_secs_f64()) + 1e-6;
                let a = after.as_secs_f64();
                prop_assert!(lo <= a && a <= hi, "delay {a} outside [{lo}, {hi}]");
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_sequences_keep_invariants(
        policy in arb_policy(),
        seed in any::<u64>(),
        events in proptest::collection::vec((arb_event(), 0u64..120_000), 0..60),
    ) {
        let mut now = Instant::now();
        let mut lc = ServiceLifecycle::new(Arc::new(policy), seed);
        for (event, advance_ms) in events {
            now += Duration::from_millis(advance_ms);
            let prev_gen = lc.generation;
            let (next, fx) = reduce(&lc, event, now);
            check_invariants(&next, &fx, prev_gen)?;
            lc = next;
        }
    }

    #[test]
    fn a_stop_request_always_ends_in_stopped(
        policy in arb_policy(),
        before in proptest::collection::vec(arb_event(), 0..40),
        after in proptest::collection::vec(arb_event(), 0..20),
    ) {
        let now = Instant::now();
        let mut lc = ServiceLifecycle::new(Arc::new(policy), 3);
        for e in before {
            lc = reduce(&lc, e, now).0;
        }
        let already_stopping = matches!(lc.phase, Phase::Stopping { .. });
        let (mut lc, fx) = reduce(&lc, Event::StopRequested, now);
        let was_alive = matches!(lc.phase, Phase::Stopping { .. }) && !already_stopping;
        prop_assert_eq!(was_alive, fx.iter().any(|e| matches!(e, Effect::StopProcess { .. })));
        // Whatever else arrives (except a new request: start, adopt), completion of the stop ends in stopped.
        for e in after.into_iter().filter(|e| !matches!(e, Event::StartRequested { .. } | Event::Adopted { .. } | Event::Lost(_))) {
            prop_assert!(lc.unreachable.is_none());
            lc = reduce(&lc, e, now).0;
            prop_assert!(matches!(lc.phase, Phase::Stopping { then: AfterStop::Stop } | Phase::Stopped), "not stopping");
        }
        let (lc, _) = reduce(&lc, Event::StopCompleted, now);
        prop_assert_eq!(lc.state(now), ServiceState::Stopped);
    }

    #[test]
    fn restarts_follow_the_policy(
        policy in arb_policy(),
        seed in any::<u64>(),
        codes in proptest::collection::vec(0i32..3, 1..15),
    ) {
        let policy = Arc::new(policy);
        let mut now = Instant::now();
        let mut lc = ServiceLifecycle::new(policy.clone(), seed);
        lc = reduce(&lc, Event::StartRequested { unmet: vec![] }, now).0;
        let mut expected_restarts = 0u32;
        for code in codes {
            if !matches!(lc.phase, Phase::Starting) {
                break;
            }
            lc = reduce(&lc, Event::Spawned, now).0;
            let status = ExitStatus::Code(code);
            let (next, fx) = reduce(&lc, Event::Exited(status), now);
            let ok = policy.is_success(status);
            let wants = match policy.restart {
                RestartMode::No => false,
                RestartMode::Always => !(policy.job && ok),
                RestartMode::OnFailure => !ok,
            };
            let capped = policy.max_restarts.is_some_and(|m| expected_restarts >= m);
            if wants && !capped {
                expected_restarts += 1;
                let Phase::Restarting { at, .. } = next.phase else {
                    return Err(TestCaseError::fail(format!("expected restarting, got {:?}", next.phase)));
                };
                prop_assert!(fx.iter().any(|e| matches!(e, Effect::ScheduleRestart { .. })), "no restart scheduled");
                now = at;
                lc = reduce(&next, Event::BackoffElapsed, now).0;
            } else {
                prop_assert!(matches!(next.phase, Phase::Completed | Phase::Failed { .. }), "not settled");
                // Out of restarts: failed even after a clean exit (it was meant to stay up).
                prop_assert_eq!(matches!(next.phase, Phase::Completed), ok && !wants);
                lc = next;
            }
            prop_assert_eq!(lc.restarts, expected_restarts);
        }
    }

    #[test]
    fn checks_against_an_unreachable_run_never_restart_it(
        policy in arb_policy(),
        seed in any::<u64>(),
        before in proptest::collection::vec(arb_event(), 0..40),
        probes in proptest::collection::vec(
            prop_oneof![
                Just(Event::ReadinessPassed),
                Just(Event::ReadinessFailed),
                Just(Event::LivenessFailed),
                Just(Event::Unreachable("again".into())),
                Just(Event::StartRequested { unmet: vec![] }),
                Just(Event::Adopted { running_for: Duration::ZERO }),
                Just(Event::BackoffElapsed),
            ],
            0..30,
        ),
    ) {
        let now = Instant::now();
        let mut lc = ServiceLifecycle::new(Arc::new(policy), seed);
        for e in before {
            lc = reduce(&lc, e, now).0;
        }
        let (cut, _) = reduce(&lc, Event::Unreachable("cut".into()), now);
        let runs = matches!(lc.phase, Phase::Running | Phase::Healthy | Phase::Unhealthy);
        prop_assert_eq!(cut.is_unreachable(), runs || matches!(lc.phase, Phase::Starting));
        if !cut.is_unreachable() {
            prop_assert_eq!(&cut.phase, &lc.phase);
            return Ok(());
        }
        // Whatever the checks say meanwhile: no stop, no spawn, same run and phase.
        let mut during = cut.clone();
        for e in probes {
            let (next, fx) = reduce(&during, e, now);
            prop_assert!(
                !fx.iter().any(|f| matches!(
                    f,
                    Effect::Spawn { .. } | Effect::StopProcess { .. } | Effect::ScheduleRestart { .. }
                )),
                "{:?}", fx
            );
            prop_assert_eq!(next.generation, lc.generation);
            prop_assert_eq!(&next.phase, &lc.phase);
            during = next;
        }
        // Back: the state underneath, same run.
        let mut underneath = lc.clone();
        underneath.unreachable = None;
        let (back, fx) = reduce(&during, Event::Reachable, now);
        prop_assert_eq!(back.state(now), underneath.state(now));
        prop_assert_eq!(back.generation, lc.generation);
        prop_assert_eq!(
            fx.contains(&Effect::StartReadiness),
            runs && lc.policy.has_readiness
        );
        prop_assert_eq!(
            fx.contains(&Effect::StartLiveness),
            runs && lc.policy.has_liveness && lc.ready_in_run
        );
    }
}

/// Runs `events` from a pending lifecycle with `policy`, all at `now`.
fn run_events(
    policy: LifecyclePolicy,
    events: Vec<Event>,
    now: Instant,
) -> (ServiceLifecycle, Vec<Effect>) {
    let mut lc = ServiceLifecycle::new(Arc::new(policy), 3);
    let mut all = Vec::new();
    for e in events {
        let (next, fx) = reduce(&lc, e, now);
        lc = next;
        all.extend(fx);
    }
    (lc, all)
}

fn reports(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Report(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// A slow-booting service whose check fails at first is never killed for it:
/// before the first pass, readiness and liveness failures only keep it from
/// being ready; liveness checking starts once it is ready.
#[test]
fn a_check_that_never_passed_never_kills_the_service() {
    let now = Instant::now();
    let (lc, fx) = run_events(
        policy(),
        vec![
            Event::StartRequested { unmet: vec![] },
            Event::Spawned,
            Event::ReadinessFailed,
            Event::LivenessFailed,
            Event::LivenessFailed,
        ],
        now,
    );
    assert_eq!(lc.state(now), ServiceState::Running);
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::StopProcess { .. })),
        "{fx:?}"
    );
    assert!(fx.contains(&Effect::StartReadiness));
    assert!(
        !fx.contains(&Effect::StartLiveness),
        "liveness before ready: {fx:?}"
    );
    // First pass: liveness starts, and from then on a failure restarts it.
    let (lc, fx) = reduce(&lc, Event::ReadinessPassed, now);
    assert_eq!(
        fx.iter().filter(|e| **e == Effect::StartLiveness).count(),
        1
    );
    let (lc, fx) = reduce(&lc, Event::LivenessFailed, now);
    assert!(fx.iter().any(|e| matches!(e, Effect::StopProcess { .. })));
    assert_eq!(
        reports(&fx),
        ["liveness check failed; stopping it to restart"]
    );
    let (lc, _) = reduce(&lc, Event::StopCompleted, now);
    match lc.state(now) {
        ServiceState::Restarting { reason, .. } => assert_eq!(reason, "liveness check failed"),
        s => panic!("expected restarting, got {s}"),
    }
}

/// The startup timeout fails a service that never became healthy, naming the
/// timeout and what the last check said.
#[test]
fn the_startup_timeout_names_the_last_check() {
    let now = Instant::now();
    let (lc, fx) = run_events(
        policy(),
        vec![
            Event::StartRequested { unmet: vec![] },
            Event::Spawned,
            Event::StartupTimeout {
                last_check: Some("cannot connect to 127.0.0.1:8080: connection refused".into()),
            },
            Event::StopCompleted,
        ],
        now,
    );
    let want =
        "not healthy within 5s: last check: cannot connect to 127.0.0.1:8080: connection refused";
    assert_eq!(
        lc.state(now),
        ServiceState::Failed {
            reason: want.into()
        }
    );
    assert_eq!(reports(&fx), [format!("{want}; stopping it")]);
    // With a readiness check and no timeout configured, the default applies.
    let spec = harness_config::ServiceSpec {
        readiness: Some(harness_config::Probe::new(harness_config::Check::Tcp {
            host: None,
            port: 1,
        })),
        ..harness_config::ServiceSpec::process(name("api"), "api", vec![])
    };
    let p = LifecyclePolicy::from_spec(&spec, &Default::default());
    assert_eq!(p.startup_timeout, Some(DEFAULT_STARTUP_TIMEOUT));
}

/// Restarting keeps the reason of the run's end; the log hears the exit and the plan.
#[test]
fn restarting_says_why_and_the_log_hears_it() {
    let start = Instant::now();
    let mut p = policy();
    p.has_readiness = false;
    p.has_liveness = false;
    let (lc, _) = run_events(
        p,
        vec![Event::StartRequested { unmet: vec![] }, Event::Spawned],
        start,
    );
    let now = start + Duration::from_millis(400);
    let (lc, fx) = reduce(&lc, Event::Exited(ExitStatus::Code(1)), now);
    match lc.state(now) {
        ServiceState::Restarting {
            attempt: 1, reason, ..
        } => {
            assert_eq!(reason, "exited with code 1 after 400ms")
        }
        s => panic!("expected restarting, got {s}"),
    }
    assert_eq!(
        reports(&fx),
        ["exited with code 1 after 400ms; restart 1 in 100ms"]
    );
    let (lc, _) = reduce(&lc, Event::BackoffElapsed, now);
    let (lc, fx) = reduce(&lc, Event::SpawnFailed("binary `x` not found".into()), now);
    assert_eq!(
        reports(&fx),
        ["cannot start: binary `x` not found; restart 2 in 200ms"]
    );
    assert!(
        lc.state(now)
            .to_string()
            .ends_with(": cannot start: binary `x` not found")
    );
    // A kill -9 is named.
    let (lc, _) = reduce(&lc, Event::BackoffElapsed, now);
    let (lc, _) = reduce(&lc, Event::Spawned, now);
    let later = now + Duration::from_millis(2500);
    let (_, fx) = reduce(&lc, Event::Exited(ExitStatus::Signal(9)), later);
    assert_eq!(
        reports(&fx),
        ["killed by SIGKILL after 2.5s; restart 3 in 400ms"]
    );
}

/// The default backoff restarts within 100 ms, doubling.
#[test]
fn the_default_backoff_starts_fast() {
    let b = Backoff::default();
    for r in [0.0, 0.5, 0.999] {
        assert!(backoff_delay(&b, 1, r) <= Duration::from_millis(100));
        assert!(backoff_delay(&b, 1, r) >= Duration::from_millis(90));
    }
    assert!(backoff_delay(&b, 2, 0.0) == Duration::from_millis(200));
    assert!(backoff_delay(&b, 50, 0.0) == b.max);
}

/// Re-adoption is not a new start: it is checked at once and keeps the run's age.
#[test]
fn adoption_checks_at_once_and_keeps_the_run_start() {
    let now = Instant::now();
    let lc = ServiceLifecycle::new(Arc::new(policy()), 1);
    let (lc, fx) = reduce(
        &lc,
        Event::Adopted {
            running_for: Duration::from_secs(30),
        },
        now + Duration::from_secs(60),
    );
    assert_eq!(lc.state(now), ServiceState::Running);
    assert!(fx.contains(&Effect::StartReadiness));
    assert_eq!(lc.run_started, Some(now + Duration::from_secs(30)));
}
