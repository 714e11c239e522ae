//! Diagnostics: every problem of a load, each with file:line:column, the source
//! line with a caret under the spot, and a one-line hint.
//!
//! ```text
//! error: service `api` depends on `dbb`, which is not defined
//!   --> services.yaml:12:9
//!    |
//! 12 |       - dbb
//!    |         ^^^
//!    = hint: did you mean `db`?
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::tree::Pos;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration is not usable.
    Error,
    /// Worth knowing; the configuration loads.
    Warning,
}

/// A resolved source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
    /// Where, if known.
    pub location: Option<Location>,
    /// The source line, if known.
    pub source_line: Option<String>,
    /// How many characters the caret underlines (at least 1).
    pub span: usize,
    /// How to fix it, in one line.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Renders this diagnostic, optionally with ANSI colours.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, color)
            .expect("writing to a String cannot fail");
        out
    }

    fn write(&self, out: &mut impl fmt::Write, color: bool) -> fmt::Result {
        let (bold, red, yellow, blue, cyan, reset) = if color {
            (
                "\x1b[1m",
                "\x1b[1;31m",
                "\x1b[1;33m",
                "\x1b[1;34m",
                "\x1b[36m",
                "\x1b[0m",
            )
        } else {
            ("", "", "", "", "", "")
        };
        let (label, lc) = match self.severity {
            Severity::Error => ("error", red),
            Severity::Warning => ("warning", yellow),
        };
        writeln!(out, "{lc}{label}{reset}{bold}: {}{reset}", self.message)?;
        if let Some(loc) = &self.location {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            writeln!(out, "{pad}{blue}-->{reset} {loc}")?;
            if let (Some(src), true) = (&self.source_line, loc.line > 0) {
                let src = src.replace('\t', " ");
                writeln!(out, "{pad} {blue}|{reset}")?;
                writeln!(out, "{blue}{num} |{reset} {src}")?;
                let col = (loc.column.max(1) - 1) as usize;
                let indent: String = src
                    .chars()
                    .take(col)
                    .map(|c| if c.is_whitespace() { c } else { ' ' })
                    .collect();
                writeln!(
                    out,
                    "{pad} {blue}|{reset} {indent}{lc}{}{reset}",
                    "^".repeat(self.span.max(1))
                )?;
            }
            if let Some(h) = &self.hint {
                writeln!(out, "{pad} {blue}={reset} {cyan}hint{reset}: {h}")?;
            }
        } else if let Some(h) = &self.hint {
            writeln!(out, "  {blue}={reset} {cyan}hint{reset}: {h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

/// Every problem found by a load. Its `Display` is the plain-text report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    /// The problems, errors first, each group in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// True if there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Renders all diagnostics and a summary line, optionally with ANSI colours.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.render(color));
            out.push('\n');
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        out.push_str(&summary(errors, warnings));
        out.push('\n');
        out
    }
}

fn summary(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| {
        if n == 1 {
            format!("{n} {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    match (errors, warnings) {
        (0, 0) => "no problems".to_owned(),
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// The loaded source texts, to resolve positions into locations and source lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    pub files: Vec<(PathBuf, String)>,
}

impl Sources {
    pub fn add(&mut self, path: &Path, text: String) -> usize {
        self.files.push((path.to_owned(), text));
        self.files.len() - 1
    }

    /// A diagnostic at a position.
    pub fn diag(
        &self,
        severity: Severity,
        pos: Option<Pos>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let (location, source_line, span) =
            match pos.and_then(|p| Some((p, self.files.get(p.file)?))) {
                Some((p, (path, text))) => {
                    let line = if p.line > 0 {
                        text.lines().nth((p.line - 1) as usize).map(str::to_owned)
                    } else {
                        None
                    };
                    let span = line.as_deref().map(|l| token_len(l, p.column)).unwrap_or(1);
                    (
                        Some(Location {
                            file: path.clone(),
                            line: p.line,
                            column: p.column,
                        }),
                        line,
                        span,
                    )
                }
                None => (None, None, 1),
            };
        Diagnostic {
            severity,
            message: message.into(),
            location,
            source_line,
            span,
            hint,
        }
    }

    /// A diagnostic about a whole file.
    pub fn file_diag(
        &self,
        path: &Path,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            location: Some(Location {
                file: path.to_owned(),
                line: 0,
                column: 0,
            }),
            source_line: None,
            span: 1,
            hint,
        }
    }
}

/// Length of what starts at a 1-based column: a quoted string, or a plain
/// scalar up to `: `, `,`, `]`, `}` or a ` #` comment (trailing spaces dropped).
fn token_len(line: &str, column: u32) -> usize {
    let start = (column.max(1) - 1) as usize;
    let rest: Vec<char> = line.chars().skip(start).collect();
    match rest.first() {
        None => 1,
        Some(&q @ ('"' | '\'')) => rest[1..]
            .iter()
            .position(|&c| c == q)
            .map_or(rest.len(), |i| i + 2),
        Some(_) => {
            let mut end = rest.len();
            for (i, &c) in rest.iter().enumerate() {
                let next = rest.get(i + 1).copied();
                let prev = if i == 0 {
                    None
                } else {
                    rest.get(i - 1).copied()
                };
                let stop = matches!(c, ',' | ']' | '}')
                    || (c == ':' && next.is_none_or(char::is_whitespace))
                    || (c == '#' && prev.is_some_and(char::is_whitespace));
                if stop {
                    end = i;
                    break;
                }
            }
            let len = rest[..end]
                .iter()
                .rposition(|c| !c.is_whitespace())
                .map_or(0, |i| i + 1);
            len.max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_the_token() {
        let mut s = Sources::default();
        s.add(
            Path::new("services.yaml"),
            "a: 1\ndependencies: [dbb, x]\n".into(),
        );
        let d = s.diag(
            Severity::Error,
            Some(Pos {
                file: 0,
                line: 2,
                column: 16,
            }),
            "unknown dependency `dbb`",
            Some("did you mean `db`?".into()),
        );
        let text = d.to_string();
        let expected = "error: unknown dependency `dbb`\n \
                        --> services.yaml:2:16\n  \
                        |\n\
                        2 | dependencies: [dbb, x]\n  \
                        |                ^^^\n  \
                        = hint: did you mean `db`?\n";
        assert_eq!(text, expected);
        assert!(d.render(true).contains("\x1b[1;31m"));
        let all = Diagnostics { items: vec![d] };
        assert!(all.to_string().ends_with("1 error\n"));
    }

    #[test]
    fn token_lengths() {
        assert_eq!(token_len("  image: \"a b\"", 10), 5);
        assert_eq!(token_len("x", 5), 1);
        assert_eq!(token_len("k: value # c", 4), 5);
        assert_eq!(token_len("    startup_timeout: 10 sec", 22), 6);
        assert_eq!(token_len("    helth_check: {tcp: 80}", 5), 11);
        assert_eq!(token_len("url: http://x:80/a", 6), 13);
    }
}
