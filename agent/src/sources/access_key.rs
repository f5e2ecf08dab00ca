//! The access-key source: an IAM user's long-lived key pair, and the atomic rewrite of
//! `~/.aws/credentials` after an import moved a profile's keys into the keyring.

use std::fmt;
use std::path::Path;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::SourceError;

/// The long-lived keys of one source profile.
#[derive(Clone)]
pub struct SourceCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for SourceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// Rewrites a shared credentials file without the `[profile]` section(s), keeping every other
/// byte. Comment and blank lines right before the next section stay (they usually describe
/// it). Atomic: temp file in the same directory, fsync, rename, fsync of the directory; the
/// file keeps its mode. Returns whether a section was removed.
pub fn rewrite_credentials_file_without(path: &Path, profile: &str) -> Result<bool, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Follow a symlink so the link itself survives the rename.
    let target = std::fs::canonicalize(path).map_err(io)?;
    let original = Zeroizing::new(std::fs::read(&target).map_err(io)?);
    let Some(rewritten) = without_section(&original, profile) else {
        return Ok(false);
    };
    let rewritten = Zeroizing::new(rewritten);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&target).map_err(io)?.permissions().mode() & 0o7777
    };
    crate::util::write_atomic(&target, &rewritten, mode).map_err(io)?;
    Ok(true)
}

/// The section header name on this line, if it is one (`[name]`, spaces allowed inside).
fn section_name(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let inner = text.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim())
}

fn is_comment_or_blank(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let t = text.trim();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

/// Keys of a credentials-file profile that `--remove-from-file` takes out.
const KEY_LINES: [&str; 3] = [
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

/// Whether `line` sets one of [`KEY_LINES`].
fn is_key_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let key = text.split('=').next().unwrap_or("").trim();
    KEY_LINES.iter().any(|k| key.eq_ignore_ascii_case(k))
}

/// `content` without the keys of every `[profile]` section (a section left with nothing but
/// comments and blank lines goes whole; one with other settings, such as `region`, keeps them),
/// or `None` if no key was there.
fn without_section(content: &[u8], profile: &str) -> Option<Vec<u8>> {
    // Lines with their terminators, so joining them gives back the exact bytes.
    let lines: Vec<&[u8]> = content.split_inclusive(|&b| b == b'\n').collect();
    let mut keep = vec![true; lines.len()];
    let mut removed = false;
    let mut i = 0;
    while i < lines.len() {
        if section_name(lines[i]) != Some(profile) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < lines.len() && section_name(lines[end]).is_none() {
            end += 1;
        }
        let body = i + 1..end;
        if !lines[body.clone()].iter().any(|l| is_key_line(l)) {
            i = end;
            continue;
        }
        removed = true;
        let other_settings = lines[body.clone()]
            .iter()
            .any(|l| !is_key_line(l) && !is_comment_or_blank(l));
        if other_settings {
            for j in body {
                if is_key_line(lines[j]) {
                    keep[j] = false;
                }
            }
            i = end;
            continue;
        }
        // Leave the comments/blank lines that lead into the next section.
        let mut cut = end;
        if end < lines.len() {
            while cut > i + 1 && is_comment_or_blank(lines[cut - 1]) {
                cut -= 1;
            }
        }
        keep[i..cut].iter_mut().for_each(|k| *k = false);
        i = end;
    }
    removed.then(|| {
        lines
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .flat_map(|(l, _)| l.iter().copied())
            .collect()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret() {
        let c = SourceCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: SecretString::from("hunter2"),
        };
        let s = format!("{c:?}");
        assert!(s.contains("AKID") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn removes_only_the_keys() {
        let input = "# my creds\n[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n# work account\n[work]\naws_access_key_id = W\r\n; trailing\n[default]\nx=1\n[last]\nk = v";
        // The first [default] held only keys: it goes whole. The second holds no key: it stays.
        let out = without_section(input.as_bytes(), "default").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# my creds\n\n# work account\n[work]\naws_access_key_id = W\r\n; trailing\n[default]\nx=1\n[last]\nk = v"
        );
        assert!(without_section(input.as_bytes(), "absent").is_none());
        assert!(
            without_section(input.as_bytes(), "last").is_none(),
            "no key in it: nothing to remove"
        );
        // Keys beside other settings: only the keys go, the region and the rest stay.
        let input = "[ci]\nregion = eu-west-1\nAWS_ACCESS_KEY_ID = A\naws_secret_access_key=S\noutput = json\n[x]\nk=1\n";
        let out = without_section(input.as_bytes(), "ci").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[ci]\nregion = eu-west-1\noutput = json\n[x]\nk=1\n"
        );
    }

    #[test]
    fn rewrite_is_atomic_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "[a]\naws_access_key_id=1\n\n[b]\nk=2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(rewrite_credentials_file_without(&link, "a").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "\n[b]\nk=2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!rewrite_credentials_file_without(&path, "a").unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "temp file left behind");
    }
}
