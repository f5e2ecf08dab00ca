//! Printing environment changes in sh, fish and csh syntax, quoted safely.

use crate::cli::ShellKind;

/// One environment change.
pub enum EnvLine<'a> {
    Set(&'a str, &'a str),
    Unset(&'a str),
}

/// Single-quotes `v` for all three shells (a `'` becomes `'\''`).
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Renders `lines` for `shell`, one statement per line.
pub fn render(shell: ShellKind, lines: &[EnvLine<'_>]) -> String {
    let mut out = String::new();
    for line in lines {
        let s = match (shell, line) {
            (ShellKind::Sh, EnvLine::Set(k, v)) => format!("{k}={}; export {k};", quote(v)),
            (ShellKind::Sh, EnvLine::Unset(k)) => format!("unset {k};"),
            (ShellKind::Fish, EnvLine::Set(k, v)) => format!("set -gx {k} {};", quote(v)),
            (ShellKind::Fish, EnvLine::Unset(k)) => format!("set -e {k};"),
            (ShellKind::Csh, EnvLine::Set(k, v)) => format!("setenv {k} {};", quote(v)),
            (ShellKind::Csh, EnvLine::Unset(k)) => format!("unsetenv {k};"),
        };
        out.push_str(&s);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_shell() {
        let lines = [EnvLine::Set("A", "x y"), EnvLine::Unset("B")];
        assert_eq!(
            render(ShellKind::Sh, &lines),
            "A='x y'; export A;\nunset B;\n"
        );
        assert_eq!(
            render(ShellKind::Fish, &lines),
            "set -gx A 'x y';\nset -e B;\n"
        );
        assert_eq!(
            render(ShellKind::Csh, &lines),
            "setenv A 'x y';\nunsetenv B;\n"
        );
    }

    #[test]
    fn quotes_single_quotes() {
        let out = render(ShellKind::Sh, &[EnvLine::Set("A", "it's")]);
        assert_eq!(out, "A='it'\\''s'; export A;\n");
    }
}
