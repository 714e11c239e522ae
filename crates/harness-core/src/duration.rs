//! Human durations: `10` (seconds), `"1.5s"`, `"250ms"`, `"2m"`, `"1h30m"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {why} (write e.g. `10`, `1.5s`, `250ms`, `2m`, `1h30m`)")]
pub struct DurationError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a human duration. A bare number means seconds; otherwise one or more
/// `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let (whole, frac) =
            parse_decimal(&rest[..num_len]).ok_or_else(|| err("malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            // A bare number means seconds, but only as the whole input.
            "" if total == 0 && rest.is_empty() && num_len == s.len() => 1_000_000_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(err("a number has no unit")),
            _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
        };
        rest = &rest[unit_len..];
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|w| w.checked_add(frac * unit_nanos / 1_000_000_000))
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| err("value out of range"))?;
    }
    if total > MAX_NANOS {
        return Err(err("value out of range"));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("value out of range"))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Largest accepted duration (about 31,000 years): anything larger is surely a typo.
const MAX_NANOS: u128 = 1_000_000_000_000 * 1_000_000_000;

/// Splits `12.345` into (12, 345_000_000 nanos of a unit); at most 9 fraction digits count.
fn parse_decimal(s: &str) -> Option<(u128, u128)> {
    let (w, f) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if (w.is_empty() && f.is_empty()) || f.contains('.') {
        return None;
    }
    let whole = if w.is_empty() {
        0
    } else {
        w.parse::<u128>().ok()?
    };
    let mut frac: u128 = 0;
    for (i, c) in f.chars().enumerate() {
        let d = c.to_digit(10)? as u128;
        if i < 9 {
            frac += d * 10u128.pow(8 - i as u32);
        }
    }
    Some((whole, frac))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// Formats a duration the way [`parse_duration`] reads it back, e.g. `1.5s`, `250ms`, `2m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        return format!("{}us", d.as_micros());
    }
    if !ms.is_multiple_of(1000) {
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let frac = format!("{:03}", ms % 1000);
        return format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'));
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A [`Duration`] that deserializes from a number of seconds or a human string,
/// and serializes as a human string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    /// Milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: seconds as a number, or a string like \"1.5s\", \"250ms\", \"2m\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                secs_to_duration(v as f64)
                    .map(HumanDuration)
                    .ok_or_else(|| E::custom("duration out of range"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v < 0 {
                    return Err(E::custom("a duration cannot be negative"));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                secs_to_duration(v)
                    .map(HumanDuration)
                    .ok_or_else(|| E::custom("a duration must be a finite, non-negative number"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "seconds as a number, or a string like \"1.5s\", \"250ms\", \"2m\", \"1h30m\"",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": "^\\s*([0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?)+\\s*$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let cases = [
            ("10", 10_000),
            ("1.5", 1_500),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("2m", 120_000),
            ("1h30m", 5_400_000),
            ("1m30s", 90_000),
            ("0", 0),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
    }

    #[test]
    fn rejects_bad() {
        for s in ["", "s", "10x", "-1", "1.2.3s", "nan", "inf", "5 s s"] {
            assert!(parse_duration(s).is_err(), "{s} should fail");
        }
    }

    #[test]
    fn serde_round_trip() {
        let d: HumanDuration = serde_json::from_str("2.5").unwrap();
        assert_eq!(d.0, Duration::from_millis(2500));
        let d: HumanDuration = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"2m\"");
        assert!(serde_json::from_str::<HumanDuration>("-3").is_err());
    }

    proptest::proptest! {
        #[test]
        fn format_parses_back(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }

        #[test]
        fn never_panics(s in ".{0,20}") {
            let _ = parse_duration(&s);
        }
    }
}
