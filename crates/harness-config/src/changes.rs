//! What differs between two configurations of one project, service by
//! service, and whether a running instance must be restarted to apply it.
//!
//! A service's instance depends on what it runs (binary, arguments, image,
//! build, command, host), its environment (with the `env_file`s read into
//! it), its working directory, user, network, ports, probes, dependencies and
//! whether it is a job: a change to any of these needs a restart. Its
//! description and labels, its restart policy, how it is stopped, its startup
//! timeout and success exit codes are read by whoever manages it, not by the
//! instance: a change to them alone restarts nothing.
//!
//! A service whose own configuration is unchanged but which refers to
//! `${dep.port}` (or `.host`, `.ip`) of a service whose value of that field
//! changed needs a restart too: its resolved environment differs.

use std::collections::BTreeMap;

use harness_core::ServiceName;

use crate::model::{Condition, Project, ServiceSpec};
use crate::template::{RefField, references};

/// How one service of both configurations differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// The keys that differ (`env`, `target`, `description`, …), in a fixed order.
    pub fields: Vec<&'static str>,
    /// References to other services (`api.port`) whose value changed.
    pub references: Vec<String>,
    /// Whether a running instance must be restarted to apply the change.
    pub restart: bool,
}

/// What differs between two configurations of a project ([`Project::changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectChanges {
    /// Services only the new configuration has.
    pub added: Vec<ServiceName>,
    /// Services only the old configuration has.
    pub removed: Vec<ServiceName>,
    /// Services in both that differ.
    pub changed: BTreeMap<ServiceName, ServiceChange>,
}

impl ProjectChanges {
    /// True when no service was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The changed services whose instances must restart, by name.
    pub fn to_restart(&self) -> Vec<ServiceName> {
        self.changed
            .iter()
            .filter(|(_, c)| c.restart)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The changed services that keep running as they are.
    pub fn in_place(&self) -> Vec<ServiceName> {
        self.changed
            .iter()
            .filter(|(_, c)| !c.restart)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// One line for people: `restarting api, starting worker, stopping old`
    /// (`nothing to do` when nothing needs doing).
    pub fn summary(&self) -> String {
        let join = |v: &[ServiceName]| {
            v.iter()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        let restart = self.to_restart();
        if !restart.is_empty() {
            parts.push(format!("restarting {}", join(&restart)));
        }
        if !self.added.is_empty() {
            parts.push(format!("starting {}", join(&self.added)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("stopping {}", join(&self.removed)));
        }
        let in_place = self.in_place();
        if !in_place.is_empty() {
            parts.push(format!("updating {} in place", join(&in_place)));
        }
        if parts.is_empty() {
            "nothing to do".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Each compared key: its name, whether a change needs a restart, and whether it differs.
type Field = (&'static str, bool, fn(&ServiceSpec, &ServiceSpec) -> bool);

const FIELDS: &[Field] = &[
    ("target", true, |a, b| a.target != b.target),
    ("network", true, |a, b| a.network != b.network),
    ("env", true, |a, b| a.env != b.env),
    ("working_dir", true, |a, b| a.working_dir != b.working_dir),
    ("user", true, |a, b| a.user != b.user),
    ("dependencies", true, |a, b| {
        a.dependencies != b.dependencies
    }),
    ("readiness", true, |a, b| a.readiness != b.readiness),
    ("liveness", true, |a, b| a.liveness != b.liveness),
    ("job", true, |a, b| a.job != b.job),
    ("ports", true, |a, b| a.ports != b.ports),
    ("env_file", false, |a, b| a.env_file != b.env_file),
    ("restart", false, |a, b| a.restart != b.restart),
    ("shutdown", false, |a, b| a.shutdown != b.shutdown),
    ("startup_timeout", false, |a, b| {
        a.startup_timeout != b.startup_timeout
    }),
    ("success_exit_codes", false, |a, b| {
        a.success_exit_codes != b.success_exit_codes
    }),
    ("description", false, |a, b| a.description != b.description),
    ("labels", false, |a, b| a.labels != b.labels),
];

/// Whether the value a `${svc.field}` reference resolves to may differ between `a` and `b`.
fn field_differs(field: RefField, a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let placed = |s: &ServiceSpec| (s.kind(), s.host().map(str::to_owned), s.network.clone());
    match field {
        RefField::Port => a.primary_port() != b.primary_port(),
        RefField::Host | RefField::Ip => placed(a) != placed(b),
    }
}

impl Project {
    /// What changed from `self` (the configuration running) to `other` (the
    /// new one): services added, removed and changed, and for each changed
    /// one whether its instance must restart (see the [module](crate::changes)).
    pub fn changes(&self, other: &Project) -> ProjectChanges {
        let mut out = ProjectChanges {
            added: other
                .services
                .keys()
                .filter(|n| !self.services.contains_key(*n))
                .cloned()
                .collect(),
            removed: self
                .services
                .keys()
                .filter(|n| !other.services.contains_key(*n))
                .cloned()
                .collect(),
            changed: BTreeMap::new(),
        };
        for (name, new) in &other.services {
            let Some(old) = self.services.get(name) else {
                continue;
            };
            let mut change = ServiceChange {
                fields: Vec::new(),
                references: Vec::new(),
                restart: false,
            };
            for (field, restart, differs) in FIELDS {
                if differs(old, new) {
                    change.fields.push(field);
                    change.restart |= restart;
                }
            }
            for r in new.templates().flat_map(references) {
                let (Some(a), Some(b)) = (
                    self.services.get(&r.service),
                    other.services.get(&r.service),
                ) else {
                    continue;
                };
                let named = format!("{}.{}", r.service, r.field);
                if field_differs(r.field, a, b) && !change.references.contains(&named) {
                    change.references.push(named);
                    change.restart = true;
                }
            }
            if !change.fields.is_empty() || !change.references.is_empty() {
                out.changed.insert(name.clone(), change);
            }
        }
        out
    }
}

/// Whether `dependent`, running on a `dependency` that restarts, must restart
/// too: only when it waited for the dependency to complete (a job whose work it
/// uses). A dependent waiting for `started`, `healthy` or a log line keeps
/// running; it restarts only when its own configuration or the values it
/// refers to changed ([`Project::changes`]).
pub fn restarts_with_dependency(dependent: &ServiceSpec, dependency: &ServiceName) -> bool {
    dependent
        .dependencies
        .iter()
        .any(|d| &d.service == dependency && d.condition == Condition::CompletedSuccessfully)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_yaml_str;

    fn project(yaml: &str) -> Project {
        from_yaml_str(yaml)
            .unwrap_or_else(|d| panic!("{}", d.render(false)))
            .project
    }

    const BASE: &str = r#"
name: demo
services:
  db:
    binary: sleep
    args: ["100"]
    ports: [5432]
  api:
    binary: sleep
    args: ["100"]
    env: { DB_PORT: "${db.port}", MODE: dev }
    dependencies: { db: { condition: started } }
  worker:
    binary: sleep
    args: ["100"]
    dependencies: { db: { condition: started } }
"#;

    fn changes(edit: impl Fn(&str) -> String) -> ProjectChanges {
        project(BASE).changes(&project(&edit(BASE)))
    }

    fn names(v: &[&str]) -> Vec<ServiceName> {
        v.iter().map(|s| ServiceName::new(*s).unwrap()).collect()
    }

    #[test]
    fn the_same_configuration_has_no_changes() {
        let c = changes(str::to_owned);
        assert!(c.is_empty());
        assert_eq!(c.summary(), "nothing to do");
    }

    #[test]
    fn added_and_removed_services() {
        let c = changes(|b| {
            b.replace("  worker:", "  jobs:")
                .replace("services:\n", "services:\n  extra:\n    binary: sleep\n")
        });
        assert_eq!(c.added, names(&["extra", "jobs"]));
        assert_eq!(c.removed, names(&["worker"]));
        assert!(c.changed.is_empty());
        assert_eq!(c.summary(), "starting extra, jobs, stopping worker");
    }

    #[test]
    fn an_environment_change_restarts_only_that_service() {
        let c = changes(|b| b.replace("MODE: dev", "MODE: prod"));
        assert_eq!(c.to_restart(), names(&["api"]));
        assert_eq!(c.changed[&names(&["api"])[0]].fields, ["env"]);
        assert_eq!(c.summary(), "restarting api");
    }

    #[test]
    fn program_and_arguments_need_a_restart() {
        let c = changes(|b| b.replacen("args: [\"100\"]", "args: [\"200\"]", 1));
        assert_eq!(c.to_restart(), names(&["db"]));
        assert_eq!(c.changed[&names(&["db"])[0]].fields, ["target"]);
    }

    #[test]
    fn working_dir_user_and_probes_need_a_restart() {
        let c = changes(|b| {
            b.replace(
                "  worker:\n    binary: sleep\n",
                "  worker:\n    binary: sleep\n    working_dir: /tmp\n    user: nobody\n    health_check: { tcp: 9 }\n",
            )
        });
        let w = &c.changed[&names(&["worker"])[0]];
        assert!(w.restart);
        assert_eq!(w.fields, ["working_dir", "user", "readiness", "liveness"]);
    }

    #[test]
    fn description_labels_and_restart_policy_restart_nothing() {
        let c = changes(|b| {
            b.replace(
                "  worker:\n",
                "  worker:\n    description: does the work\n    labels: { team: core }\n    restart: always\n",
            )
        });
        let w = &c.changed[&names(&["worker"])[0]];
        assert!(!w.restart);
        assert_eq!(w.fields, ["restart", "description", "labels"]);
        assert!(c.to_restart().is_empty());
        assert_eq!(c.summary(), "updating worker in place");
    }

    #[test]
    fn a_changed_port_restarts_who_refers_to_it() {
        let c = changes(|b| b.replace("ports: [5432]", "ports: [5433]"));
        // api refers to ${db.port}; worker only waits for db to start.
        assert_eq!(c.to_restart(), names(&["api", "db"]));
        let api = &c.changed[&names(&["api"])[0]];
        assert!(api.fields.is_empty());
        assert_eq!(api.references, ["db.port"]);
    }

    #[test]
    fn a_change_that_keeps_referred_values_does_not_spread() {
        let c = changes(|b| b.replacen("args: [\"100\"]", "args: [\"300\"]", 1));
        assert_eq!(c.to_restart(), names(&["db"]));
    }

    #[test]
    fn dependencies_need_a_restart() {
        let c2 = changes(|b| {
            b.replacen(
                "dependencies: { db: { condition: started } }",
                "dependencies: { db: { condition: started }, worker: { condition: started } }",
                1,
            )
        });
        assert!(
            c2.changed[&names(&["api"])[0]]
                .fields
                .contains(&"dependencies")
        );
        assert!(c2.changed[&names(&["api"])[0]].restart);
    }

    #[test]
    fn only_completion_conditions_restart_with_their_dependency() {
        let p = project(
            r#"
name: demo
services:
  migrate: { binary: "true", job: true }
  db: { binary: sleep }
  api:
    binary: sleep
    dependencies:
      migrate: { condition: completed_successfully }
      db: { condition: started }
"#,
        );
        let api = &p.services[&names(&["api"])[0]];
        assert!(restarts_with_dependency(api, &names(&["migrate"])[0]));
        assert!(!restarts_with_dependency(api, &names(&["db"])[0]));
    }
}
