//! A serde `Deserializer` over the located tree: errors carry the position of the
//! value (or key) they are about, and unknown keys get a "did you mean".

use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Visitor};

use crate::tree::{Key, Node, Pos, Value};

/// A decoding error at a position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

impl DeError {
    fn at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
            hint: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            pos: None,
            message: format!("unknown key `{field}`"),
            hint: Some(suggest_hint(field, expected, "keys")),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            pos: None,
            message: format!("unknown value `{variant}`"),
            hint: Some(suggest_hint(variant, expected, "values")),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            pos: None,
            message: format!("missing key `{field}`"),
            hint: Some(format!("add `{field}:` here")),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError {
            pos: None,
            message: format!("expected {}, found {}", expected(exp), unexpected(&unexp)),
            hint: None,
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError {
            pos: None,
            message: format!("invalid value {}: expected {exp}", unexpected(&unexp)),
            hint: None,
        }
    }
}

/// serde's words for what was expected, in the words of a YAML file.
fn expected(exp: &dyn de::Expected) -> String {
    let e = exp.to_string();
    if e.starts_with("struct ") || e == "a map" {
        "a map of keys".to_owned()
    } else if e == "a sequence" {
        "a list".to_owned()
    } else if let Some(n) = e.strip_prefix("u") {
        if n.chars().all(|c| c.is_ascii_digit()) {
            "a whole number".to_owned()
        } else {
            e
        }
    } else if e == "i32" || e == "i64" {
        "a whole number".to_owned()
    } else if e == "f64" || e == "f32" {
        "a number".to_owned()
    } else {
        e
    }
}

fn unexpected(u: &de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Map => "a map".to_owned(),
        de::Unexpected::Seq => "a list".to_owned(),
        de::Unexpected::Unit | de::Unexpected::Option => "null".to_owned(),
        other => other.to_string(),
    }
}

/// The closest candidate to `word`, if any is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(&str, usize, f64)> = None;
    for c in candidates {
        let lc = c.to_ascii_lowercase();
        let dist = strsim::levenshtein(&w, &lc);
        let jw = strsim::jaro_winkler(&w, &lc);
        let close = jw > 0.8 || dist <= 1 || dist * 3 <= w.len().max(lc.len());
        if close && best.is_none_or(|(_, d, j)| dist < d || (dist == d && jw > j)) {
            best = Some((c, dist, jw));
        }
    }
    best.map(|(c, _, _)| c)
}

fn suggest_hint(word: &str, expected: &[&str], what: &str) -> String {
    match did_you_mean(word, expected.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if expected.is_empty() => format!("no {what} are allowed here"),
        None => format!(
            "allowed {what}: {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The text of a float as written in YAML: `1.0` stays `1.0`.
pub(crate) fn float_text(v: f64) -> String {
    let s = v.to_string();
    if s.contains(['.', 'e', 'E']) || !v.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// Decodes a `T` from a located node.
pub(crate) fn from_node<'a, T: de::Deserialize<'a>>(node: &'a Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|e| e.at(node.pos))
}

/// A deserializer over one node.
pub(crate) struct NodeDe<'a>(pub &'a Node);

macro_rules! forward_with_pos {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        let r = match &node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => {
                if let Ok(v) = u64::try_from(*i) {
                    visitor.visit_u64(v)
                } else if let Ok(v) = i64::try_from(*i) {
                    visitor.visit_i64(v)
                } else {
                    visitor.visit_i128(*i)
                }
            }
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe { iter: items.iter() }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.at(node.pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        match node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(node.pos))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let pos = self.0.pos;
        visitor.visit_newtype_struct(self).map_err(|e| e.at(pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Bool(b) => visitor.visit_enum(b.to_string().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe {
                key: &entries[0].0,
                value: &entries[0].1,
            }),
            other => Err(DeError::custom(format!(
                "expected a name or a one-key map, found {}",
                other.type_name()
            ))),
        }
        .map_err(|e| e.at(node.pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        match node.value {
            Value::Null => visitor.visit_unit(),
            _ => Err(DeError::custom(format!(
                "expected nothing, found {}",
                node.value.type_name()
            ))),
        }
        .map_err(|e| e.at(node.pos))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A scalar where text is expected is its text: `user: 1000`, `version: 1.0`.
        let node = self.0;
        match &node.value {
            Value::Int(i) => visitor.visit_string(i.to_string()),
            Value::Float(f) => visitor.visit_string(float_text(*f)),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            _ => return self.deserialize_any(visitor),
        }
        .map_err(|e: DeError| e.at(node.pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    forward_with_pos! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_bytes deserialize_byte_buf deserialize_seq
        deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

struct SeqDe<'a> {
    iter: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(n) => seed
                .deserialize(NodeDe(n))
                .map(Some)
                .map_err(|e| e.at(n.pos)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'a> {
    iter: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapDe<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(KeyDe(k))
                    .map(Some)
                    .map_err(|e| e.at(k.pos))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| DeError::custom("a map value was asked for before its key"))?;
        seed.deserialize(NodeDe(v)).map_err(|e| e.at(v.pos))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A map key: always a string.
struct KeyDe<'a>(&'a Key);

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor
            .visit_borrowed_str(&self.0.name)
            .map_err(|e: DeError| e.at(self.0.pos))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct EnumDe<'a> {
    key: &'a Key,
    value: &'a Node,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    type Variant = NodeVariant<'de>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeVariant<'de>), DeError> {
        let v = seed.deserialize(KeyDe(self.key))?;
        Ok((v, NodeVariant(self.value)))
    }
}

struct NodeVariant<'a>(&'a Node);

impl<'de> de::VariantAccess<'de> for NodeVariant<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(NodeDe(self.0))
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDe(self.0))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(NodeDe(self.0), visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(NodeDe(self.0), visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        name: String,
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn unknown_key_is_located_with_suggestion() {
        let n = crate::tree::parse("name: a\nport: 1\ntagz: []\n", 0).unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.message, "unknown key `tagz`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `tags`?"));
        assert_eq!(e.pos.map(|p| (p.line, p.column)), Some((3, 1)));
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let n = crate::tree::parse("name: a\nport: 70000\n", 0).unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.pos.map(|p| (p.line, p.column)), Some((2, 7)), "{e:?}");
        let n = crate::tree::parse("name: a\nport: 1\ntags: [x, {a: 1}]\n", 0).unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.pos.map(|p| (p.line, p.column)), Some((3, 11)), "{e:?}");
        assert!(e.message.contains("found a map"), "{e:?}");
        let n = crate::tree::parse("port: 1\n", 0).unwrap();
        let e = from_node::<S>(&n).unwrap_err();
        assert_eq!(e.message, "missing key `name`");
    }
}
