//! Printing environment changes in sh, fish and csh syntax: quoted so that the shell reads back
//! exactly the value, or refused when that shell cannot carry it.
//!
//! The values are socket and file paths, URIs and tokens: the agent's or the user's, never
//! trusted to be tame. Each syntax is written for the way `credctl --help` tells users to load
//! it, and tested against the real shells (tests/it/shells.rs):
//!
//! - sh (`eval "$(credctl start)"`): single quotes, where nothing is special but `'` itself,
//!   written `'\''`. Any value without NUL survives, newlines included.
//! - fish (`credctl start --fish | source`): single quotes, where `\\` and `\'` are escapes, so
//!   every backslash is doubled (sh quoting would let a value ending in `\` escape the closing
//!   quote and run the next line as code) and `'` is written `\'`. Newlines survive.
//! - csh/tcsh (`eval \`credctl start --csh\``, or `source` of the output): inside single quotes
//!   `!` still starts a history substitution, so it is written outside them as `\!`. The
//!   unquoted backquotes split the output into words at blanks and brace-expand each word before
//!   `eval` reads it again, quotes notwithstanding: each space is therefore written as `" "`
//!   between quoted pieces (so no word starts with `~` or `=`, and runs of spaces stay intact),
//!   and tab, newline, `{` and `}`, which no quoting carries through that, are refused.
//!
//! NUL is refused everywhere: no environment variable can hold it.

use std::fmt;
use std::path::Path;

use crate::cli::ShellKind;

/// One environment change.
pub enum EnvLine<'a> {
    Set(&'a str, &'a str),
    Unset(&'a str),
}

/// A value (or name) that a shell's syntax cannot carry exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrepresentable {
    pub shell: ShellKind,
    pub var: String,
    /// What is in the way and why, e.g. "a tab, which csh's eval `...` turns into a space".
    pub problem: &'static str,
}

impl fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let other = match self.shell {
            ShellKind::Csh => "sh or --fish syntax",
            ShellKind::Fish | ShellKind::Sh => "another shell's syntax",
        };
        write!(
            f,
            "cannot write {} for {}: its value contains {}; use a value without it (for a path: \
             another --socket, CREDAGENT_SOCK or --token-file), or print {other}",
            self.var,
            self.shell.name(),
            self.problem
        )
    }
}

impl std::error::Error for Unrepresentable {}

impl ShellKind {
    /// The shell's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ShellKind::Sh => "sh",
            ShellKind::Fish => "fish",
            ShellKind::Csh => "csh",
        }
    }
}

/// Whether `name` is a plain variable name, the only kind we ever print unquoted.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Why `shell` cannot carry `c` inside a value, if it cannot.
fn refused(shell: ShellKind, c: char) -> Option<&'static str> {
    match (shell, c) {
        (_, '\0') => Some("a NUL byte, which no environment variable can hold"),
        (ShellKind::Csh, '\n') => {
            Some("a newline, which csh's eval `...` turns into a space or a command break")
        }
        (ShellKind::Csh, '\t') => Some("a tab, which csh's eval `...` turns into a space"),
        (ShellKind::Csh, '{' | '}') => {
            Some("a brace, which csh's eval `...` brace-expands even inside quotes")
        }
        _ => None,
    }
}

/// Quotes `v` for `shell`; the problem when a character cannot be carried (see [`refused`]).
fn quote(shell: ShellKind, v: &str) -> Result<String, &'static str> {
    if let Some(problem) = v.chars().find_map(|c| refused(shell, c)) {
        return Err(problem);
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('\'');
    for c in v.chars() {
        match (shell, c) {
            (ShellKind::Sh, '\'') => out.push_str(r"'\''"),
            (ShellKind::Fish, '\'') => out.push_str(r"\'"),
            (ShellKind::Fish, '\\') => out.push_str(r"\\"),
            (ShellKind::Csh, '\'') => out.push_str(r"'\''"),
            (ShellKind::Csh, '!') => out.push_str(r"'\!'"),
            (ShellKind::Csh, ' ') => out.push_str(r#"'" "'"#),
            _ => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// Renders `lines` for `shell`, one statement per line, each ending in `;` (csh's `eval` joins
/// them into one line).
pub fn render(shell: ShellKind, lines: &[EnvLine<'_>]) -> Result<String, Unrepresentable> {
    let mut out = String::new();
    for line in lines {
        let name = match line {
            EnvLine::Set(k, _) | EnvLine::Unset(k) => *k,
        };
        let fail = |problem| Unrepresentable {
            shell,
            var: name.to_owned(),
            problem,
        };
        if !valid_name(name) {
            return Err(fail(
                "an invalid variable name (only letters, digits and _ are printed)",
            ));
        }
        let s = match (shell, line) {
            (ShellKind::Sh, EnvLine::Set(k, v)) => {
                format!("{k}={}; export {k};", quote(shell, v).map_err(fail)?)
            }
            (ShellKind::Sh, EnvLine::Unset(k)) => format!("unset {k};"),
            (ShellKind::Fish, EnvLine::Set(k, v)) => {
                format!("set -gx {k} {};", quote(shell, v).map_err(fail)?)
            }
            (ShellKind::Fish, EnvLine::Unset(k)) => format!("set -e {k};"),
            (ShellKind::Csh, EnvLine::Set(k, v)) => {
                format!("setenv {k} {};", quote(shell, v).map_err(fail)?)
            }
            (ShellKind::Csh, EnvLine::Unset(k)) => format!("unsetenv {k};"),
        };
        out.push_str(&s);
        out.push('\n');
    }
    Ok(out)
}

/// Checks that `value` can be written as `var` for `shell`, before anything is done that would
/// be wasted if it cannot (starting an agent, writing a token file).
pub fn check(shell: ShellKind, var: &str, value: &str) -> Result<(), Unrepresentable> {
    render(shell, &[EnvLine::Set(var, value)]).map(drop)
}

/// `path` as the value of `var`, checked for `shell`. A path that is not UTF-8 is refused rather
/// than exported with replacement characters, which would name another file.
pub fn path_value<'a>(
    shell: ShellKind,
    var: &str,
    path: &'a Path,
) -> Result<&'a str, Unrepresentable> {
    let value = path.to_str().ok_or_else(|| Unrepresentable {
        shell,
        var: var.to_owned(),
        problem: "bytes that are not UTF-8",
    })?;
    check(shell, var, value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(shell: ShellKind, v: &str) -> String {
        render(shell, &[EnvLine::Set("A", v)]).unwrap()
    }

    #[test]
    fn renders_each_shell() {
        let lines = [EnvLine::Set("A", "x y"), EnvLine::Unset("B")];
        assert_eq!(
            render(ShellKind::Sh, &lines).unwrap(),
            "A='x y'; export A;\nunset B;\n"
        );
        assert_eq!(
            render(ShellKind::Fish, &lines).unwrap(),
            "set -gx A 'x y';\nset -e B;\n"
        );
        assert_eq!(
            render(ShellKind::Csh, &lines).unwrap(),
            "setenv A 'x'\" \"'y';\nunsetenv B;\n"
        );
    }

    #[test]
    fn plain_values_are_plainly_quoted() {
        let uri = "http://127.0.0.1:41234/creds";
        assert_eq!(one(ShellKind::Sh, uri), format!("A='{uri}'; export A;\n"));
        assert_eq!(one(ShellKind::Fish, uri), format!("set -gx A '{uri}';\n"));
        assert_eq!(one(ShellKind::Csh, uri), format!("setenv A '{uri}';\n"));
        assert_eq!(one(ShellKind::Sh, ""), "A=''; export A;\n");
        assert_eq!(one(ShellKind::Csh, ""), "setenv A '';\n");
    }

    #[test]
    fn sh_single_quote_closes_escapes_and_reopens() {
        assert_eq!(one(ShellKind::Sh, "it's"), "A='it'\\''s'; export A;\n");
        // Nothing else is special inside sh single quotes.
        assert_eq!(
            one(ShellKind::Sh, "\\ $(x) `y` ! \n"),
            "A='\\ $(x) `y` ! \n'; export A;\n"
        );
    }

    #[test]
    fn fish_escapes_only_backslash_and_quote() {
        assert_eq!(one(ShellKind::Fish, "it's"), "set -gx A 'it\\'s';\n");
        assert_eq!(one(ShellKind::Fish, "a\\b"), "set -gx A 'a\\\\b';\n");
        assert_eq!(one(ShellKind::Fish, "a\\"), "set -gx A 'a\\\\';\n");
        assert_eq!(
            one(ShellKind::Fish, "$x (y) \n"),
            "set -gx A '$x (y) \n';\n"
        );
        assert_eq!(one(ShellKind::Fish, "'"), "set -gx A '\\'';\n");
        // With sh quoting, a trailing backslash would escape the closing quote.
        assert_eq!(one(ShellKind::Fish, "x\\"), "set -gx A 'x\\\\';\n");
    }

    #[test]
    fn csh_bang_space_and_quote_go_outside_the_quotes() {
        assert_eq!(one(ShellKind::Csh, "a!b"), "setenv A 'a'\\!'b';\n");
        assert_eq!(one(ShellKind::Csh, "it's"), "setenv A 'it'\\''s';\n");
        assert_eq!(
            one(ShellKind::Csh, "a  ~b"),
            "setenv A 'a'\" \"''\" \"'~b';\n"
        );
        // Backslash and dollar are literal inside csh single quotes.
        assert_eq!(one(ShellKind::Csh, "\\$x"), "setenv A '\\$x';\n");
    }

    #[test]
    fn csh_output_has_no_blank_a_word_could_start_after() {
        // After the backquotes split at blanks, every word must start with a quote.
        let out = one(ShellKind::Csh, " ~root =1 -x  *");
        for word in out.trim_end().split(' ').skip(2).filter(|w| !w.is_empty()) {
            assert!(word.starts_with(['\'', '"']), "{word:?} in {out:?}");
        }
    }

    #[test]
    fn refuses_what_a_shell_cannot_carry() {
        for (shell, v) in [
            (ShellKind::Sh, "a\0b"),
            (ShellKind::Fish, "a\0b"),
            (ShellKind::Csh, "a\0b"),
            (ShellKind::Csh, "a\nb"),
            (ShellKind::Csh, "a\tb"),
            (ShellKind::Csh, "{a,b}"),
            (ShellKind::Csh, "a}"),
        ] {
            let err = render(shell, &[EnvLine::Set("CREDAGENT_SOCK", v)]).unwrap_err();
            assert_eq!(err.var, "CREDAGENT_SOCK");
            let msg = err.to_string();
            assert!(
                msg.contains("cannot write CREDAGENT_SOCK") && msg.contains("--socket"),
                "{msg}"
            );
        }
        // Newlines and tabs are fine where the syntax carries them.
        assert!(render(ShellKind::Sh, &[EnvLine::Set("A", "a\n\tb{}")]).is_ok());
        assert!(render(ShellKind::Fish, &[EnvLine::Set("A", "a\n\tb{}")]).is_ok());
        assert!(check(ShellKind::Csh, "A", "a\nb").is_err());
        assert!(check(ShellKind::Csh, "A", "a b").is_ok());
    }

    #[test]
    fn paths_must_be_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff/agent.sock"));
        let err = path_value(ShellKind::Sh, "CREDAGENT_SOCK", bad).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let good = Path::new("/tmp/a b/agent.sock");
        assert_eq!(
            path_value(ShellKind::Csh, "CREDAGENT_SOCK", good).unwrap(),
            "/tmp/a b/agent.sock"
        );
        assert!(path_value(ShellKind::Csh, "X", Path::new("/tmp/a\tb")).is_err());
    }

    #[test]
    fn refuses_names_that_would_need_quoting() {
        for name in ["", "1A", "A B", "A;B", "A=B", "$A"] {
            for shell in [ShellKind::Sh, ShellKind::Fish, ShellKind::Csh] {
                assert!(render(shell, &[EnvLine::Unset(name)]).is_err(), "{name:?}");
            }
        }
        assert!(render(ShellKind::Sh, &[EnvLine::Unset("_A1")]).is_ok());
    }
}
