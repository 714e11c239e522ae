//! The build context: which files of the context directory are sent, after
//! `.dockerignore` (the engine's own rules: patterns match a path or any of its
//! parent directories, `*` and `?` stay within one path element, `**` spans any
//! number, a leading `!` re-includes, the last matching line wins).

use std::io::{self, Write};
use std::path::Path;

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    /// `(pattern, exception)` in file order.
    rules: Vec<(String, bool)>,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> DockerIgnore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pat, exception) = match line.strip_prefix('!') {
                Some(p) => (p.trim(), true),
                None => (line, false),
            };
            let pat = clean(pat);
            if !pat.is_empty() {
                rules.push((pat, exception));
            }
        }
        DockerIgnore { rules }
    }

    /// True if `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path);
        let mut excluded = false;
        for (pat, exception) in &self.rules {
            if matches_path_or_parent(pat, &path) {
                excluded = !exception;
            }
        }
        excluded
    }

    /// True if some exception could re-include something below `dir`, so an
    /// excluded directory must still be walked.
    fn may_reinclude_below(&self, dir: &str) -> bool {
        self.rules.iter().any(|(pat, exception)| {
            *exception
                && (pat.starts_with(&format!("{dir}/")) || pat.contains('*') || pat.contains('?'))
        })
    }
}

/// `./a//b/` → `a/b`.
fn clean(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn matches_path_or_parent(pat: &str, path: &str) -> bool {
    let mut p = path;
    loop {
        if glob(pat.as_bytes(), p.as_bytes()) {
            return true;
        }
        match p.rfind('/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

/// Matches `*` (not `/`), `?` (one non-`/`), `**` (anything, `/` included) and literals.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.first() {
        None => s.is_empty(),
        Some(b'*') if pat.get(1) == Some(&b'*') => {
            let mut rest = &pat[2..];
            // `**/` also matches zero directories.
            if rest.first() == Some(&b'/') {
                if glob(&rest[1..], s) {
                    return true;
                }
                rest = &rest[1..];
                return (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && glob(rest, &s[i..]));
            }
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &pat[1..];
            for i in 0..=s.len() {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob(&pat[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&pat[1..], &s[1..]),
    }
}

/// Writes the context directory as a tar archive: every file not excluded by
/// its `.dockerignore`, plus the Dockerfile (always sent, as the engine does).
pub(crate) fn write_context<W: Write>(dir: &Path, dockerfile: &str, out: W) -> io::Result<()> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => DockerIgnore::parse(&t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(e),
    };
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    walk(dir, "", &ignore, clean(dockerfile).as_str(), &mut b)?;
    b.finish()
}

fn walk<W: Write>(
    root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    dockerfile: &str,
    b: &mut tar::Builder<W>,
) -> io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: file name is not UTF-8", e.path().display()),
            ));
        };
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let kind = e.file_type()?;
        let excluded = ignore.excludes(&path) && path != dockerfile;
        if kind.is_dir() {
            if !excluded {
                b.append_dir(&path, e.path())?;
            }
            if !excluded
                || ignore.may_reinclude_below(&path)
                || dockerfile.starts_with(&format!("{path}/"))
            {
                walk(root, &path, ignore, dockerfile, b)?;
            }
        } else if !excluded {
            b.append_path_with_name(e.path(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ig = DockerIgnore::parse(
            "# comment\n\ntarget\n*.log\n!keep.log\n/docs/**/*.md\n./tmp/\n**/secret?\n",
        );
        assert!(ig.excludes("target"));
        assert!(ig.excludes("target/debug/app"));
        assert!(ig.excludes("a.log"));
        assert!(!ig.excludes("keep.log"));
        assert!(!ig.excludes("sub/a.log"), "* does not cross /");
        assert!(ig.excludes("docs/x.md"));
        assert!(ig.excludes("docs/a/b/x.md"));
        assert!(!ig.excludes("docs/x.txt"));
        assert!(ig.excludes("tmp/f"));
        assert!(ig.excludes("secret1"));
        assert!(ig.excludes("a/b/secretX"));
        assert!(!ig.excludes("a/b/secret"));
        assert!(!ig.excludes("src/main.rs"));
    }

    #[test]
    fn context_tar_leaves_out_ignored_files_but_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::write(p.join("target/debug/app"), "x").unwrap();
        std::fs::write(p.join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(p.join("a.log"), "").unwrap();
        std::fs::write(p.join("keep.log"), "").unwrap();
        std::fs::write(p.join("Dockerfile"), "FROM scratch").unwrap();
        std::fs::write(
            p.join(".dockerignore"),
            "target\n*.log\n!keep.log\nDockerfile\n",
        )
        .unwrap();
        let mut out = Vec::new();
        write_context(p, "Dockerfile", &mut out).unwrap();
        let mut names: Vec<String> = tar::Archive::new(out.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "keep.log",
                "src",
                "src/main.rs"
            ]
        );
    }
}
