//! POSIX `sh` quoting and command lines for shells on other hosts.

use crate::Command;

/// Quotes `arg` so that a POSIX `sh` reads it back as exactly one word with
/// exactly these bytes.
///
/// Words made only of characters that are never special (`A-Z a-z 0-9 _ - . / , : @ % +`)
/// are returned as they are; anything else is wrapped in single quotes, with each
/// `'` written as `'\''`.
///
/// ```
/// use command_executor::shell_quote;
/// assert_eq!(shell_quote("plain/path-1.0"), "plain/path-1.0");
/// assert_eq!(shell_quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'@' | b'%' | b'+'
                )
        });
    if safe {
        return arg.to_owned();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for ch in arg.chars() {
        if ch == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

/// The command as one POSIX `sh` command line that does what launching it
/// locally would do: change directory, adjust the environment, then `exec` the
/// program with its arguments.
///
/// `cd 'dir' && exec env -u OLD K='v' prog 'a b'`; without a directory the
/// `cd` part is left out, without environment changes the `env` part. The user
/// and group of the command are not part of the line (a remote shell runs as
/// the login user). This is what [`SshLayer`](crate::SshLayer) sends.
///
/// ```
/// use command_executor::{Command, shell_command_line};
/// let cmd = Command::new("echo").arg("a b").env("K", "v w").current_dir("/srv/app");
/// assert_eq!(shell_command_line(&cmd), "cd /srv/app && exec env K='v w' echo 'a b'");
/// ```
pub fn shell_command_line(cmd: &Command) -> String {
    let mut line = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        line.push_str("cd ");
        line.push_str(&shell_quote(&dir.to_string_lossy()));
        line.push_str(" && ");
    }
    line.push_str("exec ");
    let envs: Vec<(&str, Option<&str>)> = cmd.get_envs().collect();
    if cmd.get_env_clear() || !envs.is_empty() {
        line.push_str("env ");
        if cmd.get_env_clear() {
            line.push_str("-i ");
        }
        for (k, v) in &envs {
            if v.is_none() {
                line.push_str("-u ");
                line.push_str(&shell_quote(k));
                line.push(' ');
            }
        }
        for (k, v) in &envs {
            if let Some(v) = v {
                line.push_str(&shell_quote(k));
                line.push('=');
                line.push_str(&shell_quote(v));
                line.push(' ');
            }
        }
    }
    let words: Vec<String> = cmd.argv().map(shell_quote).collect();
    line.push_str(&words.join(" "));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_specials_only() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("'"), r#"''\'''"#);
        assert_eq!(shell_quote("a=b"), "'a=b'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("*"), "'*'");
    }

    #[test]
    fn command_line_folds_env_and_dir() {
        let c = Command::new("prog").arg("x y").env_clear().env("A", "1");
        assert_eq!(shell_command_line(&c), "exec env -i A=1 prog 'x y'");
        let c = Command::new("prog").env_remove("OLD");
        assert_eq!(shell_command_line(&c), "exec env -u OLD prog");
        assert_eq!(shell_command_line(&Command::new("ls")), "exec ls");
    }
}
