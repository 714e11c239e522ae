//! The live progress view of `harness up`: a line per service with its state, the time
//! since `up` began (ticking while the service is on its way) and, while it starts, its
//! last output line, dimmed. On a terminal it redraws in place (indicatif); otherwise it
//! prints one plain line per state change.
//!
//! Marks: `✔` ready (healthy, or a job that completed), `●` running without a readiness
//! check (nothing says it is ready), `✖` failed, `○` not ready when `up` stopped waiting.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use harness_core::ServiceState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::render::{human_duration, service_style, state_style};

/// True when this state ends the progress of a service during `up`; `checked` says whether
/// the service has a readiness check (without one, running is as far as it gets).
pub fn is_final(state: &ServiceState, checked: bool) -> bool {
    match state {
        ServiceState::Healthy
        | ServiceState::Completed
        | ServiceState::Failed { .. }
        | ServiceState::Unknown { .. }
        | ServiceState::Stopped => true,
        ServiceState::Running => !checked,
        _ => false,
    }
}

/// True when this state counts as "up" for `up --wait`: ready, or a job that completed.
/// A running service without a readiness check is also up.
pub fn is_ready(state: &ServiceState) -> bool {
    matches!(state, ServiceState::Healthy | ServiceState::Completed)
}

/// The mark drawn before a service whose progress ended in `state`: `✔` only for ready.
fn mark(state: &ServiceState, checked: bool) -> &'static str {
    match state {
        ServiceState::Healthy | ServiceState::Completed => "✔",
        ServiceState::Failed { .. } | ServiceState::Unknown { .. } => "✖",
        ServiceState::Running if !checked => "●",
        ServiceState::Stopped => "■",
        _ => "○",
    }
}

/// A plain (non-terminal) progress line: `  +1.2s  api      healthy`.
pub fn plain_line(elapsed: Duration, service: &str, width: usize, state: &ServiceState) -> String {
    format!(
        "+{:>6}  {service:<width$}  {state}",
        format!("{:.1}s", elapsed.as_secs_f64())
    )
}

/// A service's output line as the live view shows it: one line of plain text (escape
/// sequences and control characters removed, tabs as spaces). The view truncates it to
/// the terminal's width.
pub fn output_excerpt(line: &str) -> String {
    let plain = anstream::adapter::strip_str(line).to_string();
    plain
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// The line of a service that is still on its way: spinner, name and state, the ticking
/// time since `up` began, and its last output line, dimmed, cut at the terminal's width.
fn active_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}  {since}  {wide_msg:.dim}")
        .expect("the progress template is valid")
        .with_key("since", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:>6}", human_duration(s.elapsed()));
        })
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "○"])
}

/// The line of a service whose progress ended: its mark, name and state, and the time.
fn final_style(mark: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{mark} {{prefix}}  {{msg}}"))
        .expect("the progress template is valid")
}

struct Line {
    bar: ProgressBar,
    /// It has a readiness check.
    checked: bool,
    /// The last output line, shown while the service is on its way.
    output: String,
}

impl Line {
    fn new(multi: &MultiProgress, checked: bool) -> Self {
        let bar = multi.add(ProgressBar::new_spinner().with_style(active_style()));
        bar.enable_steady_tick(Duration::from_millis(100));
        Line {
            bar,
            checked,
            output: String::new(),
        }
    }

    /// Draws `state`: a final one with its mark and the time it was reached, a service
    /// on its way with its ticking time and last output line. The line stays live, so a
    /// service that fails after it ran is redrawn.
    fn show(&self, service: &str, width: usize, state: &ServiceState, elapsed: Duration) {
        self.bar.set_prefix(prefix(service, width, state));
        if is_final(state, self.checked) {
            self.bar.set_style(final_style(mark(state, self.checked)));
            self.bar.set_message(human_duration(elapsed));
        } else {
            self.bar.set_style(active_style());
            self.bar.set_message(self.output.clone());
        }
    }
}

enum Sink {
    Plain,
    Live {
        multi: MultiProgress,
        lines: BTreeMap<String, Line>,
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
    /// A view for `services`, each with whether it has a readiness check (the width of
    /// the name column comes from them). `live` redraws in place; `quiet` prints nothing.
    pub fn new<'a>(
        services: impl IntoIterator<Item = (&'a str, bool)>,
        live: bool,
        quiet: bool,
    ) -> Self {
        let services: Vec<(&str, bool)> = services.into_iter().collect();
        let width = services.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let sink = if quiet {
            Sink::Quiet
        } else if live {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let mut lines = BTreeMap::new();
            for (n, checked) in services {
                let line = Line::new(&multi, checked);
                line.bar
                    .set_prefix(prefix(n, width, &ServiceState::Pending));
                lines.insert(n.to_string(), line);
            }
            Sink::Live { multi, lines }
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
            Sink::Live { multi, lines } => {
                let line = lines
                    .entry(service.to_string())
                    .or_insert_with(|| Line::new(multi, false));
                if !line.bar.is_finished() {
                    line.show(service, width, state, elapsed);
                }
            }
        }
    }

    /// Shows `text` as the last output line of `service` while it is on its way.
    pub fn output(&mut self, service: &str, text: &str) {
        let on_its_way = |line: &Line| {
            self.states
                .get(service)
                .is_none_or(|(s, _)| !is_final(s, line.checked))
        };
        if let Sink::Live { lines, .. } = &mut self.sink
            && let Some(line) = lines.get_mut(service)
        {
            let excerpt = output_excerpt(text);
            if excerpt.is_empty() {
                return;
            }
            line.output = excerpt;
            if !line.bar.is_finished() && on_its_way(line) {
                line.bar.set_message(line.output.clone());
            }
        }
    }

    /// The last state seen of each service.
    #[cfg(test)]
    pub fn states(&self) -> impl Iterator<Item = (&str, &ServiceState)> {
        self.states.iter().map(|(k, (s, _))| (k.as_str(), s))
    }

    /// Stops redrawing, leaving the last frame on screen: a service still on its way is
    /// marked not ready (`○`), never `✔`.
    pub fn finish(&mut self) {
        let now = self.started.elapsed();
        if let Sink::Live { lines, .. } = &mut self.sink {
            for (name, line) in lines.iter() {
                if line.bar.is_finished() {
                    continue;
                }
                let (state, at) = self
                    .states
                    .get(name)
                    .map_or((ServiceState::Pending, now), |(s, at)| {
                        (s.clone(), at.duration_since(self.started))
                    });
                let at = if is_final(&state, line.checked) {
                    at
                } else {
                    now
                };
                line.bar.set_style(final_style(mark(&state, line.checked)));
                line.bar.abandon_with_message(human_duration(at));
            }
        }
    }
}

/// `name  state`, each in its colour, the name padded to the column.
fn prefix(service: &str, width: usize, state: &ServiceState) -> String {
    let name = service_style(service);
    let st = state_style(state);
    format!("{name}{service:<width$}{name:#}  {st}{state}{st:#}")
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
        assert!(is_final(&ServiceState::Healthy, true));
        assert!(is_final(&ServiceState::Failed { reason: "x".into() }, true));
        assert!(!is_final(&ServiceState::Starting, false));
        assert!(is_final(&ServiceState::Running, false));
        assert!(!is_final(&ServiceState::Running, true));
        assert!(is_ready(&ServiceState::Completed));
        assert!(!is_ready(&ServiceState::Running));
    }

    #[test]
    fn only_ready_services_get_a_tick() {
        let failed = ServiceState::Failed { reason: "x".into() };
        assert_eq!(mark(&failed, true), "✖");
        assert_eq!(mark(&ServiceState::Pending, true), "○");
        assert_eq!(mark(&ServiceState::Starting, false), "○");
        assert_eq!(mark(&ServiceState::Running, true), "○");
        assert_eq!(mark(&ServiceState::Running, false), "●");
        assert_eq!(mark(&ServiceState::Healthy, true), "✔");
        assert_eq!(mark(&ServiceState::Completed, false), "✔");
    }

    #[test]
    fn output_excerpts_are_one_plain_line() {
        assert_eq!(
            output_excerpt("\u{1b}[31mcompiling\u{1b}[0m\tfoo\r\n"),
            "compiling foo"
        );
    }

    #[test]
    fn repeated_states_are_recorded_once() {
        let mut p = Progress::new([("a", true)], false, true);
        p.update("a", &ServiceState::Starting);
        p.update("a", &ServiceState::Starting);
        p.update("a", &ServiceState::Healthy);
        let states: Vec<_> = p.states().collect();
        assert_eq!(states, vec![("a", &ServiceState::Healthy)]);
    }
}
