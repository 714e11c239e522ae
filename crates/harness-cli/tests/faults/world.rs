//! What of one project exists on each host, seen without asking the daemon:
//! this machine's `/proc`, the Docker engine (containers by label, the
//! project network) and the node (its `/proc`, read inside the node's
//! container); and the invariants that compare it with `status`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use harness_core::{ServiceKind, ServiceState, ServiceStatus};

/// A process of this machine whose environment names the project.
#[derive(Debug, Clone)]
pub struct LocalProc {
    pub pid: u32,
    pub pgid: u32,
    pub service: String,
    pub args: String,
}

/// A container labelled with the project.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub service: String,
    pub running: bool,
    /// Its main process on this machine (0 when it does not run).
    pub pid: u32,
}

/// What a process on the node is to the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRole {
    /// The wrapper a remote service runs under (its pid is the service's pid).
    Wrapper(String),
    /// The service's program or one of its children (environment names it).
    Program(String),
    /// Something else working in the project's directory (log followers,
    /// exit watchers, control scripts).
    Helper,
}

/// A process on the node that belongs to the project.
#[derive(Debug, Clone)]
pub struct NodeProc {
    pub pid: u32,
    pub pgid: u32,
    pub role: NodeRole,
    pub args: String,
}

/// Everything of the project found on the hosts at one moment.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub local: Vec<LocalProc>,
    pub containers: Vec<Container>,
    /// Whether the project network exists on this machine's engine.
    pub network: bool,
    pub node: Vec<NodeProc>,
    /// What could not be looked at, and why.
    pub errors: Vec<String>,
}

/// The process-id namespace of `pid` (processes of containers are in others).
fn pid_namespace(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The state letter and process group of a `/proc/PID/stat` text.
fn state_and_group(stat: &str) -> Option<(char, u32)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((state, pgid))
}

/// Processes of this machine (in this pid namespace, not zombies) whose
/// environment holds `HARNESS_PROJECT=project`.
pub fn local_processes(project: &str) -> Vec<LocalProc> {
    let ours = pid_namespace("self");
    let want = format!("HARNESS_PROJECT={project}");
    let mut out = Vec::new();
    for pid in command_executor::all_pids() {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if !vars.contains(&want.as_bytes()) || pid_namespace(&pid.to_string()) != ours {
            continue;
        }
        let Some((state, pgid)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| state_and_group(&s))
        else {
            continue;
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        let service = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"HARNESS_SERVICE="))
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        let args = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        out.push(LocalProc {
            pid,
            pgid,
            service,
            args,
        });
    }
    out
}

/// Runs the docker CLI; its stdout, or why it failed.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Containers of this machine's engine labelled `harness.project=project`.
pub fn containers(project: &str) -> Result<Vec<Container>, String> {
    let listed = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label=harness.project={project}"),
        "--format",
        "{{.ID}}\t{{.Label \"harness.service\"}}\t{{.State}}",
    ])?;
    let mut out = Vec::new();
    for line in listed.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split('\t');
        let (id, service, state) = (
            f.next().unwrap_or_default(),
            f.next().unwrap_or_default(),
            f.next().unwrap_or_default(),
        );
        let running = state == "running";
        let pid = if running {
            // A container that ended meanwhile has no pid: 0, as for one stopped.
            docker(&["inspect", "-f", "{{.State.Pid}}", id])
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        out.push(Container {
            id: id.to_owned(),
            service: service.to_owned(),
            running,
            pid,
        });
    }
    Ok(out)
}

/// Whether the project network exists on this machine's engine.
pub fn network_exists(project: &str) -> Result<bool, String> {
    let name = format!("harness-{project}");
    Ok(docker(&["network", "ls", "--format", "{{.Name}}"])?
        .lines()
        .any(|l| l.trim() == name))
}

/// Prints one line per process of the node: pid, process group, the
/// HARNESS_ variables of its environment, its working directory and
/// arguments, tab-separated (busybox sh).
const NODE_PS: &str = r#"for d in /proc/[0-9]*; do
  p=${d#/proc/}
  s=$(cat $d/stat 2>/dev/null) || continue
  s=${s##*") "}
  set -- $s
  [ "$1" = Z ] && continue
  e=$(tr '\0' '\n' < $d/environ 2>/dev/null | grep -E '^HARNESS_(PROJECT|SERVICE)=' | tr '\n' ' ')
  w=$(readlink $d/cwd 2>/dev/null)
  a=$(tr '\0\n\t' '   ' < $d/cmdline 2>/dev/null)
  printf '%s\t%s\t%s\t%s\t%s\n' "$p" "$3" "$e" "$w" "$a"
done"#;

/// The processes of `project` on the node in container `node` (read inside
/// the container, so also while the node is cut off its network).
pub fn node_processes(node: &str, project: &str) -> Result<Vec<NodeProc>, String> {
    let listed = docker(&["exec", node, "sh", "-c", NODE_PS])?;
    let dir = format!("/.harness/{project}");
    let env_project = format!("HARNESS_PROJECT={project}");
    let mut out = Vec::new();
    for line in listed.lines() {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        let [pid, pgid, env, cwd, args] = f[..] else {
            continue;
        };
        let (Ok(pid), Ok(pgid)) = (pid.parse::<u32>(), pgid.parse::<u32>()) else {
            continue;
        };
        let vars: Vec<&str> = env.split_whitespace().collect();
        let wrapper_of = args
            .split_whitespace()
            .skip_while(|a| *a != "harness-run")
            .nth(1)
            .and_then(|d| d.split_once(&format!("{dir}/")))
            .map(|(_, service)| service.to_owned());
        let role = if let Some(service) = wrapper_of {
            NodeRole::Wrapper(service)
        } else if vars.contains(&env_project.as_str()) {
            let service = vars
                .iter()
                .find_map(|v| v.strip_prefix("HARNESS_SERVICE="))
                .unwrap_or_default();
            NodeRole::Program(service.to_owned())
        } else if cwd.contains(&format!("{dir}/"))
            || cwd.ends_with(&dir)
            || args.contains(&format!(".harness/{project}/"))
        {
            NodeRole::Helper
        } else {
            continue;
        };
        out.push(NodeProc {
            pid,
            pgid,
            role,
            args: args.trim().to_owned(),
        });
    }
    Ok(out)
}

impl World {
    /// Looks at every host now.
    pub fn observe(project: &str, node: &str) -> World {
        let mut w = World {
            local: local_processes(project),
            ..World::default()
        };
        match containers(project) {
            Ok(c) => w.containers = c,
            Err(e) => w.errors.push(e),
        }
        match network_exists(project) {
            Ok(n) => w.network = n,
            Err(e) => w.errors.push(e),
        }
        match node_processes(node, project) {
            Ok(p) => w.node = p,
            Err(e) => w.errors.push(e),
        }
        w
    }

    fn leaders(&self) -> impl Iterator<Item = &LocalProc> {
        self.local.iter().filter(|p| p.pid == p.pgid)
    }

    fn wrappers(&self) -> impl Iterator<Item = (&NodeProc, &str)> {
        self.node.iter().filter_map(|p| match &p.role {
            NodeRole::Wrapper(s) => Some((p, s.as_str())),
            _ => None,
        })
    }

    /// Where what the daemon says (`rows`) and what runs disagree, in words.
    pub fn disagreements(&self, rows: &[ServiceStatus]) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.errors {
            out.push(format!("cannot look at every host: {e}"));
        }
        let row = |s: &str| rows.iter().find(|r| r.name.as_str() == s);

        // Every process that exists is known, with its pid; one per service.
        let mut per_service: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for p in self.leaders() {
            per_service.entry(&p.service).or_default().push(p.pid);
            match row(&p.service) {
                None => out.push(format!(
                    "process {} of service `{}` ({}) runs, unknown to the daemon",
                    p.pid, p.service, p.args
                )),
                Some(r) if r.pid != Some(p.pid) || !r.state.is_alive() => out.push(format!(
                    "process {} of `{}` ({}) runs, the daemon says {} with pid {:?}",
                    p.pid, p.service, p.args, r.state, r.pid
                )),
                Some(_) => {}
            }
        }
        for p in self.local.iter().filter(|p| p.pid != p.pgid) {
            if !self.leaders().any(|l| l.pid == p.pgid) {
                out.push(format!(
                    "process {} of `{}` ({}) outlived its service's process group {}",
                    p.pid, p.service, p.args, p.pgid
                ));
            }
        }
        let mut running_containers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in self.containers.iter().filter(|c| c.running) {
            running_containers
                .entry(&c.service)
                .or_default()
                .push(&c.id);
            match row(&c.service) {
                Some(r)
                    if r.state.is_alive()
                        && r.container_id.as_deref() == Some(c.id.as_str())
                        && r.pid == Some(c.pid) => {}
                Some(r) => out.push(format!(
                    "container {} (pid {}) of `{}` runs, the daemon says {} with container {:?} and pid {:?}",
                    short(&c.id),
                    c.pid,
                    c.service,
                    r.state,
                    r.container_id.as_deref().map(short),
                    r.pid
                )),
                None => out.push(format!(
                    "container {} of service `{}` runs, unknown to the daemon",
                    short(&c.id),
                    c.service
                )),
            }
        }
        let mut wrappers: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (p, service) in self.wrappers() {
            wrappers.entry(service).or_default().push(p.pid);
            match row(service) {
                Some(r) if r.pid == Some(p.pid) && r.state.is_alive() => {}
                Some(r) => out.push(format!(
                    "remote process {} of `{service}` runs on the node, the daemon says {} with pid {:?}",
                    p.pid, r.state, r.pid
                )),
                None => out.push(format!(
                    "remote process {} of service `{service}` runs on the node, unknown to the daemon",
                    p.pid
                )),
            }
        }
        for p in &self.node {
            if let NodeRole::Program(service) = &p.role
                && !self
                    .wrappers()
                    .any(|(w, s)| w.pid == p.pgid && s == service)
            {
                out.push(format!(
                    "remote process {} of `{service}` ({}) runs outside its service's wrapper (group {})",
                    p.pid, p.args, p.pgid
                ));
            }
        }
        for (what, map) in [("processes", per_service), ("remote processes", wrappers)] {
            for (service, pids) in map.into_iter().filter(|(_, p)| p.len() > 1) {
                out.push(format!("`{service}` has two or more {what}: {pids:?}"));
            }
        }
        for (service, ids) in running_containers.into_iter().filter(|(_, i)| i.len() > 1) {
            let ids: Vec<&str> = ids.into_iter().map(short).collect();
            out.push(format!("`{service}` has two or more containers: {ids:?}"));
        }

        // What the daemon says runs, runs; what it says does not, does not.
        for r in rows {
            let name = r.name.as_str();
            let runs = match r.kind {
                ServiceKind::Docker => self
                    .containers
                    .iter()
                    .any(|c| c.running && c.service == name),
                ServiceKind::Remote | ServiceKind::Package => {
                    self.wrappers().any(|(_, s)| s == name)
                }
                _ => self.leaders().any(|p| p.service == name),
            };
            match &r.state {
                s if s.is_alive() && !runs => out.push(format!(
                    "the daemon says `{name}` is {s} with pid {:?}, nothing of it runs",
                    r.pid
                )),
                s if s.is_alive() && r.pid.is_none() => {
                    out.push(format!("the daemon says `{name}` is {s} without a pid"))
                }
                // A process found but not alive in status is reported above.
                _ => {}
            }
        }
        out
    }

    /// What of the project is left, in words (nothing may be after `down`).
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.errors {
            out.push(format!("cannot look at every host: {e}"));
        }
        for p in &self.local {
            out.push(format!(
                "process {} of `{}` ({}) is left on this machine",
                p.pid, p.service, p.args
            ));
        }
        for c in &self.containers {
            out.push(format!(
                "container {} of `{}` is left ({})",
                short(&c.id),
                c.service,
                if c.running { "running" } else { "stopped" }
            ));
        }
        if self.network {
            out.push("the project network is left".to_owned());
        }
        for p in &self.node {
            let what = match &p.role {
                NodeRole::Wrapper(s) => format!("the wrapper of `{s}`"),
                NodeRole::Program(s) => format!("a process of `{s}`"),
                NodeRole::Helper => "a helper of the daemon".to_owned(),
            };
            out.push(format!(
                "{what} (pid {}, {}) is left on the node",
                p.pid, p.args
            ));
        }
        out
    }
}

/// Rows that can be compared with what runs: none of them on its way
/// somewhere (starting, stopping, waiting, to be restarted, unobservable).
pub fn steady(rows: &[ServiceStatus]) -> bool {
    rows.iter().all(|r| {
        matches!(
            r.state,
            ServiceState::Running
                | ServiceState::Healthy
                | ServiceState::Unhealthy
                | ServiceState::Pending
                | ServiceState::Stopped
                | ServiceState::Completed
                | ServiceState::Failed { .. }
        )
    })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_gives_state_and_group_past_a_command_with_parentheses() {
        let stat = "42 (sh (x) y) S 1 40 40 0 -1";
        assert_eq!(state_and_group(stat), Some(('S', 40)));
        assert_eq!(state_and_group("garbage"), None);
    }
}
