//! The region `exec`, `env` and `export` hand on, and the hint `use` gives.
//!
//! The agent reports the role's region as `~/.aws/config` says it (the role profile's `region`,
//! else the nearest profile's on its chain). What the caller set wins over it, as it does in
//! every AWS SDK, and nothing the caller set is ever changed:
//!
//! 1. `--region R` sets both `AWS_REGION` and `AWS_DEFAULT_REGION` to R: the caller asked for
//!    it on this very command line.
//! 2. Otherwise the region is the caller's `AWS_REGION`, else the caller's `AWS_DEFAULT_REGION`,
//!    else the role's. Of the two variables, only one that is unset (or empty) in credctl's
//!    environment is set (`exec`: in the command's environment) or printed (`env`, `export`):
//!    one the caller set is never overwritten. When the caller set only one of them, the other
//!    gets the same value, so SDKs that read `AWS_REGION` (Go, Rust, JavaScript) and those that
//!    read `AWS_DEFAULT_REGION` (the AWS CLI v1, botocore) agree with the caller, not with the
//!    profile.
//!
//! A region is printed into shell, PowerShell and cmd syntax, so only names made of ASCII
//! letters, digits, `-` and `_` are handed on (every AWS region, and the `local` and the like of
//! emulators). A profile's region that is not such a name is left out with a warning.

/// The variables SDKs read a region from; `AWS_REGION` first, as SDKs read them.
pub const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Whether `r` is a region name credctl hands on.
pub fn valid(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `--region`'s value parser: a usage error before anything happens.
pub fn parse_flag(r: &str) -> Result<String, String> {
    if valid(r) {
        Ok(r.to_owned())
    } else {
        Err("a region is ASCII letters, digits, - and _ (e.g. eu-west-1)".into())
    }
}

/// What to set, and a warning for the person when the role's region had to be left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (variable, region), in [`REGION_VARS`] order.
    pub set: Vec<(&'static str, String)>,
    pub warning: Option<String>,
}

/// The value of `var` in the caller's environment, if set and not empty.
fn caller(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    env(var).filter(|v| !v.is_empty())
}

/// What a command for `role` sets, given `--region`, the role's region from the agent and the
/// caller's environment (see the module's rules).
pub fn plan(
    flag: Option<&str>,
    role: &str,
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Plan {
    if let Some(r) = flag {
        return Plan {
            set: REGION_VARS.iter().map(|v| (*v, r.to_owned())).collect(),
            warning: None,
        };
    }
    let mut warning = None;
    let from_caller = REGION_VARS
        .iter()
        .find_map(|v| caller(env, v))
        .filter(|r| valid(r));
    let region = from_caller.or_else(|| match profile {
        Some(r) if valid(r) => Some(r.to_owned()),
        Some(r) => {
            warning = Some(format!(
                "warning: role {role}'s region \"{}\" in the AWS config file is not a region name \
                 (ASCII letters, digits, - and _), so no region is set: fix `region` in its \
                 profile, or pass --region",
                crate::text::printable(r)
            ));
            None
        }
        None => None,
    });
    let set = match region {
        Some(r) => REGION_VARS
            .iter()
            .filter(|v| caller(env, v).is_none())
            .map(|v| (*v, r.clone()))
            .collect(),
        None => Vec::new(),
    };
    Plan { set, warning }
}

/// For `credctl use`: when this shell has neither variable and the role has a region, the line
/// that sets both, in the syntax of the user's `$SHELL`.
pub fn use_hint(
    role: &str,
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if REGION_VARS.iter().any(|v| caller(env, v).is_some()) {
        return None;
    }
    let r = profile.filter(|r| valid(r))?;
    let shell = env("SHELL").unwrap_or_default();
    let line = match shell.rsplit('/').next().unwrap_or("") {
        "fish" => format!("set -gx AWS_REGION {r}; set -gx AWS_DEFAULT_REGION {r}"),
        "csh" | "tcsh" => format!("setenv AWS_REGION {r}; setenv AWS_DEFAULT_REGION {r}"),
        _ => format!("export AWS_REGION={r} AWS_DEFAULT_REGION={r}"),
    };
    Some(format!(
        "this shell has no region (AWS_REGION and AWS_DEFAULT_REGION are unset), and role \
         {role} uses {r} (from its profile or the nearest one on its chain); SDKs started here \
         will ask for one: run `{line}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn set(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn the_profile_fills_an_empty_environment() {
        let p = plan(None, "dev", Some("us-east-1"), &env(&[]));
        assert_eq!(
            p.set,
            set(&[
                ("AWS_REGION", "us-east-1"),
                ("AWS_DEFAULT_REGION", "us-east-1")
            ])
        );
        assert_eq!(p.warning, None);
        assert_eq!(plan(None, "dev", None, &env(&[])), Plan::default());
    }

    #[test]
    fn what_the_caller_set_is_never_overwritten() {
        let both = env(&[
            ("AWS_REGION", "ap-south-1"),
            ("AWS_DEFAULT_REGION", "x-y-1"),
        ]);
        assert!(plan(None, "dev", Some("us-east-1"), &both).set.is_empty());
        // One set: the other follows the caller, not the profile.
        let p = plan(
            None,
            "dev",
            Some("us-east-1"),
            &env(&[("AWS_DEFAULT_REGION", "eu-west-1")]),
        );
        assert_eq!(p.set, set(&[("AWS_REGION", "eu-west-1")]));
        let p = plan(
            None,
            "dev",
            Some("us-east-1"),
            &env(&[("AWS_REGION", "eu-west-2")]),
        );
        assert_eq!(p.set, set(&[("AWS_DEFAULT_REGION", "eu-west-2")]));
        // Empty counts as unset.
        let p = plan(None, "dev", Some("us-east-1"), &env(&[("AWS_REGION", "")]));
        assert_eq!(p.set.len(), 2);
        assert_eq!(p.set[0], ("AWS_REGION", "us-east-1".into()));
    }

    #[test]
    fn the_flag_sets_both() {
        let p = plan(
            Some("eu-north-1"),
            "dev",
            Some("us-east-1"),
            &env(&[("AWS_REGION", "ap-south-1")]),
        );
        assert_eq!(
            p.set,
            set(&[
                ("AWS_REGION", "eu-north-1"),
                ("AWS_DEFAULT_REGION", "eu-north-1")
            ])
        );
    }

    #[test]
    fn a_region_that_is_no_name_is_left_out_with_a_warning() {
        let p = plan(None, "dev", Some("us-east-1; rm -rf ~"), &env(&[]));
        assert!(p.set.is_empty());
        let w = p.warning.unwrap();
        assert!(w.contains("fix `region`") && w.contains("--region"), "{w}");
        assert!(parse_flag("eu-west-1").is_ok());
        for bad in ["", "eu west", "a'b", "a\nb", &"x".repeat(65)] {
            assert!(parse_flag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn use_hints_only_when_the_shell_has_no_region() {
        let hint = use_hint("dev", Some("us-east-1"), &env(&[("SHELL", "/bin/bash")])).unwrap();
        assert!(
            hint.contains("`export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1`"),
            "{hint}"
        );
        let fish = use_hint(
            "dev",
            Some("us-east-1"),
            &env(&[("SHELL", "/usr/bin/fish")]),
        );
        assert!(fish.unwrap().contains("set -gx AWS_REGION us-east-1;"));
        let csh = use_hint("dev", Some("us-east-1"), &env(&[("SHELL", "/bin/tcsh")]));
        assert!(csh.unwrap().contains("setenv AWS_REGION us-east-1;"));
        assert_eq!(
            use_hint(
                "dev",
                Some("us-east-1"),
                &env(&[("AWS_DEFAULT_REGION", "eu-west-1")])
            ),
            None
        );
        assert_eq!(use_hint("dev", None, &env(&[])), None);
    }
}
