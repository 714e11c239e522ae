//! Environment interpolation with the compose rules.
//!
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (error), `${VAR:+alt}` / `${VAR+alt}`;
//! defaults may nest (`${A:-${B:-x}}`); `$$` is a literal `$`. Applied to values,
//! never to keys. `${service.ip|port|host}` is a service reference and is left for
//! later (see [`crate::template`]).
//!
//! The output is a *reference template*: a literal `$` (from `$$` or from a
//! variable's value) is written `$$`, so references stay unambiguous.

use std::collections::HashMap;

/// Where variables come from.
pub trait VarSource {
    /// The value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

impl VarSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// An interpolation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpIssue {
    /// A variable without a default is not set (its name).
    Unset(String),
    /// `${VAR:?message}` fired.
    Required {
        /// The variable.
        name: String,
        /// The message written in the file.
        message: String,
    },
    /// Malformed syntax.
    Syntax(String),
}

/// The result of interpolating one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    /// The template text.
    pub text: String,
    /// Problems found; with unset variables, an empty string was substituted.
    pub issues: Vec<InterpIssue>,
    /// True if the whole input was a single variable expression (then a numeric
    /// or boolean result may take that type).
    pub whole: bool,
    /// True if anything was substituted.
    pub substituted: bool,
}

/// Interpolates `input` from `vars`.
pub fn interpolate(input: &str, vars: &dyn VarSource) -> Interpolated {
    let mut issues = Vec::new();
    let mut substituted = false;
    let text = expand(input, vars, &mut issues, &mut substituted, 0);
    let t = input.trim();
    let whole =
        t.starts_with("${") && t.ends_with('}') && matching_close(&t[2..]) == Some(t.len() - 3)
            || (t.starts_with('$')
                && t.len() > 1
                && t[1..].chars().all(is_var_char)
                && !t[1..].starts_with(|c: char| c.is_ascii_digit()));
    Interpolated {
        text,
        issues,
        whole,
        substituted,
    }
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Index in `s` of the `}` closing an already-opened `${`, honouring nesting.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

const MAX_DEPTH: usize = 16;

fn expand(
    input: &str,
    vars: &dyn VarSource,
    issues: &mut Vec<InterpIssue>,
    substituted: &mut bool,
    depth: usize,
) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = matching_close(body) else {
                issues.push(InterpIssue::Syntax(format!(
                    "`${{` is not closed by `}}` in `{input}`"
                )));
                out.push_str("$$");
                rest = after;
                continue;
            };
            let expr = &body[..end];
            rest = &body[end + 1..];
            if depth >= MAX_DEPTH {
                issues.push(InterpIssue::Syntax("variables nest too deeply".to_owned()));
                continue;
            }
            if crate::template::parse_ref(expr).is_some() {
                // A service reference: kept for later.
                out.push_str("${");
                out.push_str(expr.trim());
                out.push('}');
                continue;
            }
            out.push_str(&braced(expr, vars, issues, substituted, depth));
        } else {
            let name_len = after.find(|c: char| !is_var_char(c)).unwrap_or(after.len());
            let name = &after[..name_len];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                // A lone `$` (e.g. `$1`, `cost: 5$`) is kept literally.
                out.push_str("$$");
                rest = after;
                continue;
            }
            rest = &after[name_len..];
            *substituted = true;
            match vars.var(name) {
                Some(v) => out.push_str(&crate::template::escape(&v)),
                None => issues.push(InterpIssue::Unset(name.to_owned())),
            }
        }
    }
    out.push_str(rest);
    out
}

/// Expands the inside of `${...}`.
fn braced(
    expr: &str,
    vars: &dyn VarSource,
    issues: &mut Vec<InterpIssue>,
    substituted: &mut bool,
    depth: usize,
) -> String {
    *substituted = true;
    let name_len = expr.find(|c: char| !is_var_char(c)).unwrap_or(expr.len());
    let name = &expr[..name_len];
    let op = &expr[name_len..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        issues.push(InterpIssue::Syntax(format!(
            "`${{{expr}}}` is neither a variable nor a service reference (`${{service.ip|port|host}}`)"
        )));
        return String::new();
    }
    let value = vars.var(name);
    let (kind, arg) = if op.is_empty() {
        ("", "")
    } else if let Some(a) = op.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = op.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = op.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = op.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = op.strip_prefix('?') {
        ("?", a)
    } else if let Some(a) = op.strip_prefix('+') {
        ("+", a)
    } else {
        issues.push(InterpIssue::Syntax(format!(
            "`${{{expr}}}`: after the variable name expected `}}`, `:-`, `-`, `:?`, `?`, `:+` or `+`"
        )));
        return String::new();
    };
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let mut sub = |s: &str| expand(s, vars, issues, substituted, depth + 1);
    match kind {
        "" => match value {
            Some(v) => crate::template::escape(&v),
            None => {
                issues.push(InterpIssue::Unset(name.to_owned()));
                String::new()
            }
        },
        ":-" if set_nonempty => crate::template::escape(&value.unwrap_or_default()),
        ":-" => sub(arg),
        "-" => match value {
            Some(v) => crate::template::escape(&v),
            None => sub(arg),
        },
        ":?" | "?" => {
            let ok = if kind == ":?" {
                set_nonempty
            } else {
                value.is_some()
            };
            if ok {
                crate::template::escape(&value.unwrap_or_default())
            } else {
                let message = sub(arg);
                issues.push(InterpIssue::Required {
                    name: name.to_owned(),
                    message: if message.is_empty() {
                        format!("`{name}` must be set")
                    } else {
                        message.replace("$$", "$")
                    },
                });
                String::new()
            }
        }
        ":+" if set_nonempty => sub(arg),
        "+" if value.is_some() => sub(arg),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("A", "a"), ("EMPTY", ""), ("N", "8080"), ("D", "x$y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn i(s: &str) -> (String, Vec<InterpIssue>) {
        let r = interpolate(s, &env());
        (r.text, r.issues)
    }

    #[test]
    fn compose_rules() {
        assert_eq!(i("${A}").0, "a");
        assert_eq!(i("$A-b").0, "a-b");
        assert_eq!(i("${EMPTY:-d}").0, "d");
        assert_eq!(i("${EMPTY-d}").0, "");
        assert_eq!(i("${NOPE-d}").0, "d");
        assert_eq!(i("${NOPE:-${A}}").0, "a");
        assert_eq!(i("${NOPE:-${NOPE2:-deep}}").0, "deep");
        assert_eq!(i("${A:+alt}").0, "alt");
        assert_eq!(i("${NOPE:+alt}").0, "");
        assert_eq!(i("$$A").0, "$$A");
        assert_eq!(i("${D}").0, "x$$y");
        assert_eq!(i("cost 5$").0, "cost 5$$");
        assert_eq!(i("${db.port}").0, "${db.port}");
        assert_eq!(i("${NOPE}").1, vec![InterpIssue::Unset("NOPE".into())]);
        assert!(
            matches!(&i("${NOPE:?need it}").1[0], InterpIssue::Required { message, .. } if message == "need it")
        );
        assert!(matches!(&i("${EMPTY?x}").1[..], []));
        assert!(matches!(&i("${A").1[0], InterpIssue::Syntax(_)));
        assert!(matches!(&i("${A!x}").1[0], InterpIssue::Syntax(_)));
    }

    #[test]
    fn whole_expressions() {
        assert!(interpolate("${N}", &env()).whole);
        assert!(interpolate("$N", &env()).whole);
        assert!(!interpolate("${N}x", &env()).whole);
        assert!(!interpolate("${A}:${N}", &env()).whole);
        assert!(!interpolate("plain", &env()).substituted);
    }
}
