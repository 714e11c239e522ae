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
//! Environment variables (`${VAR}`, `${VAR:-default}`) are the configuration's
//! business and are expected to be expanded already; other `${...}` forms and
//! `$$` are left as they are.

use std::collections::BTreeMap;

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
        let expanded = expand_references(value, |svc, field| {
            let provider = registry
                .entries
                .get(svc)
                .ok_or_else(|| EnvError::UnknownService {
                    service: svc.to_owned(),
                    reference: Some(var.clone()),
                })?;
            let ep = resolve(topology, provider, &service.location).map_err(|source| {
                EnvError::Unreachable {
                    variable: var.clone(),
                    provider: provider.name.clone(),
                    source: Box::new(source),
                }
            })?;
            ep.field(field).ok_or_else(|| EnvError::NoPort {
                variable: var.clone(),
                service: svc.to_owned(),
            })
        })?;
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

/// Replaces every `${SERVICE.FIELD}` (FIELD one of `ip`, `port`, `host`) in
/// `value` by `lookup(SERVICE, FIELD)`. Anything else, including `$${...}`, is
/// copied unchanged.
pub fn expand_references<E>(
    value: &str,
    mut lookup: impl FnMut(&str, &str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push_str("$$");
            rest = after;
            continue;
        }
        let reference = tail
            .strip_prefix("${")
            .and_then(|t| t.find('}').map(|end| (&t[..end], end)))
            .and_then(|(inner, end)| {
                let (svc, field) = inner.rsplit_once('.')?;
                let ok = matches!(field, "ip" | "port" | "host") && ServiceName::new(svc).is_ok();
                ok.then_some((svc, field, end))
            });
        match reference {
            Some((svc, field, end)) => {
                out.push_str(&lookup(svc, field)?);
                rest = &tail[2 + end + 1..];
            }
            None => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_only_service_references() {
        let look = |s: &str, f: &str| -> Result<String, String> { Ok(format!("<{s}|{f}>")) };
        let cases = [
            ("http://${db.ip}:${db.port}/x", "http://<db|ip>:<db|port>/x"),
            ("${my-db.v2.host}", "<my-db.v2|host>"),
            (
                "${HOME} $$ $${db.ip} ${db.name} ${.ip} $",
                "${HOME} $$ $${db.ip} ${db.name} ${.ip} $",
            ),
            ("${db.ip", "${db.ip"),
            ("", ""),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_references(input, look).unwrap(), want, "{input}");
        }
        let fail = |_: &str, _: &str| -> Result<String, String> { Err("no".into()) };
        assert!(expand_references("${x.ip}", fail).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(env_prefix("db"), "DB");
        assert_eq!(env_prefix("my-db.v2"), "MY_DB_V2");
        assert_eq!(env_prefix("9lives"), "_9LIVES");
    }
}
