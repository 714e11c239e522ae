//! Which changed files a service's `watch:` rule acts on: below its path,
//! matching its `include` globs (all files when none), not its `ignore` globs,
//! not ignored by a `.gitignore` at its path, and never inside `.git`.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::model::WatchRule;

/// Checks that `glob` is a valid glob; the error says why not.
pub fn check_glob(glob: &str) -> Result<(), String> {
    Glob::new(glob)
        .map(|_| ())
        .map_err(|e| e.kind().to_string())
}

/// A `watch:` rule ready to match changed paths.
#[derive(Debug, Clone)]
pub struct RuleMatcher {
    rule: WatchRule,
    include: Option<GlobSet>,
    ignore: GlobSet,
    gitignore: Gitignore,
}

fn set(globs: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    // The loader rejected invalid globs; one that slips through matches nothing.
    for g in globs.iter().filter_map(|g| Glob::new(g).ok()) {
        b.add(g);
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

impl RuleMatcher {
    /// The matcher of `rule`; its `.gitignore` (if any) is read now.
    pub fn new(rule: &WatchRule) -> RuleMatcher {
        let mut gi = GitignoreBuilder::new(&rule.path);
        // A missing or unreadable .gitignore ignores nothing.
        let _ = gi.add(rule.path.join(".gitignore"));
        RuleMatcher {
            include: (!rule.include.is_empty()).then(|| set(&rule.include)),
            ignore: set(&rule.ignore),
            gitignore: gi.build().unwrap_or_else(|_| Gitignore::empty()),
            rule: rule.clone(),
        }
    }

    /// The rule.
    pub fn rule(&self) -> &WatchRule {
        &self.rule
    }

    /// True when a change of `path` (absolute) counts for the rule.
    pub fn matches(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.rule.path) else {
            return false;
        };
        if rel.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        // The watched path itself: a file rule's file, not a directory's own events.
        if rel.as_os_str().is_empty() {
            return !path.is_dir();
        }
        if self.ignore.is_match(rel) {
            return false;
        }
        if self
            .gitignore
            .matched_path_or_any_parents(rel, path.is_dir())
            .is_ignore()
        {
            return false;
        }
        self.include.as_ref().is_none_or(|inc| inc.is_match(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::WatchAction;

    fn rule(dir: &Path, include: &[&str], ignore: &[&str]) -> RuleMatcher {
        RuleMatcher::new(&WatchRule {
            path: dir.to_path_buf(),
            action: WatchAction::Restart,
            include: include.iter().map(|s| s.to_string()).collect(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn includes_ignores_gitignore_and_git() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(".gitignore"), "build/\n*.log\n").unwrap();
        let m = rule(d, &["**/*.rs", "*.toml"], &["gen/**"]);
        assert!(m.matches(&d.join("src/main.rs")));
        assert!(m.matches(&d.join("Cargo.toml")));
        assert!(!m.matches(&d.join("README.md")), "not included");
        assert!(!m.matches(&d.join("gen/x.rs")), "ignored");
        assert!(!m.matches(&d.join("build/x.rs")), "gitignored");
        assert!(!m.matches(&d.join(".git/x.rs")));
        assert!(!m.matches(Path::new("/elsewhere/x.rs")));
        let all = rule(d, &[], &[]);
        assert!(all.matches(&d.join("README.md")));
        assert!(!all.matches(&d.join("out.log")), "gitignored");
    }

    #[test]
    fn invalid_globs_are_reported() {
        assert!(check_glob("src/**/*.rs").is_ok());
        assert!(check_glob("src/[").is_err());
    }
}
