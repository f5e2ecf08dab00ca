//! Tests of profile parsing and chain resolution.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::*;
use secrecy::ExposeSecret;

const CONFIG: &str = "\
# top comment
[default]
region = eu-west-1

[profile base]
mfa_serial = arn:aws:iam::111111111111:mfa/alice

[profile dev]
role_arn = arn:aws:iam::111111111111:role/dev
source_profile = base
external_id = ext-dev
role_session_name = alice-dev

[profile prod]
role_arn = arn:aws:iam::222222222222:role/prod
source_profile = dev
duration_seconds = 1800
region = us-west-2

[profile loopa]
role_arn = arn:aws:iam::1:role/a
source_profile = loopb

[profile loopb]
role_arn = arn:aws:iam::1:role/b
source_profile = loopa

[profile dangling]
role_arn = arn:aws:iam::1:role/d
source_profile = nowhere

[profile selfsrc]
role_arn = arn:aws:iam::1:role/self
source_profile = selfsrc

[profile ec2]
role_arn = arn:aws:iam::1:role/ec2
credential_source = Ec2InstanceMetadata
";

fn profiles() -> Profiles {
    Profiles::from_contents(Path::new("/x/config"), CONFIG.into()).unwrap()
}

#[test]
fn resolves_two_hop_chain() {
    let spec = profiles().resolve("prod").unwrap();
    assert_eq!(spec.source, "base");
    assert_eq!(spec.role_arn, "arn:aws:iam::222222222222:role/prod");
    assert_eq!(spec.chain.len(), 2);
    assert_eq!(spec.chain[0].profile, "dev");
    assert_eq!(spec.chain[0].external_id.as_deref(), Some("ext-dev"));
    assert_eq!(
        spec.chain[0].role_session_name.as_deref(),
        Some("alice-dev")
    );
    assert_eq!(spec.chain[1].duration_seconds, Some(1800));
    assert_eq!(
        spec.mfa_serial.as_deref(),
        Some("arn:aws:iam::111111111111:mfa/alice")
    );
    assert_eq!(spec.region.as_deref(), Some("us-west-2"));
}

#[test]
fn cycle_names_the_chain() {
    let err = profiles().resolve("loopa").unwrap_err().to_string();
    assert!(
        err.contains("profile loopa → loopb → loopa: source_profile cycle"),
        "{err}"
    );
}

#[test]
fn missing_profiles() {
    // A source without a section is a keyring-only source, not an error.
    let spec = profiles().resolve("dangling").unwrap();
    assert_eq!(spec.source, "nowhere");
    assert!(!spec.source_in_config);
    assert!(profiles().resolve("prod").unwrap().source_in_config);
    let err = profiles().resolve("absent").unwrap_err().to_string();
    assert!(
        err.contains("profile absent: profile `absent` not found in /x/config"),
        "{err}"
    );
}

#[test]
fn self_source_and_non_roles() {
    let spec = profiles().resolve("selfsrc").unwrap();
    assert_eq!(spec.source, "selfsrc");
    assert_eq!(spec.chain.len(), 1);
    assert!(matches!(
        profiles().resolve("base"),
        Err(ProfileError::NotARole { .. })
    ));
    assert!(matches!(
        profiles().resolve("ec2"),
        Err(ProfileError::NoSource { .. })
    ));
}

#[test]
fn bad_duration_is_an_error() {
    let cfg = "[profile r]\nrole_arn = a\nsource_profile = s\nduration_seconds = 60\n[s]\n";
    let p = Profiles::from_contents(Path::new("c"), cfg.into()).unwrap();
    assert!(matches!(p.resolve("r"), Err(ProfileError::BadValue { .. })));
}

#[test]
fn roles_lists_every_role_profile() {
    let roles = profiles().roles();
    let names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["dangling", "dev", "ec2", "loopa", "loopb", "prod", "selfsrc"]
    );
    let prod = roles.iter().find(|r| r.name == "prod").unwrap();
    assert_eq!(prod.source.as_deref(), Some("base"));
    assert!(roles
        .iter()
        .find(|r| r.name == "loopa")
        .unwrap()
        .error
        .is_some());
}

#[test]
fn load_honours_aws_config_file_and_explicit_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg");
    std::fs::write(&path, CONFIG).unwrap();
    let p = path.to_str().unwrap();
    let env = env_from_pairs(&[("AWS_CONFIG_FILE", p), ("HOME", "/nonexistent")]);
    let loaded = Profiles::load_with_env(None, &env).unwrap();
    assert_eq!(loaded.path(), path);
    assert!(loaded.resolve("prod").is_ok());

    let env = env_from_pairs(&[("HOME", dir.path().to_str().unwrap())]);
    let empty = Profiles::load_with_env(None, &env).unwrap();
    assert!(empty.roles().is_empty());
    assert!(Profiles::load_with_env(Some(&dir.path().join("nope")), &env).is_err());
    assert!(Profiles::load_with_env(Some(&path), &env).is_ok());
}

#[test]
fn finds_keys_in_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    std::fs::write(
        &path,
        "[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = s3cret\n[other]\nregion=x\n",
    )
    .unwrap();
    let env = env_from_pairs(&[("AWS_SHARED_CREDENTIALS_FILE", path.to_str().unwrap())]);
    let found = source_keys_in_credentials_file("base", &env)
        .unwrap()
        .unwrap();
    assert_eq!(found.credentials.access_key_id, "AKIDBASE");
    assert_eq!(
        found.credentials.secret_access_key.expose_secret(),
        "s3cret"
    );
    assert!(!format!("{found:?}").contains("s3cret"));
    assert!(source_keys_in_credentials_file("other", &env)
        .unwrap()
        .is_none());
    assert!(source_keys_in_credentials_file("none", &env)
        .unwrap()
        .is_none());
}

#[test]
fn profile_names_the_parser_drops_are_listed_as_broken() {
    let p = Profiles::from_contents(
        Path::new("/c"),
        "[profile ok]\nrole_arn = arn:aws:iam::1:role/ok\nsource_profile = b\n\
         [profile my role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = b\n\
         [profile rôle]\nrole_arn = arn:aws:iam::1:role/y\nsource_profile = b\n"
            .into(),
    )
    .unwrap();
    let roles = p.roles();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"ok"), "{names:?}");
    for dropped in ["my role", "rôle"] {
        if let Some(r) = roles.iter().find(|r| r.name == dropped) {
            assert!(r.error.as_deref().unwrap_or("").contains("rename"), "{r:?}");
        } else {
            // The parser accepted it after all: then it must resolve like any other.
            assert!(
                p.resolve(dropped).is_ok(),
                "{dropped} neither listed nor resolvable"
            );
        }
    }
}

const SSO_CONFIG: &str = "\
[sso-session corp]
sso_start_url = https://corp.awsapps.com/start
sso_region = eu-central-1
sso_registration_scopes = sso:account:access, extra:scope

[profile dev-admin]
sso_session = corp
sso_account_id = 111122223333
sso_role_name = AdministratorAccess
region = eu-west-1

[profile deploy]
role_arn = arn:aws:iam::444455556666:role/deploy
source_profile = dev-admin

[profile legacy]
sso_start_url = https://old.awsapps.com/start
sso_region = us-east-1
sso_account_id = 777788889999
sso_role_name = ReadOnly

[profile no-role-name]
sso_session = corp
sso_account_id = 111122223333

[profile lost-session]
sso_session = nowhere
sso_account_id = 111122223333
sso_role_name = Admin

[profile mismatch]
sso_session = corp
sso_start_url = https://other.awsapps.com/start
sso_account_id = 111122223333
sso_role_name = Admin

[profile bad-account]
sso_session = corp
sso_account_id = 1234
sso_role_name = Admin
";

fn sso_profiles() -> Profiles {
    Profiles::from_contents(Path::new("/x/config"), SSO_CONFIG.into()).unwrap()
}

#[test]
fn an_sso_session_profile_is_a_role_of_its_own() {
    let spec = sso_profiles().resolve("dev-admin").unwrap();
    assert_eq!(spec.source, "dev-admin");
    assert!(spec.chain.is_empty());
    assert_eq!(spec.region.as_deref(), Some("eu-west-1"));
    let sso = spec.sso.unwrap();
    assert_eq!(sso.session.as_deref(), Some("corp"));
    assert_eq!(sso.login_key(), "corp");
    assert_eq!(sso.start_url, "https://corp.awsapps.com/start");
    assert_eq!(sso.sso_region, "eu-central-1");
    assert_eq!(sso.scopes, vec!["sso:account:access", "extra:scope"]);
    assert_eq!(
        (sso.account_id.as_str(), sso.role_name.as_str()),
        ("111122223333", "AdministratorAccess")
    );
}

#[test]
fn a_chain_can_start_from_an_sso_profile() {
    let spec = sso_profiles().resolve("deploy").unwrap();
    assert_eq!(spec.source, "dev-admin");
    assert_eq!(spec.chain.len(), 1);
    assert_eq!(spec.role_arn, "arn:aws:iam::444455556666:role/deploy");
    assert_eq!(
        spec.region.as_deref(),
        Some("eu-west-1"),
        "region from down the chain"
    );
    assert!(spec
        .target()
        .contains("IAM Identity Center https://corp.awsapps.com/start"));
    assert!(spec.target().contains("AdministratorAccess"));
}

#[test]
fn the_legacy_form_keeps_the_start_url_in_the_profile() {
    let spec = sso_profiles().resolve("legacy").unwrap();
    let sso = spec.sso.unwrap();
    assert_eq!(sso.session, None);
    assert_eq!(sso.login_key(), "legacy https://old.awsapps.com/start");
    assert_eq!(sso.sso_region, "us-east-1");
    assert!(sso.scopes.is_empty(), "the legacy form registers no scopes");
}

#[test]
fn broken_sso_profiles_say_what_to_fix() {
    let p = sso_profiles();
    let err = p.resolve("no-role-name").unwrap_err().to_string();
    assert!(err.contains("sso_role_name"), "{err}");
    let err = p.resolve("lost-session").unwrap_err().to_string();
    assert!(err.contains("[sso-session nowhere]"), "{err}");
    let err = p.resolve("mismatch").unwrap_err().to_string();
    assert!(err.contains("disagree on sso_start_url"), "{err}");
    let err = p.resolve("bad-account").unwrap_err().to_string();
    assert!(err.contains("12-digit"), "{err}");
    // `roles` lists them all, each usable one with its source and the broken ones with why.
    let roles = p.roles();
    let dev = roles.iter().find(|r| r.name == "dev-admin").unwrap();
    // Its role ARN only AWS knows: none is made up, the account and permission set are given.
    assert_eq!(dev.role_arn, "");
    assert_eq!(
        dev.sso_role,
        Some(("111122223333".to_owned(), "AdministratorAccess".to_owned()))
    );
    assert_eq!(dev.source.as_deref(), Some("dev-admin"));
    let broken = roles.iter().find(|r| r.name == "no-role-name").unwrap();
    assert!(broken.error.is_some());
}

#[test]
fn the_config_file_is_parsed_again_only_when_it_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config");
    std::fs::write(&path, "[profile a]\nrole_arn = arn:aws:iam::1:role/a\n").unwrap();
    let env = |k: &str| (k == "AWS_CONFIG_FILE").then(|| path.display().to_string());
    let file = AwsConfigFile::from_env(&env);
    let first = file
        .load_if_changed()
        .unwrap()
        .expect("parsed the first time");
    assert!(first.roles().iter().any(|r| r.name == "a"));
    assert!(
        file.load_if_changed().unwrap().is_none(),
        "unchanged: not parsed"
    );
    // Written in place (size and times change).
    std::fs::write(&path, "[profile b]\nrole_arn = arn:aws:iam::1:role/b\n").unwrap();
    let second = file.load_if_changed().unwrap().expect("changed in place");
    assert!(second.roles().iter().any(|r| r.name == "b"));
    // Replaced by a rename, as editors do: another inode.
    let next = tmp.path().join("config.new");
    std::fs::write(&next, "[profile c]\nrole_arn = arn:aws:iam::1:role/c\n").unwrap();
    std::fs::rename(&next, &path).unwrap();
    let third = file.load_if_changed().unwrap().expect("replaced");
    assert!(third.roles().iter().any(|r| r.name == "c"));
    assert!(file.load_if_changed().unwrap().is_none());
    // Gone: an error every time, never the old profiles.
    std::fs::remove_file(&path).unwrap();
    assert!(file.load_if_changed().is_err());
    assert!(file.load_if_changed().is_err());
}

#[test]
fn an_aws_login_source_is_named_as_one_not_sent_to_the_keyring() {
    let cfg = "[profile signin]\nlogin_session = arn:aws:iam::123456789012:user/Admin\nregion = us-east-1\n\
               [profile admin]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = signin\n";
    let p = Profiles::from_contents(Path::new("c"), cfg.into()).unwrap();
    let err = p.resolve("admin").unwrap_err();
    assert!(matches!(err, ProfileError::LoginSession { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("aws login") && text.contains("arn:aws:iam::123456789012:user/Admin"),
        "{text}"
    );
    assert!(text.contains("credctl source add signin"), "{text}");
    assert!(matches!(
        p.resolve("signin"),
        Err(ProfileError::LoginSession { .. })
    ));
}
