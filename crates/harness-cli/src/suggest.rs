//! "Did you mean": the known word a mistyped one was most likely meant to be, strict enough
//! that a different real word (`top`, `pause`) is never "corrected" into another verb or
//! service.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The candidate `word` is most likely a typo of, if any: same first letter, and at most one
/// edit away (two for words of five letters or more), a swap of two neighbours counting as
/// one. Ties go to the first candidate.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let first = |s: &str| s.chars().next().map(|c| c.to_ascii_lowercase());
    let word_lower = word.to_lowercase();
    let limit = if word.chars().count() >= 5 { 2 } else { 1 };
    candidates
        .into_iter()
        .filter(|c| *c != word && first(c) == first(word))
        .map(|c| (strsim::osa_distance(&word_lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// clap's error for an unknown verb keeps only the suggestions [`did_you_mean`] agrees with:
/// clap's own similarity (Jaro above 0.7) offers `stop` for `top` and `status` for `pause`.
pub fn strict_subcommand_error(e: clap::Error, cmd: &clap::Command) -> clap::Error {
    if e.kind() != ErrorKind::InvalidSubcommand {
        return e;
    }
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand) else {
        return e;
    };
    let offered: Vec<&str> = match e.get(ContextKind::SuggestedSubcommand) {
        Some(ContextValue::String(s)) => vec![s.as_str()],
        Some(ContextValue::Strings(v)) => v.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let kept = did_you_mean(word, offered.iter().copied()).map(str::to_owned);
    let mut strict = clap::Error::new(ErrorKind::InvalidSubcommand).with_cmd(cmd);
    for (kind, value) in e.context() {
        let empty_tips = matches!(value, ContextValue::StyledStrs(v) if v.is_empty());
        if kind != ContextKind::SuggestedSubcommand && !empty_tips {
            strict.insert(kind, value.clone());
        }
    }
    if let Some(s) = kept {
        strict.insert(ContextKind::SuggestedSubcommand, ContextValue::String(s));
    }
    strict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every verb of `harness`, with its aliases.
    fn verbs() -> Vec<String> {
        use clap::CommandFactory;
        crate::cli::Cli::command()
            .get_subcommands()
            .flat_map(|c| {
                std::iter::once(c.get_name().to_string())
                    .chain(c.get_all_aliases().map(str::to_string))
            })
            .collect()
    }

    #[test]
    fn close_typos_are_suggested() {
        assert_eq!(
            did_you_mean("stauts", verbs().iter().map(String::as_str)),
            Some("status")
        );
        assert_eq!(
            did_you_mean("stpo", verbs().iter().map(String::as_str)),
            Some("stop")
        );
        assert_eq!(
            did_you_mean("restrat", verbs().iter().map(String::as_str)),
            Some("restart")
        );
        assert_eq!(
            did_you_mean("exce", verbs().iter().map(String::as_str)),
            Some("exec")
        );
        assert_eq!(
            did_you_mean("evnets", verbs().iter().map(String::as_str)),
            Some("events")
        );
        assert_eq!(did_you_mean("apii", ["api", "db", "web"]), Some("api"));
        assert_eq!(did_you_mean("wbe", ["api", "db", "web"]), Some("web"));
    }

    #[test]
    fn other_words_are_not_corrected() {
        for word in [
            "top", "pause", "unpause", "kill", "rm", "run", "build", "attach", "cp",
        ] {
            assert_eq!(
                did_you_mean(word, verbs().iter().map(String::as_str)),
                None,
                "{word}"
            );
        }
        assert_eq!(did_you_mean("cache", ["api", "db", "web"]), None);
    }
}
