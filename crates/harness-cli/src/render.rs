//! Human output: colours per service, durations, timestamps, log lines, the status table.

use std::io::IsTerminal;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use harness_core::{Health, OutputStream, ServiceState, ServiceStatus};
use harness_protocol::{EventItem, EventKind, ProjectSummary};

/// True when stdout gets colours (a terminal without NO_COLOR, or `--color always`).
pub fn stdout_colored() -> bool {
    !matches!(
        anstream::AutoStream::choice(&std::io::stdout()),
        anstream::ColorChoice::Never
    )
}

/// True when stdout is a terminal (live views make sense).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

const PALETTE: [AnsiColor; 6] = [
    AnsiColor::Cyan,
    AnsiColor::Yellow,
    AnsiColor::Green,
    AnsiColor::Magenta,
    AnsiColor::Blue,
    AnsiColor::BrightCyan,
];

/// The stable colour of a service name (the same name always gets the same colour).
pub fn service_style(name: &str) -> Style {
    // FNV-1a: stable across runs and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    Style::new().fg_color(Some(PALETTE[h as usize % PALETTE.len()].into()))
}

/// The style of a state label.
pub fn state_style(state: &ServiceState) -> Style {
    let color = match state {
        ServiceState::Healthy | ServiceState::Completed => AnsiColor::Green,
        ServiceState::Running | ServiceState::Starting => AnsiColor::Cyan,
        ServiceState::Waiting { .. } | ServiceState::Pending => AnsiColor::BrightBlack,
        ServiceState::Unhealthy | ServiceState::Restarting { .. } => AnsiColor::Yellow,
        ServiceState::Failed { .. } | ServiceState::Unknown { .. } => AnsiColor::Red,
        ServiceState::Stopping | ServiceState::Stopped => AnsiColor::BrightBlack,
    };
    Style::new().fg_color(Some(color.into()))
}

/// A compact human duration: `850ms`, `12s`, `3m05s`, `2h07m`, `4d03h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds: `2026-11-25T17:30:01.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Formats one log line: `name | text` (stdout), `name ! text` (stderr) or
/// `name ! harness: text` (what harness says about the service: exits, restarts,
/// failures to start), the name padded to `width` and coloured, optionally
/// preceded by a timestamp.
pub fn log_line(
    service: &str,
    width: usize,
    stream: OutputStream,
    text: &str,
    timestamp_ms: Option<u64>,
) -> String {
    let name_style = service_style(service);
    let (sep, sep_style) = match stream {
        OutputStream::Stdout => ('|', name_style),
        OutputStream::Stderr => (
            '!',
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        ),
        OutputStream::Harness => (
            '!',
            Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold(),
        ),
    };
    let text = if stream == OutputStream::Harness {
        let bold = Style::new().bold();
        format!("{bold}harness:{bold:#} {text}")
    } else {
        text.to_owned()
    };
    let ts = timestamp_ms
        .map(|ms| {
            let dim = Style::new().dimmed();
            format!("{dim}{}{dim:#} ", rfc3339_ms(ms))
        })
        .unwrap_or_default();
    format!("{ts}{name_style}{service:<width$}{name_style:#} {sep_style}{sep}{sep_style:#} {text}")
}

/// The uptime shown for a service: time since its current run started, while alive.
pub fn uptime(status: &ServiceStatus, now_ms: u64) -> Option<Duration> {
    if !status.state.is_alive() {
        return None;
    }
    status
        .started_at_ms
        .map(|t| Duration::from_millis(now_ms.saturating_sub(t)))
}

fn table_color(state: &ServiceState) -> Color {
    match state {
        ServiceState::Healthy | ServiceState::Completed => Color::Green,
        ServiceState::Running | ServiceState::Starting => Color::Cyan,
        ServiceState::Unhealthy | ServiceState::Restarting { .. } => Color::Yellow,
        ServiceState::Failed { .. } | ServiceState::Unknown { .. } => Color::Red,
        _ => Color::DarkGrey,
    }
}

/// Widest STATE cell of the status table; a longer reason is cut with `…`
/// (`status --json` has it whole).
const STATE_CELL_WIDTH: usize = 64;

/// A state in a few words, with its reason: `restarting in 1.8s: exited with
/// code 1 after 400ms`, `failed: ...`, cut to `max` characters.
pub fn state_summary(state: &ServiceState, max: usize) -> String {
    let text = match state {
        ServiceState::Restarting { in_ms, reason, .. } => {
            let when = human_duration(Duration::from_millis(*in_ms));
            if reason.is_empty() {
                format!("restarting in {when}")
            } else {
                format!("restarting in {when}: {reason}")
            }
        }
        other => other.to_string(),
    };
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The `harness status` table: NAME KIND HOST STATE HEALTH PID RESTARTS UPTIME.
pub fn status_table(rows: &[ServiceStatus], now_ms: u64, colored: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "NAME", "KIND", "HOST", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME",
        ]);
    if colored {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    for s in rows {
        let state_cell = Cell::new(state_summary(&s.state, STATE_CELL_WIDTH));
        let health_cell = Cell::new(s.health.to_string());
        let (state_cell, health_cell) = if colored {
            let hc = match s.health {
                Health::Healthy => Color::Green,
                Health::Unhealthy => Color::Red,
                Health::Unknown => Color::DarkGrey,
            };
            (state_cell.fg(table_color(&s.state)), health_cell.fg(hc))
        } else {
            (state_cell, health_cell)
        };
        table.add_row(vec![
            Cell::new(s.name.as_str()),
            Cell::new(s.kind.to_string()),
            Cell::new(&s.host),
            state_cell,
            health_cell,
            Cell::new(s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
            Cell::new(s.restarts.to_string()),
            Cell::new(
                uptime(s, now_ms)
                    .map(human_duration)
                    .unwrap_or_else(|| "-".into()),
            ),
        ]);
    }
    plain_table(&table)
}

/// A table of the NOTHING preset as text, without the padding of its left edge.
fn plain_table(table: &Table) -> String {
    // The NOTHING preset pads every cell with one space on each side; trim the left edge.
    let mut out = String::new();
    for line in table.to_string().lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

/// One line of `harness events`: the time (UTC), the service padded to `width` and
/// coloured, and what happened.
pub fn event_line(ev: &EventItem, width: usize) -> String {
    let name = ev.service.as_str();
    let name_style = service_style(name);
    let dim = Style::new().dimmed();
    let bold = Style::new().bold();
    let state_style = state_style(&ev.state);
    let message = ev.message.as_deref().unwrap_or("");
    let what = match ev.kind {
        EventKind::Health => {
            let verdict = Style::new().fg_color(Some(
                match ev.health {
                    Health::Healthy => AnsiColor::Green,
                    Health::Unhealthy => AnsiColor::Red,
                    Health::Unknown => AnsiColor::BrightBlack,
                }
                .into(),
            ));
            let detail = if message.is_empty() {
                String::new()
            } else {
                format!(" ({message})")
            };
            format!("health: {verdict}{}{verdict:#}{detail}", ev.health)
        }
        EventKind::Report => format!("{bold}harness:{bold:#} {message}"),
        EventKind::Reload => format!("{bold}reloaded:{bold:#} {message}"),
        EventKind::State | EventKind::Other => {
            let pid = match (&ev.state, ev.pid) {
                (ServiceState::Running | ServiceState::Healthy, Some(pid)) => {
                    format!(" (pid {pid})")
                }
                _ => String::new(),
            };
            format!("{state_style}{}{state_style:#}{pid}", ev.state)
        }
    };
    format!(
        "{dim}{}{dim:#} {name_style}{name:<width$}{name_style:#} {what}",
        rfc3339_ms(ev.ts_ms)
    )
}

/// The `harness ls` table: PROJECT SERVICES STATES FILES DIRECTORY.
pub fn projects_table(rows: &[ProjectSummary], colored: bool) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["PROJECT", "SERVICES", "STATES", "FILES", "DIRECTORY"]);
    if colored {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    for p in rows {
        let states: Vec<String> = p.states.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let files: Vec<String> = p.files.iter().map(|f| f.display().to_string()).collect();
        let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
        table.add_row(vec![
            Cell::new(p.project.as_str()),
            Cell::new(p.services.to_string()),
            Cell::new(or_dash(states.join(", "))),
            Cell::new(or_dash(files.join(", "))),
            Cell::new(
                p.working_dir
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |d| d.display().to_string()),
            ),
        ]);
    }
    plain_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness_core::{ServiceKind, ServiceName};

    fn status(name: &str, state: ServiceState, pid: Option<u32>) -> ServiceStatus {
        ServiceStatus {
            name: ServiceName::new(name).unwrap(),
            kind: ServiceKind::Process,
            host: "local".into(),
            state,
            health: Health::Healthy,
            pid,
            container_id: None,
            restarts: 2,
            exit_code: None,
            started_at_ms: Some(1_000),
            last_exit: None,
            version: None,
        }
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 3600 + 7 * 60)),
            "2h07m"
        );
        assert_eq!(
            human_duration(Duration::from_secs(4 * 86400 + 3 * 3600)),
            "4d03h"
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_620_601_005), "2026-11-25T15:30:01.005Z");
    }

    #[test]
    fn service_colours_are_stable() {
        assert_eq!(service_style("api"), service_style("api"));
    }

    #[test]
    fn log_lines_mark_stderr() {
        let plain = |s: String| {
            let mut out = Vec::new();
            let mut w = anstream::StripStream::new(&mut out);
            std::io::Write::write_all(&mut w, s.as_bytes()).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            plain(log_line("db", 4, OutputStream::Stdout, "ready", None)),
            "db   | ready"
        );
        assert_eq!(
            plain(log_line("db", 2, OutputStream::Stderr, "oops", Some(0))),
            "1970-01-01T00:00:00.000Z db ! oops"
        );
    }

    #[test]
    fn table_has_the_columns_and_uptime_only_when_alive() {
        let rows = [
            status("api", ServiceState::Healthy, Some(42)),
            status(
                "job",
                ServiceState::Failed {
                    reason: "exit code 3".into(),
                },
                None,
            ),
        ];
        let out = status_table(&rows, 66_000, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{out}");
        for col in [
            "KIND", "HOST", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME",
        ] {
            assert!(lines[0].contains(col), "{out}");
        }
        assert!(
            lines[1].contains("42") && lines[1].contains("1m05s"),
            "{out}"
        );
        assert!(lines[2].contains("failed: exit code 3"), "{out}");
        assert!(lines[2].trim_end().ends_with('-'), "{out}");
        assert!(!out.contains('\u{1b}'), "no escapes when not coloured");
    }

    #[test]
    fn the_state_cell_says_why_a_service_restarts_and_is_cut_when_long() {
        let st = ServiceState::Restarting {
            attempt: 2,
            in_ms: 1800,
            reason: "exited with code 1 after 400ms".into(),
        };
        assert_eq!(
            state_summary(&st, 64),
            "restarting in 1s: exited with code 1 after 400ms"
        );
        let cut = state_summary(&st, 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.ends_with('…'), "{cut}");
    }
}
