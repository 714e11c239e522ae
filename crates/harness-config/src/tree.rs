//! A YAML document as a tree of located values.
//!
//! Every value and every map key keeps the file, line and column it came from,
//! so that merging, interpolation and validation can all point at the exact spot.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A position in a source file (1-based line and column; `file` indexes the load's file list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Index of the file in the list of loaded files.
    pub file: usize,
    /// 1-based line (0 when unknown).
    pub line: u32,
    /// 1-based column in characters (0 when unknown).
    pub column: u32,
}

impl Pos {
    fn from_location(loc: &serde_saphyr::Location) -> Pos {
        Pos {
            file: 0,
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        }
    }
}

/// A located value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where it starts.
    pub pos: Pos,
    /// What it is.
    pub value: Value,
}

/// A map key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text (scalars of any type become their text).
    pub name: String,
    /// Where the key is written.
    pub pos: Pos,
}

/// A YAML value whose children are located.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// A word for the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

impl Node {
    /// A node at a position.
    pub fn new(pos: Pos, value: Value) -> Node {
        Node { pos, value }
    }

    /// Sets the file index of this node and all below it.
    pub fn set_file(&mut self, file: usize) {
        self.pos.file = file;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.set_file(file)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.pos.file = file;
                v.set_file(file);
            }),
            _ => {}
        }
    }

    /// The value under `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key and value under `key`, if this is a map that has it.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    J::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    J::from(v)
                } else {
                    J::from(*i as f64)
                }
            }
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Deserializes a scalar key into its text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar map key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyText, E> {
                Ok(KeyText(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The value part of a node, deserialized from any YAML value.
struct ValueDe(Value);

impl<'de> Deserialize<'de> for ValueDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Null))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<ValueDe, D2::Error> {
                ValueDe::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Int(v.into())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Int(v.into())))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Int(v)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<ValueDe, E> {
                Ok(ValueDe(match i128::try_from(v) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(v as f64),
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Str(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Str(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ValueDe, E> {
                Ok(ValueDe(Value::Str(String::from_utf8_lossy(v).into_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueDe, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = seq.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(ValueDe(Value::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueDe, A::Error> {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let mut seen: std::collections::HashMap<String, usize> =
                    std::collections::HashMap::new();
                while let Some(k) = map.next_key::<Spanned<KeyText>>()? {
                    let key = Key {
                        name: k.value.0,
                        pos: Pos::from_location(&k.referenced),
                    };
                    let v = map.next_value::<Node>()?;
                    if let Some(&i) = seen.get(&key.name) {
                        return Err(de::Error::custom(format!(
                            "duplicate key `{}` (first at line {}, again at line {})",
                            key.name, entries[i].0.pos.line, key.pos.line
                        )));
                    }
                    seen.insert(key.name.clone(), entries.len());
                    entries.push((key, v));
                }
                Ok(ValueDe(Value::Map(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<ValueDe>::deserialize(d)?;
        Ok(Node {
            pos: Pos::from_location(&s.referenced),
            value: s.value.0,
        })
    }
}

/// A YAML syntax error, located.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where (file index 0; the caller sets it).
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when more specific than "fix the YAML syntax".
    pub hint: Option<String>,
}

/// Deepest nesting accepted: a services file needs about 8 levels; the limit
/// keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 24;

/// Most YAML events that alias references (`*name`) may replay in one file. A
/// `<<: *defaults` of ten keys replays about 25, so a thousand services using it
/// stay well below; an alias bomb (aliases of aliases, multiplying) reaches it
/// within milliseconds and is refused.
pub const MAX_ALIAS_EVENTS: usize = 50_000;

/// Most times one anchor may be expanded (each service using `*defaults` is one).
pub const MAX_EXPANSIONS_PER_ANCHOR: usize = 5_000;

/// Parses one YAML document into a located tree. An empty document is `Null`.
pub fn parse(text: &str, file: usize) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: 200_000,
            max_aliases: 10_000,
            // The alias/anchor ratio heuristic refuses a hundred services sharing one
            // `*defaults`; the replay limits below bound what aliases can cost instead.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EVENTS,
            max_replay_stack_depth: MAX_DEPTH,
            max_alias_expansions_per_anchor: MAX_EXPANSIONS_PER_ANCHOR,
        },
    };
    if text.trim().is_empty() || only_comments(text) {
        return Ok(Node::new(
            Pos {
                file,
                line: 1,
                column: 1,
            },
            Value::Null,
        ));
    }
    match serde_saphyr::from_str_with_options::<Node>(text, options) {
        Ok(mut node) => {
            node.set_file(file);
            Ok(node)
        }
        Err(e) => {
            let pos = e
                .location()
                .map(|l| Pos::from_location(&l))
                .unwrap_or_default();
            let message = clean_message(&e.without_snippet().to_string());
            let (message, hint) = match alias_limit(&message) {
                Some(limit) => (
                    limit,
                    Some(
                        "aliases of aliases multiply: expand the anchor where it is used, or use fewer aliases"
                            .to_owned(),
                    ),
                ),
                None => (message, None),
            };
            Err(SyntaxError {
                pos: Pos { file, ..pos },
                message,
                hint,
            })
        }
    }
}

fn only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// A message for an alias limit that was reached, if that is what the parser's
/// `message` says (serde-saphyr reports these as alias errors with this wording).
fn alias_limit(message: &str) -> Option<String> {
    if message.starts_with("alias replay limit exceeded") {
        Some(format!(
            "aliases expand to more than {MAX_ALIAS_EVENTS} YAML events (an alias bomb?)"
        ))
    } else if message.starts_with("alias expansion limit exceeded") {
        Some(format!(
            "an anchor is expanded more than {MAX_EXPANSIONS_PER_ANCHOR} times (an alias bomb?)"
        ))
    } else if message.starts_with("alias replay stack depth exceeded") {
        Some(format!(
            "aliases nest deeper than {MAX_DEPTH} levels (an alias bomb?)"
        ))
    } else {
        None
    }
}

/// Drops a trailing "at line X column Y" from a parser message: we print the position ourselves.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let cut = first
        .find(" at line ")
        .map_or(first, |i| &first[..i])
        .trim_end_matches([',', ':', ' ']);
    cut.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: true}\n", 3).unwrap();
        let (k, v) = n.entry("b").unwrap();
        assert_eq!((k.pos.line, k.pos.column, k.pos.file), (2, 1, 3));
        let Value::Seq(items) = &v.value else {
            panic!("not a seq: {v:?}")
        };
        assert_eq!((items[0].pos.line, items[0].pos.column), (3, 5));
        let c = items[1].get("c").unwrap();
        assert_eq!(c.value, Value::Bool(true));
        assert_eq!(c.pos.line, 4);
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = parse("a: [1, 2\nb: 3\n", 0).unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
        let e = parse("a: 1\na: 2\n", 0).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e:?}");
    }

    #[test]
    fn empty_is_null() {
        assert_eq!(parse("", 0).unwrap().value, Value::Null);
        assert_eq!(parse("# just a comment\n", 0).unwrap().value, Value::Null);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let n = parse("x-base: &b\n  k: 1\ns:\n  <<: *b\n  j: 2\n", 0).unwrap();
        let s = n.get("s").unwrap();
        assert_eq!(s.get("k").unwrap().value, Value::Int(1));
        assert_eq!(s.get("j").unwrap().value, Value::Int(2));
    }
}
