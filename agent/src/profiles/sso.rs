//! IAM Identity Center profiles: `[sso-session NAME]` blocks and profiles with `sso_session`,
//! `sso_account_id` and `sso_role_name` (or the legacy form with `sso_start_url` and
//! `sso_region` in the profile), as the AWS CLI writes and checks them.

use aws_runtime::env_config::section::Profile;

use super::{ProfileError, Profiles};

/// An IAM Identity Center source: the login (an `[sso-session]`, or the legacy form with the
/// start URL in the profile) and the account and permission set whose credentials
/// GetRoleCredentials hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoSource {
    /// The `[sso-session NAME]`; `None` for the legacy form.
    pub session: Option<String>,
    pub start_url: String,
    /// The Identity Center region (`sso_region`), for its endpoints.
    pub sso_region: String,
    /// `sso_registration_scopes` (sso-session form only; default `sso:account:access`).
    pub scopes: Vec<String>,
    pub account_id: String,
    pub role_name: String,
}

impl SsoSource {
    /// The login this source uses: one login serves every profile with the same key (the
    /// session name, or the start URL for the legacy form).
    pub fn login_key(&self) -> String {
        match &self.session {
            Some(name) => name.clone(),
            None => format!("legacy {}", self.start_url),
        }
    }

    /// The role GetRoleCredentials names, in words.
    pub fn describe(&self) -> String {
        format!(
            "IAM Identity Center {} account {} permission set {}",
            self.start_url, self.account_id, self.role_name
        )
    }
}

/// Default `sso_registration_scopes`, as the AWS CLI registers.
pub const DEFAULT_SSO_SCOPES: &str = "sso:account:access";

impl Profiles {
    /// The IAM Identity Center source of profile `name`: from its `sso_session` block, or the
    /// legacy keys in the profile itself. Checked the way the AWS CLI checks it.
    pub(super) fn sso_source(
        &self,
        name: &str,
        profile: &Profile,
    ) -> Result<SsoSource, ProfileError> {
        let need = |key: &'static str| {
            profile
                .get(key)
                .map(str::to_owned)
                .ok_or(ProfileError::SsoIncomplete {
                    profile: name.to_owned(),
                    missing: key,
                })
        };
        let account_id = need("sso_account_id")?;
        let role_name = need("sso_role_name")?;
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProfileError::BadValue {
                profile: name.to_owned(),
                key: "sso_account_id",
                value: account_id,
                expected: "a 12-digit AWS account id",
            });
        }
        let Some(session_name) = profile.get("sso_session") else {
            return Ok(SsoSource {
                session: None,
                start_url: need("sso_start_url")?,
                sso_region: need("sso_region")?,
                scopes: Vec::new(),
                account_id,
                role_name,
            });
        };
        let session = self.sections.sso_session(session_name).ok_or_else(|| {
            ProfileError::SsoSessionNotFound {
                profile: name.to_owned(),
                session: session_name.to_owned(),
                path: self.path.clone(),
            }
        })?;
        let from_session = |key: &'static str| {
            let value = session.get(key).ok_or(ProfileError::SsoIncomplete {
                profile: format!("{name} (sso-session {session_name})"),
                missing: key,
            })?;
            // A profile may repeat a session key only with the same value.
            if let Some(mine) = profile.get(key).filter(|v| *v != value) {
                return Err(ProfileError::SsoMismatch {
                    profile: name.to_owned(),
                    session: session_name.to_owned(),
                    key,
                    profile_value: mine.to_owned(),
                    session_value: value.to_owned(),
                });
            }
            Ok(value.to_owned())
        };
        let scopes = session
            .get("sso_registration_scopes")
            .unwrap_or(DEFAULT_SSO_SCOPES)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(SsoSource {
            session: Some(session_name.to_owned()),
            start_url: from_session("sso_start_url")?,
            sso_region: from_session("sso_region")?,
            scopes,
            account_id,
            role_name,
        })
    }
}

/// Whether a profile gets its credentials from IAM Identity Center.
pub(super) fn is_sso_profile(profile: &Profile) -> bool {
    profile.get("sso_account_id").is_some()
        || profile.get("sso_role_name").is_some()
        || profile.get("sso_session").is_some()
        || profile.get("sso_start_url").is_some()
}

/// An Identity Center profile's account and permission set, as `roles` shows them (its role
/// ARN has a generated path and suffix only AWS knows, so none is made up).
pub(super) fn sso_role(profile: &Profile) -> (String, String) {
    (
        profile.get("sso_account_id").unwrap_or("?").to_owned(),
        profile.get("sso_role_name").unwrap_or("?").to_owned(),
    )
}

impl Profiles {
    /// The IAM Identity Center login `name` names: an `[sso-session NAME]`, else the login of
    /// profile `name`. Only the login fields are set (the account and role are empty).
    pub fn sso_login(&self, name: &str) -> Result<SsoSource, ProfileError> {
        if let Some(session) = self.sections.sso_session(name) {
            let need = |key: &'static str| {
                session
                    .get(key)
                    .map(str::to_owned)
                    .ok_or(ProfileError::SsoIncomplete {
                        profile: format!("sso-session {name}"),
                        missing: key,
                    })
            };
            return Ok(SsoSource {
                session: Some(name.to_owned()),
                start_url: need("sso_start_url")?,
                sso_region: need("sso_region")?,
                scopes: session
                    .get("sso_registration_scopes")
                    .unwrap_or(DEFAULT_SSO_SCOPES)
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
                account_id: String::new(),
                role_name: String::new(),
            });
        }
        // A profile: its own login, or that of the SSO profile its chain starts from.
        match self.sections.get_profile(name) {
            Some(profile) if is_sso_profile(profile) => self.sso_source(name, profile),
            Some(_) => match self.resolve(name) {
                Ok(spec) => spec.sso.ok_or_else(|| ProfileError::NoSsoLogin {
                    name: name.to_owned(),
                    path: self.path.clone(),
                }),
                Err(e) => Err(e),
            },
            None => Err(ProfileError::NoSsoLogin {
                name: name.to_owned(),
                path: self.path.clone(),
            }),
        }
    }

    /// Every IAM Identity Center source of the config (one per SSO profile), for background
    /// refresh and `roles`.
    pub fn sso_sources(&self) -> Vec<SsoSource> {
        self.sections
            .profiles()
            .filter_map(|name| {
                let profile = self.sections.get_profile(name)?;
                is_sso_profile(profile)
                    .then(|| self.sso_source(name, profile).ok())
                    .flatten()
            })
            .collect()
    }
}
