//! The environment a service gets, resolved from where it runs.
//!
//! What `harness env SERVICE` prints. For a service at location L:
//! - `HARNESS_PROJECT`, `HARNESS_SERVICE`;
//! - for every other registered service `db` that L can reach: `DB_HOST`,
//!   `DB_IP` and (when it declares one) `DB_PORT`, resolved from L's point of
//!   view (names upper-cased, other characters than letters and digits become `_`);
//! - the service's declared `env`, where `${db.ip}`, `${db.port}` and
//!   `${db.host}` are replaced by the same resolution. Declared variables win
//!   over the generated ones.
//!
//! Declared values are reference templates as `harness_config::template`
//! defines them (environment variables already interpolated, `$$` for a
//! literal `$`); they are parsed by that module, not here.

use std::collections::BTreeMap;

use harness_config::template::{self, Part, TemplateError};
use harness_core::{ProjectName, ServiceName};

use crate::entry::ServiceEntry;
use crate::registry::RegistrySnapshot;
use crate::resolve::{ResolveError, resolve};
use crate::topology::NetworkTopology;

/// Why the environment of a service cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A service (the one asked about, or one a reference names) is not registered.
    #[error("{}", match reference {
        Some(var) => format!("variable `{var}` refers to service `{service}`, which is not in the registry"),
        None => format!("no service `{service}` in the registry"),
    })]
    UnknownService {
        /// The missing service.
        service: String,
        /// The variable whose value refers to it, if any.
        reference: Option<String>,
    },
    /// A referenced service cannot be reached from where this service runs.
    #[error("variable `{variable}` refers to `{provider}`: {source}")]
    Unreachable {
        /// The variable.
        variable: String,
        /// The referenced service.
        provider: ServiceName,
        /// Why it cannot be reached.
        source: Box<ResolveError>,
    },
    /// A declared value is not a valid reference template.
    #[error("variable `{variable}`: {source}")]
    Template {
        /// The variable.
        variable: String,
        /// What is wrong with its value.
        source: TemplateError,
    },
    /// The service's place cannot be worked out from the configuration.
    #[error(transparent)]
    Placement(#[from] crate::config::ConfigError),
    /// `${svc.port}` for a service that declares no port.
    #[error("variable `{variable}` uses `${{{service}.port}}`, but `{service}` declares no port")]
    NoPort {
        /// The variable.
        variable: String,
        /// The referenced service.
        service: String,
    },
}

/// The environment `service` gets, given the project, the registry and the
/// topology; `declared` is the service's own `env` from the configuration.
pub fn service_environment(
    project: &ProjectName,
    registry: &RegistrySnapshot,
    topology: &NetworkTopology,
    service: &ServiceEntry,
    declared: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, EnvError> {
    let mut env = BTreeMap::new();
    env.insert("HARNESS_PROJECT".to_owned(), project.to_string());
    env.insert("HARNESS_SERVICE".to_owned(), service.name.to_string());
    for other in registry.entries.values() {
        if other.name == service.name {
            continue;
        }
        // Unreachable services get no generated variables; only an explicit
        // reference to one is an error.
        let Ok(ep) = resolve(topology, other, &service.location) else {
            continue;
        };
        let prefix = env_prefix(other.name.as_str());
        env.insert(format!("{prefix}_HOST"), ep.host.clone());
        env.insert(format!("{prefix}_IP"), ep.ip.to_string());
        if let Some(port) = ep.port {
            env.insert(format!("{prefix}_PORT"), port.to_string());
        }
    }
    for (var, value) in declared {
        let parts = template::parse(value).map_err(|source| EnvError::Template {
            variable: var.clone(),
            source,
        })?;
        let mut expanded = String::with_capacity(value.len());
        for part in parts {
            let r = match part {
                Part::Literal(text) => {
                    expanded.push_str(&text);
                    continue;
                }
                Part::Ref(r) => r,
            };
            let provider =
                registry
                    .entries
                    .get(&r.service)
                    .ok_or_else(|| EnvError::UnknownService {
                        service: r.service.to_string(),
                        reference: Some(var.clone()),
                    })?;
            let ep = resolve(topology, provider, &service.location).map_err(|source| {
                EnvError::Unreachable {
                    variable: var.clone(),
                    provider: provider.name.clone(),
                    source: Box::new(source),
                }
            })?;
            let field = ep.field(r.field.as_str()).ok_or_else(|| EnvError::NoPort {
                variable: var.clone(),
                service: r.service.to_string(),
            })?;
            expanded.push_str(&field);
        }
        env.insert(var.clone(), expanded);
    }
    Ok(env)
}

/// `my-db.v2` → `MY_DB_V2`; a leading digit gets a `_` in front.
pub fn env_prefix(service: &str) -> String {
    let mut out: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(env_prefix("db"), "DB");
        assert_eq!(env_prefix("my-db.v2"), "MY_DB_V2");
        assert_eq!(env_prefix("9lives"), "_9LIVES");
    }
}
