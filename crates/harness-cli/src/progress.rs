//! The live progress view of `harness up`: a line per service (waiting on X / starting /
//! healthy), with the time since `up` began. On a terminal it redraws in place (indicatif);
//! otherwise it prints one plain line per state change.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use harness_core::ServiceState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::render::{human_duration, service_style, state_style};

/// True when this state ends the progress of a service during `up`.
pub fn is_final(state: &ServiceState) -> bool {
    matches!(
        state,
        ServiceState::Healthy
            | ServiceState::Completed
            | ServiceState::Failed { .. }
            | ServiceState::Stopped
    )
}

/// True when this state counts as "up" for `up --wait`: ready, or a job that completed.
/// A running service without a readiness check is also up.
pub fn is_ready(state: &ServiceState) -> bool {
    matches!(state, ServiceState::Healthy | ServiceState::Completed)
}

fn symbol(state: &ServiceState) -> &'static str {
    match state {
        ServiceState::Healthy | ServiceState::Completed => "✔",
        ServiceState::Failed { .. } => "✖",
        ServiceState::Running => "●",
        _ => "…",
    }
}

/// A plain (non-terminal) progress line: `  +1.2s  api      healthy`.
pub fn plain_line(elapsed: Duration, service: &str, width: usize, state: &ServiceState) -> String {
    format!(
        "+{:>6}  {service:<width$}  {state}",
        format!("{:.1}s", elapsed.as_secs_f64())
    )
}

enum Sink {
    Plain,
    Live {
        multi: MultiProgress,
        bars: BTreeMap<String, ProgressBar>,
    },
    Quiet,
}

/// The progress view of one `up`.
pub struct Progress {
    started: Instant,
    width: usize,
    sink: Sink,
    states: BTreeMap<String, (ServiceState, Instant)>,
}

impl Progress {
    /// A view for `services` (the width of the name column comes from them).
    /// `live` redraws in place; `quiet` prints nothing.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>, live: bool, quiet: bool) -> Self {
        let names: Vec<&str> = services.into_iter().collect();
        let width = names.iter().map(|s| s.len()).max().unwrap_or(0);
        let sink = if quiet {
            Sink::Quiet
        } else if live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg}")
                .expect("the progress template is valid")
                .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "✔"]);
            let mut bars = BTreeMap::new();
            for n in &names {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.enable_steady_tick(Duration::from_millis(100));
                bar.set_message(format!("{n:<width$}  pending"));
                bars.insert((*n).to_string(), bar);
            }
            Sink::Live { multi, bars }
        } else {
            Sink::Plain
        };
        Progress {
            started: Instant::now(),
            width,
            sink,
            states: BTreeMap::new(),
        }
    }

    /// Records a new state of `service` and shows it.
    pub fn update(&mut self, service: &str, state: &ServiceState) {
        if self.states.get(service).is_some_and(|(s, _)| s == state) {
            return;
        }
        let now = Instant::now();
        self.states
            .insert(service.to_string(), (state.clone(), now));
        let elapsed = now.duration_since(self.started);
        let width = self.width.max(service.len());
        match &mut self.sink {
            Sink::Quiet => {}
            Sink::Plain => {
                let mut err = anstream::stderr();
                let _ = writeln!(err, "{}", plain_line(elapsed, service, width, state));
            }
            Sink::Live { multi, bars } => {
                let name = service_style(service);
                let st = state_style(state);
                let msg = format!(
                    "{name}{service:<width$}{name:#}  {st}{state}{st:#}  ({})",
                    human_duration(elapsed)
                );
                let bar = bars.entry(service.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.enable_steady_tick(Duration::from_millis(100));
                    b
                });
                if is_final(state) {
                    bar.set_style(
                        ProgressStyle::with_template(&format!("{} {{msg}}", symbol(state)))
                            .expect("the progress template is valid"),
                    );
                    bar.finish_with_message(msg);
                } else {
                    bar.set_message(msg);
                }
            }
        }
    }

    /// The last state seen of each service.
    #[cfg(test)]
    pub fn states(&self) -> impl Iterator<Item = (&str, &ServiceState)> {
        self.states.iter().map(|(k, (s, _))| (k.as_str(), s))
    }

    /// Stops redrawing (leaves the last frame on screen).
    pub fn finish(&mut self) {
        if let Sink::Live { bars, .. } = &mut self.sink {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_time_name_and_state() {
        let line = plain_line(
            Duration::from_millis(1250),
            "api",
            6,
            &ServiceState::Waiting {
                on: harness_core::ServiceName::new("db").unwrap(),
            },
        );
        assert_eq!(line, "+  1.2s  api     waiting on db");
    }

    #[test]
    fn final_and_ready_states() {
        assert!(is_final(&ServiceState::Healthy));
        assert!(is_final(&ServiceState::Failed { reason: "x".into() }));
        assert!(!is_final(&ServiceState::Starting));
        assert!(is_ready(&ServiceState::Completed));
        assert!(!is_ready(&ServiceState::Running));
    }

    #[test]
    fn repeated_states_are_recorded_once() {
        let mut p = Progress::new(["a"], false, true);
        p.update("a", &ServiceState::Starting);
        p.update("a", &ServiceState::Starting);
        p.update("a", &ServiceState::Healthy);
        let states: Vec<_> = p.states().collect();
        assert_eq!(states, vec![("a", &ServiceState::Healthy)]);
    }
}
