//! Whether a TCP port a local service is checked on is already taken by
//! another process before the service starts (ADR 019).
//!
//! A TCP or HTTP check only learns that *something* answers on the port. If
//! another process held the port before the service started, that something
//! is not the service: [`taken_before_start`] finds out with a bind check
//! (binding the wildcard address fails while any process listens on the
//! port) and names the holder from `/proc` where it can, so the check can say
//! so instead of calling the service healthy.

use std::net::{Ipv4Addr, TcpListener};

use harness_config::{Check, ServiceSpec};

/// The loopback port a check of `check` connects to on this host, if it is one.
pub fn local_port(check: &Check) -> Option<u16> {
    let is_local = |host: &str| {
        matches!(
            host.trim_start_matches('[').trim_end_matches(']'),
            "127.0.0.1" | "localhost" | "::1" | "0.0.0.0"
        )
    };
    match check {
        Check::Tcp { host, port } => host.as_deref().is_none_or(is_local).then_some(*port),
        Check::Http { url, .. } => {
            let uri: http::Uri = url.parse().ok()?;
            let host = uri.host()?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            is_local(host).then_some(port)
        }
        Check::Exec { .. } | Check::LogLine { .. } => None,
    }
}

/// For each loopback port `spec`'s checks connect to that another process
/// holds now, before the service starts: the port and a sentence naming the
/// holder. Blocking (reads `/proc`).
pub fn taken_before_start(spec: &ServiceSpec) -> Vec<(u16, String)> {
    let mut ports: Vec<u16> = [&spec.readiness, &spec.liveness]
        .into_iter()
        .flatten()
        .filter_map(|p| local_port(&p.check))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .filter(|&port| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err())
        .map(|port| {
            let holder = match holder_of(port) {
                Some((pid, name)) => format!("pid {pid} ({name})"),
                None => "another process".to_owned(),
            };
            (
                port,
                format!(
                    "port {port} was already taken by {holder} before `{}` started: \
                     its check cannot tell the service from that process",
                    spec.name
                ),
            )
        })
        .collect()
}

/// The pid and command name of a process listening on TCP `port`, from
/// `/proc/net/tcp{,6}` and the processes' open files (only those this
/// process may read).
fn holder_of(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                return Some((pid, name));
            }
        }
    }
    None
}

/// The inodes of sockets listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let listening = *f.get(3)? == LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| f.get(9).map(|s| (*s).to_owned()))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_on_this_host_have_a_local_port() {
        let tcp = |host: Option<&str>| Check::Tcp {
            host: host.map(str::to_owned),
            port: 8080,
        };
        assert_eq!(local_port(&tcp(None)), Some(8080));
        assert_eq!(local_port(&tcp(Some("localhost"))), Some(8080));
        assert_eq!(local_port(&tcp(Some("10.0.0.2"))), None);
        let http = |url: &str| Check::Http {
            url: url.to_owned(),
            expected_status: None,
        };
        assert_eq!(
            local_port(&http("http://127.0.0.1:9000/health")),
            Some(9000)
        );
        assert_eq!(local_port(&http("http://[::1]/")), Some(80));
        assert_eq!(local_port(&http("https://db.example/")), None);
    }

    #[test]
    fn a_port_held_by_this_process_is_taken_and_named() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let mut spec = ServiceSpec::process(
            harness_core::ServiceName::new("api").unwrap(),
            "api",
            vec![],
        );
        spec.readiness = Some(harness_config::Probe::new(Check::Tcp { host: None, port }));
        let taken = taken_before_start(&spec);
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!(taken[0].0, port);
        let me = std::process::id();
        assert!(
            taken[0]
                .1
                .starts_with(&format!("port {port} was already taken by pid {me} (")),
            "{}",
            taken[0].1
        );
        drop(held);
        assert!(taken_before_start(&spec).is_empty(), "free again");
    }
}
