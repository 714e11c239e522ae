//! Reference templates: `${service.ip}`, `${service.port}`, `${service.host}`.
//!
//! Environment variables (`${VAR}`) are interpolated when the file is loaded; what
//! is left in the model are references to other services, expanded when the
//! service is started and the services it names are placed. In a reference
//! template `$$` stands for a literal `$`.
//!
//! ```
//! use harness_config::template::{expand_refs, references, RefField};
//!
//! let url = "http://${db.host}:${db.port}/x?cost=$$5";
//! assert_eq!(references(url).len(), 2);
//! let out = expand_refs(url, |r| match r.field {
//!     RefField::Host => Some("10.0.0.7".to_owned()),
//!     RefField::Port => Some("5432".to_owned()),
//!     RefField::Ip => None,
//! })
//! .unwrap();
//! assert_eq!(out, "http://10.0.0.7:5432/x?cost=$5");
//! ```

use std::fmt;

use harness_core::ServiceName;

/// Which address part a reference asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefField {
    /// `${svc.ip}`
    Ip,
    /// `${svc.port}`
    Port,
    /// `${svc.host}`
    Host,
}

impl RefField {
    /// `ip`, `port` or `host`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefField::Ip => "ip",
            RefField::Port => "port",
            RefField::Host => "host",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ip" => Some(RefField::Ip),
            "port" => Some(RefField::Port),
            "host" => Some(RefField::Host),
            _ => None,
        }
    }
}

impl fmt::Display for RefField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `${service.field}` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The service named.
    pub service: ServiceName,
    /// What is asked of it.
    pub field: RefField,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{}.{}}}", self.service, self.field)
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    /// Text copied as is (`$$` already turned into `$`).
    Literal(std::borrow::Cow<'a, str>),
    /// A reference.
    Ref(ServiceRef),
}

/// A malformed reference in a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without a closing `}`.
    #[error("`${{` at byte {0} is not closed by `}}`")]
    Unclosed(usize),
    /// `${x}` that is not `${service.ip|port|host}`.
    #[error(
        "`${{{0}}}` is not a service reference: write `${{service.ip}}`, `${{service.port}}` or `${{service.host}}`"
    )]
    NotARef(String),
    /// A reference the resolver could not answer.
    #[error("`{0}` cannot be resolved yet: the service is not placed or has no such address part")]
    Unresolved(ServiceRef),
}

/// Splits a template into literal text and references.
pub fn parse(template: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            lit.push('$');
            offset += i + 2;
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let Some(end) = body_start.find('}') else {
                return Err(TemplateError::Unclosed(offset + i));
            };
            let body = &body_start[..end];
            let r = parse_ref(body).ok_or_else(|| TemplateError::NotARef(body.to_owned()))?;
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Ref(r));
            offset += i + 2 + end + 1;
            rest = &body_start[end + 1..];
        } else {
            lit.push('$');
            offset += i + 1;
            rest = after;
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Literal(lit.into()));
    }
    Ok(parts)
}

/// Parses `service.field`.
pub(crate) fn parse_ref(body: &str) -> Option<ServiceRef> {
    let (svc, field) = body.trim().rsplit_once('.')?;
    Some(ServiceRef {
        service: ServiceName::new(svc).ok()?,
        field: RefField::parse(field)?,
    })
}

/// The service references in a template (malformed pieces are skipped; the
/// loader has already reported them).
pub fn references(template: &str) -> Vec<ServiceRef> {
    match parse(template) {
        Ok(parts) => parts
            .into_iter()
            .filter_map(|p| match p {
                Part::Ref(r) => Some(r),
                Part::Literal(_) => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True if the template holds at least one reference.
pub fn has_refs(template: &str) -> bool {
    !references(template).is_empty()
}

/// Expands every reference with `resolve` and turns `$$` into `$`.
pub fn expand_refs(
    template: &str,
    mut resolve: impl FnMut(&ServiceRef) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for part in parse(template)? {
        match part {
            Part::Literal(s) => out.push_str(&s),
            Part::Ref(r) => match resolve(&r) {
                Some(v) => out.push_str(&v),
                None => return Err(TemplateError::Unresolved(r)),
            },
        }
    }
    Ok(out)
}

/// Expands references with the endpoints of services, e.g. from the registry.
pub fn expand_with_endpoints(
    template: &str,
    mut endpoint: impl FnMut(&ServiceName) -> Option<harness_core::Endpoint>,
) -> Result<String, TemplateError> {
    expand_refs(template, |r| endpoint(&r.service)?.field(r.field.as_str()))
}

/// Escapes `$` as `$$`, so that text becomes a template that expands to itself.
pub fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs_and_escapes() {
        let refs = references("${db.ip}:${db.port} ${web-1.host}");
        assert_eq!(refs.len(), 3);
        assert_eq!(refs[2].service.as_str(), "web-1");
        assert_eq!(refs[2].field, RefField::Host);
        assert!(references("$${db.ip}").is_empty());
        assert_eq!(expand_refs("a$$b$", |_| None).unwrap(), "a$b$");
        assert!(matches!(
            parse("${db.nope}"),
            Err(TemplateError::NotARef(_))
        ));
        assert!(matches!(
            parse("x ${db.ip"),
            Err(TemplateError::Unclosed(2))
        ));
        assert!(matches!(
            expand_refs("${db.ip}", |_| None),
            Err(TemplateError::Unresolved(_))
        ));
    }

    #[test]
    fn endpoints_expand() {
        let out = expand_with_endpoints("${db.ip}:${db.port}", |_| {
            Some(harness_core::Endpoint::loopback(Some(5432)))
        })
        .unwrap();
        assert_eq!(out, "127.0.0.1:5432");
        assert_eq!(expand_refs(&escape("$x$$"), |_| None).unwrap(), "$x$$");
    }
}
