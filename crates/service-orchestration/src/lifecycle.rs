//! The lifecycle of one service as a pure state machine.
//!
//! [`reduce`] takes the current [`ServiceLifecycle`], one [`Event`] and the
//! current instant, and returns the next lifecycle plus the [`Effect`]s to
//! carry out. It does no I/O: the manager and the executors perform the
//! effects and feed their results back as events. Jitter for restart backoff
//! comes from a seeded generator kept inside the lifecycle, so the same inputs
//! always give the same outputs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness_core::{ExitStatus, ServiceName, ServiceState, Signal};

pub use harness_config::{Backoff, RestartMode};

/// How long a service with a readiness check may take to become ready when
/// neither the service nor the project sets `startup_timeout`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The delay before consecutive restart number `attempt` (1 for the first),
/// given a random value `random` in `0..1` for the jitter: the configured
/// exponential delay shortened by up to `jitter` (a fraction), so a delay is
/// never longer than configured and never above `max`.
pub fn backoff_delay(backoff: &Backoff, attempt: u32, random: f64) -> Duration {
    let base = backoff.delay(attempt.saturating_sub(1)).as_secs_f64();
    let max = backoff.max.as_secs_f64();
    let jitter = if backoff.jitter.is_finite() {
        backoff.jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let r = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let d = (base * (1.0 - jitter * r)).clamp(0.0, max.max(0.0));
    Duration::try_from_secs_f64(d).unwrap_or(backoff.max)
}

/// What the reducer needs to know about a service: fixed for the life of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecyclePolicy {
    /// Restart mode.
    pub restart: RestartMode,
    /// Backoff between restarts.
    pub backoff: Backoff,
    /// Give up after this many consecutive restarts (`None`: never give up).
    pub max_restarts: Option<u32>,
    /// A one-shot job: success means it exited with a success code.
    pub job: bool,
    /// Exit codes that count as success (0 when empty).
    pub success_exit_codes: Vec<i32>,
    /// True if the service has a readiness check: it is ready only once the check passes.
    pub has_readiness: bool,
    /// True if the service has a liveness check.
    pub has_liveness: bool,
    /// Time allowed from spawn to ready (`None`: unbounded). Until a run is
    /// first ready, failing checks only keep it from being ready; this
    /// timeout is what fails it.
    pub startup_timeout: Option<Duration>,
    /// Signal sent to stop it.
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL.
    pub stop_grace: Duration,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            restart: RestartMode::No,
            backoff: Backoff::default(),
            max_restarts: None,
            job: false,
            success_exit_codes: Vec::new(),
            has_readiness: false,
            has_liveness: false,
            startup_timeout: None,
            stop_signal: Signal::TERM,
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl LifecyclePolicy {
    /// The policy of a configured service (project settings fill what the service leaves open).
    pub fn from_spec(
        spec: &harness_config::ServiceSpec,
        settings: &harness_config::Settings,
    ) -> Self {
        LifecyclePolicy {
            restart: spec.restart.mode,
            backoff: spec.restart.backoff.clone(),
            max_restarts: spec.restart.max_restarts,
            job: spec.job,
            success_exit_codes: spec.success_exit_codes.clone(),
            has_readiness: spec.readiness.is_some(),
            has_liveness: spec.liveness.is_some(),
            startup_timeout: spec
                .startup_timeout
                .or(settings.startup_timeout)
                .or(spec.readiness.is_some().then_some(DEFAULT_STARTUP_TIMEOUT)),
            stop_signal: spec.shutdown.signal,
            stop_grace: spec.shutdown.timeout,
        }
    }

    /// True if `status` counts as a successful exit.
    pub fn is_success(&self, status: ExitStatus) -> bool {
        match status {
            ExitStatus::Code(c) if self.success_exit_codes.is_empty() => c == 0,
            ExitStatus::Code(c) => self.success_exit_codes.contains(&c),
            _ => false,
        }
    }
}

/// What happens once a stop in progress completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped (a user's request).
    Stop,
    /// Restart with backoff (a liveness failure).
    Restart {
        /// Why the service is restarted.
        reason: String,
    },
    /// Become failed with this reason (e.g. a startup timeout).
    Fail {
        /// Why the service failed.
        reason: String,
    },
}

/// The internal phase of a service: richer than the [`ServiceState`] users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Declared, never asked to run.
    Pending,
    /// Asked to run; these dependencies do not hold their condition yet (first one shown).
    Waiting {
        /// Dependencies not yet satisfied, in the order they are reported.
        on: VecDeque<ServiceName>,
    },
    /// The spawn is under way.
    Starting,
    /// Spawned; not ready yet (or no readiness check).
    Running,
    /// Spawned and its readiness check passes.
    Healthy,
    /// Was healthy; its readiness check fails now.
    Unhealthy,
    /// A stop is under way.
    Stopping {
        /// What follows the stop.
        then: AfterStop,
    },
    /// Stopped (on request, or never started).
    Stopped,
    /// Ran to completion successfully.
    Completed,
    /// Gave up.
    Failed {
        /// Why.
        reason: String,
    },
    /// Will be spawned again at `at`.
    Restarting {
        /// Consecutive restart number.
        attempt: u32,
        /// When the restart is due.
        at: Instant,
        /// Why the last run ended (or could not start).
        reason: String,
    },
}

/// The lifecycle of one service: its phase plus the counters restarts need.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLifecycle {
    /// The service's policy.
    pub policy: Arc<LifecyclePolicy>,
    /// The current phase.
    pub phase: Phase,
    /// Restarts since the service was last started on request.
    pub restarts: u32,
    /// Consecutive restarts (reset after a stable run): drives backoff and `max_restarts`.
    pub consecutive: u32,
    /// Incremented on every spawn; events from older runs must be dropped by the caller.
    pub generation: u64,
    /// When the current run was spawned.
    pub run_started: Option<Instant>,
    /// The last exit status seen.
    pub last_exit: Option<ExitStatus>,
    /// True once the current run has been ready (its readiness check passed,
    /// or it runs and has none). Liveness is checked only from then on: a
    /// check that never passed in a run never kills it.
    pub ready_in_run: bool,
    /// Why the current run cannot be observed right now (its host is unreachable),
    /// if it cannot. Set only in the phases of a run (starting to unhealthy); the
    /// phase underneath is kept, and the visible state is `unknown` meanwhile.
    pub unreachable: Option<String>,
    rng: u64,
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A user (or a dependent) asked the service to run; these dependencies do not hold yet.
    StartRequested {
        /// Dependencies whose condition does not hold yet.
        unmet: Vec<ServiceName>,
    },
    /// A dependency now holds its condition.
    DependencyReady(ServiceName),
    /// A dependency can never hold its condition.
    DependencyFailed {
        /// The dependency.
        dep: ServiceName,
        /// Why it failed.
        reason: String,
    },
    /// The executor started the service.
    Spawned,
    /// The executor could not start the service.
    SpawnFailed(String),
    /// The readiness check passed.
    ReadinessPassed,
    /// The readiness check failed (after its failure threshold).
    ReadinessFailed,
    /// The liveness check failed (after its failure threshold).
    LivenessFailed,
    /// The service's process ended.
    Exited(ExitStatus),
    /// The startup timeout elapsed before the service became ready.
    StartupTimeout {
        /// What the last readiness check said, if one ran.
        last_check: Option<String>,
    },
    /// The restart backoff elapsed.
    BackoffElapsed,
    /// A user asked the service to stop.
    StopRequested,
    /// The stop finished: the process (group) is gone.
    StopCompleted,
    /// A running instance started earlier (by a previous daemon) was re-adopted;
    /// its run has lasted this long so far. It is checked right away, and it
    /// is not a new start: counters and the run's start are kept.
    Adopted {
        /// How long the run has lasted (since its spawn by the earlier daemon).
        running_for: Duration,
    },
    /// A persisted instance could not be re-adopted.
    Lost(String),
    /// The current run cannot be observed any more (its host is unreachable), for
    /// this reason. It is not taken as an exit: the run shows `unknown` and check
    /// verdicts are ignored, so nothing is restarted or started twice.
    Unreachable(String),
    /// The current run can be observed again: back to the state underneath, with
    /// fresh checks (an exit that happened meanwhile follows as [`Event::Exited`]).
    Reachable,
}

/// Work the caller must carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start the service (run `generation`).
    Spawn {
        /// The generation of the new run.
        generation: u64,
    },
    /// Start the readiness check of the current run.
    StartReadiness,
    /// Start the liveness check of the current run (only once it has been ready).
    StartLiveness,
    /// Stop the checks of the current run.
    StopProbes,
    /// Stop the process: send `signal`, wait `grace`, then SIGKILL the group.
    StopProcess {
        /// The first signal.
        signal: Signal,
        /// Time before SIGKILL.
        grace: Duration,
    },
    /// Deliver [`Event::BackoffElapsed`] after this delay.
    ScheduleRestart {
        /// The delay.
        after: Duration,
    },
    /// Deliver [`Event::StartupTimeout`] after this delay (for the current generation).
    ScheduleTimeout {
        /// The delay.
        after: Duration,
    },
    /// The visible state changed.
    Notify(ServiceState),
    /// A line for the service's log saying what happened to it (an exit and
    /// what follows, a failure to start, a failed check).
    Report(String),
}

impl ServiceLifecycle {
    /// A pending service with this policy; `seed` seeds the jitter generator.
    pub fn new(policy: Arc<LifecyclePolicy>, seed: u64) -> Self {
        ServiceLifecycle {
            policy,
            phase: Phase::Pending,
            restarts: 0,
            consecutive: 0,
            generation: 0,
            run_started: None,
            last_exit: None,
            ready_in_run: false,
            unreachable: None,
            rng: seed,
        }
    }

    /// The state users see.
    pub fn state(&self, now: Instant) -> ServiceState {
        if let Some(reason) = &self.unreachable
            && self.in_run()
        {
            return ServiceState::Unknown {
                reason: reason.clone(),
            };
        }
        match &self.phase {
            Phase::Pending => ServiceState::Pending,
            Phase::Waiting { on } => match on.front() {
                Some(dep) => ServiceState::Waiting { on: dep.clone() },
                None => ServiceState::Starting,
            },
            Phase::Starting => ServiceState::Starting,
            Phase::Running => ServiceState::Running,
            Phase::Healthy => ServiceState::Healthy,
            Phase::Unhealthy => ServiceState::Unhealthy,
            Phase::Stopping { .. } => ServiceState::Stopping,
            Phase::Stopped => ServiceState::Stopped,
            Phase::Completed => ServiceState::Completed,
            Phase::Failed { reason } => ServiceState::Failed {
                reason: reason.clone(),
            },
            Phase::Restarting {
                attempt,
                at,
                reason,
            } => ServiceState::Restarting {
                attempt: *attempt,
                in_ms: at.saturating_duration_since(now).as_millis() as u64,
                reason: reason.clone(),
            },
        }
    }

    /// Why the service is not ready, in words: its state with its reason, or
    /// for a stop under way the reason of what follows it (`failed: not
    /// healthy within 60s: ...`).
    pub fn why_not_ready(&self, now: Instant) -> String {
        match &self.phase {
            Phase::Stopping {
                then: AfterStop::Fail { reason },
            } => format!("failed: {reason}"),
            Phase::Stopping {
                then: AfterStop::Restart { reason },
            } => format!("restarting: {reason}"),
            _ => self.state(now).to_string(),
        }
    }

    /// True in the phases of a run that is not being stopped: starting, running,
    /// healthy, unhealthy (the phases an unreachable host can hide).
    fn in_run(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting | Phase::Running | Phase::Healthy | Phase::Unhealthy
        )
    }

    /// True if the current run cannot be observed now (see [`ServiceLifecycle::unreachable`]).
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.is_some() && self.in_run()
    }

    /// True if a process of the current run may be alive.
    pub fn is_alive(&self) -> bool {
        matches!(
            self.phase,
            Phase::Starting
                | Phase::Running
                | Phase::Healthy
                | Phase::Unhealthy
                | Phase::Stopping { .. }
        )
    }

    /// True once the service is ready for dependents waiting on "healthy":
    /// healthy if it has a readiness check, running otherwise, completed for a job.
    pub fn is_ready(&self) -> bool {
        match self.phase {
            Phase::Completed => true,
            _ if self.policy.job => false,
            Phase::Healthy => true,
            Phase::Running | Phase::Unhealthy => !self.policy.has_readiness,
            _ => false,
        }
    }

    /// True once the service has been started (the "started" condition).
    pub fn is_started(&self) -> bool {
        matches!(
            self.phase,
            Phase::Running | Phase::Healthy | Phase::Unhealthy | Phase::Completed
        )
    }

    /// True if, without a new request, this service will never become ready.
    pub fn is_given_up(&self) -> bool {
        matches!(
            self.phase,
            Phase::Failed { .. }
                | Phase::Stopped
                | Phase::Pending
                | Phase::Stopping {
                    then: AfterStop::Stop | AfterStop::Fail { .. },
                }
        )
    }

    /// A value in `0..1` from the lifecycle's generator (splitmix64), advancing it.
    fn next_random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn spawn_effects(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        self.generation += 1;
        self.unreachable = None;
        self.ready_in_run = false;
        self.phase = Phase::Starting;
        self.run_started = Some(now);
        fx.push(Effect::Spawn {
            generation: self.generation,
        });
        if let Some(after) = self.policy.startup_timeout {
            fx.push(Effect::ScheduleTimeout { after });
        }
    }

    /// The checks of a run that is observed (again): readiness if it has one,
    /// liveness once the run has been ready.
    fn probe_effects(&self, fx: &mut Vec<Effect>) {
        if self.policy.has_readiness {
            fx.push(Effect::StartReadiness);
        }
        if self.policy.has_liveness && self.ready_in_run {
            fx.push(Effect::StartLiveness);
        }
    }

    /// The run is ready for the first time: liveness checking begins.
    fn first_ready(&mut self, fx: &mut Vec<Effect>) {
        if !self.ready_in_run {
            self.ready_in_run = true;
            if self.policy.has_liveness {
                fx.push(Effect::StartLiveness);
            }
        }
    }

    fn stop_effects(&mut self, then: AfterStop, fx: &mut Vec<Effect>) {
        self.phase = Phase::Stopping { then };
        fx.push(Effect::StopProbes);
        fx.push(Effect::StopProcess {
            signal: self.policy.stop_signal,
            grace: self.policy.stop_grace,
        });
    }

    /// The run ended (exit, or a stop for a restart): restart with backoff or give up.
    fn restart_or_fail(&mut self, why: String, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(start) = self.run_started
            && now.saturating_duration_since(start) >= self.policy.backoff.reset_after
        {
            self.consecutive = 0;
        }
        if let Some(max) = self.policy.max_restarts
            && self.consecutive >= max
        {
            let reason = format!("{why}; gave up after {max} restarts (max_restarts: {max})");
            fx.push(Effect::Report(reason.clone()));
            self.phase = Phase::Failed { reason };
            return;
        }
        self.consecutive += 1;
        self.restarts += 1;
        let random = self.next_random();
        let after = backoff_delay(&self.policy.backoff, self.consecutive, random);
        fx.push(Effect::Report(format!(
            "{why}; restart {} in {}",
            self.restarts,
            harness_core::duration::format_duration(short(after))
        )));
        self.phase = Phase::Restarting {
            attempt: self.consecutive,
            at: now + after,
            reason: why,
        };
        fx.push(Effect::ScheduleRestart { after });
    }

    fn on_exit(&mut self, status: ExitStatus, now: Instant, fx: &mut Vec<Effect>) {
        self.last_exit = Some(status);
        fx.push(Effect::StopProbes);
        let success = self.policy.is_success(status);
        let restart = match self.policy.restart {
            RestartMode::No => false,
            RestartMode::Always => !(self.policy.job && success),
            RestartMode::OnFailure => !success,
        };
        let ran = self.run_started.map(|s| now.saturating_duration_since(s));
        let why = describe_exit(status, ran);
        if restart {
            self.restart_or_fail(why, now, fx);
        } else if success {
            fx.push(Effect::Report(format!("{why}; completed")));
            self.phase = Phase::Completed;
        } else {
            fx.push(Effect::Report(format!(
                "{why}; not restarted (restart: no)"
            )));
            self.phase = Phase::Failed { reason: why };
        }
    }
}

/// Applies `event` to `lc` at instant `now`: the next lifecycle and the effects to carry out.
///
/// Events that make no sense in the current phase (a late exit after a stop,
/// a readiness result while waiting) leave the lifecycle unchanged and produce
/// no effects. A [`Effect::Notify`] is appended whenever the visible state changes.
pub fn reduce(
    lc: &ServiceLifecycle,
    event: Event,
    now: Instant,
) -> (ServiceLifecycle, Vec<Effect>) {
    let mut next = lc.clone();
    let mut fx = Vec::new();
    step(&mut next, event, now, &mut fx);
    if next.state(now) != lc.state(now) {
        fx.push(Effect::Notify(next.state(now)));
    }
    (next, fx)
}

fn step(lc: &mut ServiceLifecycle, event: Event, now: Instant, fx: &mut Vec<Effect>) {
    use Phase as P;
    let phase = lc.phase.clone();
    match (phase, event) {
        // A new request: only from a settled phase; running ones keep running.
        (
            P::Pending | P::Stopped | P::Completed | P::Failed { .. },
            Event::StartRequested { unmet },
        ) => {
            lc.restarts = 0;
            lc.consecutive = 0;
            if unmet.is_empty() {
                lc.spawn_effects(now, fx);
            } else {
                lc.phase = P::Waiting { on: unmet.into() };
            }
        }
        (P::Waiting { mut on }, Event::DependencyReady(dep)) => {
            on.retain(|d| *d != dep);
            if on.is_empty() {
                lc.spawn_effects(now, fx);
            } else {
                lc.phase = P::Waiting { on };
            }
        }
        (P::Waiting { on }, Event::DependencyFailed { dep, reason }) if on.contains(&dep) => {
            lc.phase = P::Failed {
                reason: format!("dependency `{dep}` failed: {reason}"),
            };
        }
        // While the run cannot be observed, check verdicts say nothing about it.
        (
            P::Running | P::Healthy | P::Unhealthy,
            Event::ReadinessPassed | Event::ReadinessFailed | Event::LivenessFailed,
        ) if lc.unreachable.is_some() => {}
        // The checks keep running (a passing one tells the host answers again);
        // their verdicts are ignored meanwhile.
        (P::Starting | P::Running | P::Healthy | P::Unhealthy, Event::Unreachable(reason)) => {
            lc.unreachable = Some(reason);
        }
        (P::Starting | P::Running | P::Healthy | P::Unhealthy, Event::Reachable)
            if lc.unreachable.is_some() =>
        {
            lc.unreachable = None;
            if !matches!(lc.phase, P::Starting) {
                lc.probe_effects(fx);
            }
        }
        (P::Starting, Event::Spawned) => {
            lc.phase = P::Running;
            if !lc.policy.has_readiness {
                // Without a readiness check a running service is ready.
                lc.ready_in_run = true;
            }
            if lc.unreachable.is_none() {
                lc.probe_effects(fx);
            }
        }
        (P::Starting, Event::SpawnFailed(err)) => {
            let status = ExitStatus::Unknown;
            lc.last_exit = Some(status);
            let why = format!("cannot start: {err}");
            match lc.policy.restart {
                RestartMode::No => {
                    fx.push(Effect::Report(why.clone()));
                    lc.phase = P::Failed { reason: why }
                }
                RestartMode::Always | RestartMode::OnFailure => lc.restart_or_fail(why, now, fx),
            }
        }
        (P::Running | P::Unhealthy, Event::ReadinessPassed) => {
            lc.phase = P::Healthy;
            lc.first_ready(fx);
        }
        (P::Healthy, Event::ReadinessFailed) => lc.phase = P::Unhealthy,
        // A liveness check counts only once the run has been ready.
        (P::Running | P::Healthy | P::Unhealthy, Event::LivenessFailed) if lc.ready_in_run => {
            if lc.policy.restart == RestartMode::No {
                fx.push(Effect::Report(
                    "liveness check failed; not restarted (restart: no)".to_owned(),
                ));
                lc.phase = P::Unhealthy;
            } else {
                fx.push(Effect::Report(
                    "liveness check failed; stopping it to restart".to_owned(),
                ));
                lc.stop_effects(
                    AfterStop::Restart {
                        reason: "liveness check failed".to_owned(),
                    },
                    fx,
                );
            }
        }
        (P::Starting | P::Running | P::Healthy | P::Unhealthy, Event::Exited(status)) => {
            lc.on_exit(status, now, fx);
        }
        (P::Starting | P::Running, Event::StartupTimeout { last_check }) if !lc.is_ready() => {
            let limit = harness_core::duration::format_duration(
                lc.policy.startup_timeout.unwrap_or_default(),
            );
            let reason = match (&lc.phase, last_check) {
                (P::Starting, _) => format!("not started within {limit} (startup_timeout)"),
                (_, Some(check)) => format!("not healthy within {limit}: last check: {check}"),
                (_, None) => format!("not healthy within {limit}: no check has finished yet"),
            };
            fx.push(Effect::Report(format!("{reason}; stopping it")));
            lc.stop_effects(AfterStop::Fail { reason }, fx);
        }
        (P::Restarting { .. }, Event::BackoffElapsed) => lc.spawn_effects(now, fx),
        (
            P::Pending | P::Stopped | P::Completed | P::Failed { .. },
            Event::Adopted { running_for },
        ) => {
            lc.generation += 1;
            lc.unreachable = None;
            lc.run_started = Some(now.checked_sub(running_for).unwrap_or(now));
            lc.phase = P::Running;
            lc.ready_in_run = !lc.policy.has_readiness;
            lc.probe_effects(fx);
        }
        (P::Pending | P::Stopped | P::Completed | P::Failed { .. }, Event::Lost(reason)) => {
            lc.phase = P::Failed { reason };
        }
        (P::Pending | P::Completed | P::Failed { .. }, Event::StopRequested)
        | (P::Waiting { .. } | P::Restarting { .. }, Event::StopRequested) => {
            lc.phase = P::Stopped;
        }
        (P::Starting | P::Running | P::Healthy | P::Unhealthy, Event::StopRequested) => {
            lc.stop_effects(AfterStop::Stop, fx);
        }
        (P::Stopping { .. }, Event::StopRequested) => {
            lc.phase = P::Stopping {
                then: AfterStop::Stop,
            };
        }
        (P::Stopping { then }, Event::StopCompleted | Event::Exited(_)) => match then {
            AfterStop::Stop => lc.phase = P::Stopped,
            AfterStop::Fail { reason } => lc.phase = P::Failed { reason },
            AfterStop::Restart { reason } => lc.restart_or_fail(reason, now, fx),
        },
        // A spawn that finished after a stop was requested: stop what it started.
        (P::Stopping { .. }, Event::Spawned) => fx.push(Effect::StopProcess {
            signal: lc.policy.stop_signal,
            grace: lc.policy.stop_grace,
        }),
        (P::Stopping { then }, Event::SpawnFailed(_)) => match then {
            AfterStop::Stop => lc.phase = P::Stopped,
            AfterStop::Fail { reason } => lc.phase = P::Failed { reason },
            AfterStop::Restart { reason } => lc.restart_or_fail(reason, now, fx),
        },
        // Everything else is stale or irrelevant in this phase.
        _ => {}
    }
    if !lc.in_run() {
        lc.unreachable = None;
    }
}

#[cfg(test)]
mod tests;

/// How a run ended and how long it lasted, in words: `exited with code 1
/// after 304ms`, `killed by SIGKILL after 2.5s` (the run time left out when
/// unknown). The one wording of an exit, for reasons, log lines and `last_exit`.
pub fn describe_exit(status: ExitStatus, ran: Option<Duration>) -> String {
    match ran {
        Some(d) => format!(
            "{} after {}",
            status.describe(),
            harness_core::duration::format_duration(short(d))
        ),
        None => status.describe(),
    }
}

/// A duration rounded to what a person reads: milliseconds below a second,
/// tenths of a second below a minute, whole seconds above.
fn short(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        Duration::from_millis(ms)
    } else if ms < 60_000 {
        Duration::from_millis((ms + 50) / 100 * 100)
    } else {
        Duration::from_secs(d.as_secs())
    }
}
