//! `credctl export ROLE --format F`: a role's current credentials in the formats of
//! `aws configure export-credentials` (AWS CLI v2).
//!
//! The AWS CLI's formats, from its `awscli/customizations/configure/exportcreds.py`: one line
//! per variable, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_CREDENTIAL_EXPIRATION`, each from a template (`export {name}={value}`, `{name}={value}`,
//! `$Env:{name}="{value}"`, `set {name}={value}`, `set -gx {name} "{value}"`), and for `process`
//! the `credential_process` JSON as Python's `json.dumps(indent=2, separators=(',', ': '))`
//! writes it, with a newline. The expiration is botocore's `datetime.isoformat()` of the
//! credentials' expiry: `2024-05-01T12:00:00+00:00`, not the `Z` form STS and
//! `credential-process` use.
//!
//! The AWS CLI pastes values in as they are. Real credentials (letters, digits, `+/=`) and the
//! expiration need no quoting in any of these syntaxes, so for them the output is the AWS CLI's
//! byte for byte. A value outside that plain set is quoted for the syntax where it can be
//! (sh: single quotes; fish and PowerShell: escapes inside the double quotes), and refused where
//! it cannot (NUL anywhere; control characters in PowerShell and cmd; in cmd anything but the
//! plain set, since `%` and `!` expand whatever the quoting).

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::{ExportFormat, TouchArgs};
use crate::commands::session::{region_plan, role_credentials};
use crate::error::{Failure, Result};

/// Characters every one of the syntaxes reads literally where the AWS CLI's templates put a
/// value (and, unquoted in sh, at any place in an assignment's value: no `~`).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+/=-_.:,@".contains(c)
}

impl ExportFormat {
    /// The name `--format` takes.
    fn name(self) -> &'static str {
        match self {
            ExportFormat::Env => "env",
            ExportFormat::EnvNoExport => "env-no-export",
            ExportFormat::Process => "process",
            ExportFormat::Powershell => "powershell",
            ExportFormat::WindowsCmd => "windows-cmd",
            ExportFormat::Fish => "fish",
        }
    }
}

/// A value `format` cannot carry.
fn refuse(format: ExportFormat, var: &str, what: &str) -> Failure {
    let other = match format {
        ExportFormat::WindowsCmd => "--format powershell",
        _ => "another --format (process carries any value)",
    };
    Failure::failed(format!(
        "cannot write {var} in the {} format: its value contains {what}, which that syntax \
         cannot carry; use {other}",
        format.name()
    ))
}

/// `value` quoted for `format`'s template (the part between the template's own quotes, if it
/// has them).
fn quote(format: ExportFormat, var: &str, value: &str) -> Result<String> {
    if value.contains('\0') {
        return Err(refuse(
            format,
            var,
            "a NUL byte, which no environment variable can hold",
        ));
    }
    let all_plain = value.chars().all(plain);
    Ok(match format {
        ExportFormat::Env | ExportFormat::EnvNoExport | ExportFormat::Process => {
            if all_plain {
                value.to_owned()
            } else {
                // Inside sh single quotes nothing is special but `'` itself.
                format!("'{}'", value.replace('\'', r"'\''"))
            }
        }
        ExportFormat::Fish => {
            // Inside fish double quotes only `\"`, `\$` and `\\` are escapes.
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '\\' | '"' | '$') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        ExportFormat::Powershell => {
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(refuse(format, var, &format!("the control character {c:?}")));
            }
            // Inside PowerShell double quotes the backtick escapes; `$` expands, and `"` as
            // well as the typographic double quotes end the string.
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '`' | '$' | '"' | '\u{201C}' | '\u{201D}' | '\u{201E}') {
                    out.push('`');
                }
                out.push(c);
            }
            out
        }
        ExportFormat::WindowsCmd => {
            if let Some(c) = value.chars().find(|c| !plain(*c)) {
                return Err(refuse(format, var, &format!("{c:?}")));
            }
            value.to_owned()
        }
    })
}

/// One variable in `format`'s per-line template.
fn line(out: &mut String, format: ExportFormat, var: &str, value: &str) -> Result<()> {
    let v = quote(format, var, value)?;
    let _ = match format {
        ExportFormat::Env => writeln!(out, "export {var}={v}"),
        ExportFormat::EnvNoExport => writeln!(out, "{var}={v}"),
        ExportFormat::Powershell => writeln!(out, "$Env:{var}=\"{v}\""),
        ExportFormat::WindowsCmd => writeln!(out, "set {var}={v}"),
        ExportFormat::Fish => writeln!(out, "set -gx {var} \"{v}\""),
        ExportFormat::Process => unreachable!("process is JSON"),
    };
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`: every non-ASCII character
/// as `\uXXXX`, in surrogate pairs beyond the BMP).
fn py_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The expiration as botocore's `isoformat()` writes it: `+00:00` for STS's `Z`.
fn isoformat(expiration: &str) -> String {
    match expiration.strip_suffix('Z') {
        Some(t) => format!("{t}+00:00"),
        None => expiration.to_owned(),
    }
}

/// The credentials (and, for the shell formats, the region variables) in `format`.
pub fn render(
    format: ExportFormat,
    access_key_id: &str,
    secret_access_key: &str,
    session_token: &str,
    expiration: &str,
    region: &[(&'static str, String)],
) -> Result<String> {
    let expiration = isoformat(expiration);
    let mut out = String::new();
    if format == ExportFormat::Process {
        let fields = [
            ("AccessKeyId", access_key_id),
            ("SecretAccessKey", secret_access_key),
            ("SessionToken", session_token),
            ("Expiration", &expiration),
        ];
        out.push_str("{\n  \"Version\": 1");
        for (k, v) in fields {
            let _ = write!(out, ",\n  \"{k}\": {}", py_json_string(v));
        }
        out.push_str("\n}\n");
        return Ok(out);
    }
    line(&mut out, format, "AWS_ACCESS_KEY_ID", access_key_id)?;
    line(&mut out, format, "AWS_SECRET_ACCESS_KEY", secret_access_key)?;
    line(&mut out, format, "AWS_SESSION_TOKEN", session_token)?;
    line(&mut out, format, "AWS_CREDENTIAL_EXPIRATION", &expiration)?;
    for (k, v) in region {
        line(&mut out, format, k, v)?;
    }
    Ok(out)
}

/// `credctl export ROLE --format F [--region R]`.
pub fn export(
    socket: &Path,
    role: &str,
    format: ExportFormat,
    touch: &TouchArgs,
    region: Option<&str>,
) -> Result<String> {
    if format == ExportFormat::Process && region.is_some() {
        return Err(Failure::usage(
            "the process format has no field for a region: drop --region, or put `region = …` \
             in the profile that names credential_process",
        ));
    }
    let (opened, c) = role_credentials(socket, role, touch, true)?;
    let regions = if format == ExportFormat::Process {
        Vec::new()
    } else {
        region_plan(region, role, &opened).set
    };
    render(
        format,
        &c.access_key_id,
        c.secret_access_key.expose(),
        c.session_token.expose(),
        &c.expiration,
        &regions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ASIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "FwoGZXIvYXdzEBYaDH+abc/def==";
    const EXP: &str = "2024-05-01T12:00:00Z";

    fn all(format: ExportFormat) -> String {
        render(format, KEY, SECRET, TOKEN, EXP, &[]).unwrap()
    }

    /// The AWS CLI v2's output for the same credentials, from the templates in its
    /// `exportcreds.py` (the CLI installed for the integration tests is v1, which has no
    /// `export-credentials`; tests/it/export.rs checks the expiration against botocore itself).
    #[test]
    fn matches_the_aws_cli_v2_templates() {
        let per_line = |template: &dyn Fn(&str, &str) -> String| {
            [
                ("AWS_ACCESS_KEY_ID", KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
                ("AWS_SESSION_TOKEN", TOKEN),
                ("AWS_CREDENTIAL_EXPIRATION", "2024-05-01T12:00:00+00:00"),
            ]
            .iter()
            .map(|(k, v)| template(k, v) + "\n")
            .collect::<String>()
        };
        assert_eq!(
            all(ExportFormat::Env),
            per_line(&|k, v| format!("export {k}={v}"))
        );
        assert_eq!(
            all(ExportFormat::EnvNoExport),
            per_line(&|k, v| format!("{k}={v}"))
        );
        assert_eq!(
            all(ExportFormat::Powershell),
            per_line(&|k, v| format!("$Env:{k}=\"{v}\""))
        );
        assert_eq!(
            all(ExportFormat::WindowsCmd),
            per_line(&|k, v| format!("set {k}={v}"))
        );
        assert_eq!(
            all(ExportFormat::Fish),
            per_line(&|k, v| format!("set -gx {k} \"{v}\""))
        );
        assert_eq!(
            all(ExportFormat::Process),
            format!(
                "{{\n  \"Version\": 1,\n  \"AccessKeyId\": \"{KEY}\",\n  \"SecretAccessKey\": \
                 \"{SECRET}\",\n  \"SessionToken\": \"{TOKEN}\",\n  \"Expiration\": \
                 \"2024-05-01T12:00:00+00:00\"\n}}\n"
            )
        );
    }

    #[test]
    fn region_lines_follow_in_the_same_syntax() {
        let region = [
            ("AWS_REGION", "eu-west-1".to_owned()),
            ("AWS_DEFAULT_REGION", "eu-west-1".to_owned()),
        ];
        let out = render(ExportFormat::Powershell, KEY, SECRET, TOKEN, EXP, &region).unwrap();
        assert!(
            out.ends_with("$Env:AWS_REGION=\"eu-west-1\"\n$Env:AWS_DEFAULT_REGION=\"eu-west-1\"\n")
        );
        let out = render(ExportFormat::Process, KEY, SECRET, TOKEN, EXP, &region).unwrap();
        assert!(!out.contains("eu-west-1"));
    }

    #[test]
    fn values_that_are_not_plain_are_quoted_or_refused() {
        let v = "a'b $x \"c\" `d` \\";
        let one =
            |f| render(f, v, SECRET, TOKEN, EXP, &[]).map(|s| s.lines().next().unwrap().to_owned());
        assert_eq!(
            one(ExportFormat::Env).unwrap(),
            "export AWS_ACCESS_KEY_ID='a'\\''b $x \"c\" `d` \\'"
        );
        assert_eq!(
            one(ExportFormat::Fish).unwrap(),
            "set -gx AWS_ACCESS_KEY_ID \"a'b \\$x \\\"c\\\" `d` \\\\\""
        );
        assert_eq!(
            one(ExportFormat::Powershell).unwrap(),
            "$Env:AWS_ACCESS_KEY_ID=\"a'b `$x `\"c`\" ``d`` \\\""
        );
        let e = one(ExportFormat::WindowsCmd).unwrap_err();
        assert!(e.message.contains("--format powershell"), "{}", e.message);
        assert!(render(ExportFormat::Env, "a\0", SECRET, TOKEN, EXP, &[]).is_err());
        assert!(render(ExportFormat::Powershell, "a\nb", SECRET, TOKEN, EXP, &[]).is_err());
        assert!(render(ExportFormat::WindowsCmd, "a%PATH%", SECRET, TOKEN, EXP, &[]).is_err());
        // A leading ~ would expand in sh.
        assert_eq!(
            render(ExportFormat::EnvNoExport, "~x", SECRET, TOKEN, EXP, &[])
                .unwrap()
                .lines()
                .next(),
            Some("AWS_ACCESS_KEY_ID='~x'")
        );
    }

    #[test]
    fn json_strings_are_pythons() {
        assert_eq!(
            py_json_string("a\"b\\c\n\u{1}é😀"),
            "\"a\\\"b\\\\c\\n\\u0001\\u00e9\\ud83d\\ude00\""
        );
    }
}
