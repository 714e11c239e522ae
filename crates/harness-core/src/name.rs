//! Validated names of services and projects.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name `{0}` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// The name holds a character outside `[A-Za-z0-9_.-]` or does not start with a letter or digit.
    #[error(
        "name `{name}` has `{ch}` at position {pos}: use letters, digits, `_`, `-` and `.`, starting with a letter or digit"
    )]
    BadChar {
        /// The rejected name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its character index.
        pos: usize,
    },
}

/// Longest name accepted (a DNS label, so names can become container and host names).
pub const MAX_NAME_LEN: usize = 63;

fn validate(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(s.to_owned()));
    }
    for (pos, ch) in s.chars().enumerate() {
        let ok = ch.is_ascii_alphanumeric() || (pos > 0 && matches!(ch, '_' | '-' | '.'));
        if !ok {
            return Err(NameError::BadChar {
                name: s.to_owned(),
                ch,
                pos,
            });
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
                })
            }
        }
    };
}

name_type!(
    /// The name of a service in a project, e.g. `db` or `api-gateway`.
    ServiceName
);
name_type!(
    /// The name of a project (one `services.yaml`), used to label what it runs.
    ProjectName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for n in ["db", "api-gateway", "worker_1", "a.b", "9lives"] {
            assert_eq!(ServiceName::new(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ServiceName::new(""), Err(NameError::Empty));
        assert!(matches!(
            ServiceName::new("-x"),
            Err(NameError::BadChar { pos: 0, .. })
        ));
        assert!(matches!(
            ServiceName::new("a b"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            ServiceName::new("x".repeat(64)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn deserialize_validates() {
        let ok: ServiceName = serde_json::from_str("\"db\"").unwrap();
        assert_eq!(ok.as_str(), "db");
        assert!(serde_json::from_str::<ServiceName>("\"d b\"").is_err());
    }
}
