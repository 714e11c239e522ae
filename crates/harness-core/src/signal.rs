//! POSIX signals by name, as written in `services.yaml` (`SIGTERM`, `TERM`, `15`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! signals {
    ($($variant:ident = $num:literal),* $(,)?) => {
        /// A POSIX signal that harness can send to a service.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Signal { $($variant),* }

        impl Signal {
            /// Every signal, in number order.
            pub const ALL: &'static [Signal] = &[$(Signal::$variant),*];

            /// The Linux signal number.
            pub const fn number(self) -> i32 {
                match self { $(Signal::$variant => $num),* }
            }

            /// The name with the `SIG` prefix, e.g. `SIGTERM`.
            pub const fn name(self) -> &'static str {
                match self { $(Signal::$variant => concat!("SIG", stringify!($variant))),* }
            }

            /// The signal with this Linux number.
            pub fn from_number(n: i32) -> Option<Signal> {
                match n { $($num => Some(Signal::$variant),)* _ => None }
            }
        }
    };
}

signals! {
    HUP = 1, INT = 2, QUIT = 3, ABRT = 6, KILL = 9, USR1 = 10, USR2 = 12,
    PIPE = 13, ALRM = 14, TERM = 15, CONT = 18, STOP = 19, WINCH = 28,
}

/// An unknown signal name or number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal `{0}` (use a name like SIGTERM, TERM, SIGINT, SIGKILL, or a number)")]
pub struct SignalError(pub String);

impl FromStr for Signal {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return Signal::from_number(n).ok_or_else(|| SignalError(s.to_owned()));
        }
        let upper = t.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL
            .iter()
            .copied()
            .find(|sig| &sig.name()[3..] == bare)
            .ok_or_else(|| SignalError(s.to_owned()))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Signal::from_number(n)
                .ok_or_else(|| serde::de::Error::custom(SignalError(n.to_string()))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for Signal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Signal".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        schemars::json_schema!({
            "description": "a signal name (SIGTERM, TERM) or number",
            "anyOf": [{"type": "string", "examples": names}, {"type": "integer"}]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!("SIGTERM".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("term".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("9".parse::<Signal>().unwrap(), Signal::KILL);
        assert_eq!("SIGINT".parse::<Signal>().unwrap().number(), 2);
        assert!("SIGFOO".parse::<Signal>().is_err());
        assert!("99".parse::<Signal>().is_err());
    }
}
