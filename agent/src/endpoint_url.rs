//! Which URLs may receive secrets: the one rule every endpoint override follows (STS, the two
//! Identity Center services, the console's federation endpoint).

/// Why a URL may not receive the user's signed requests, codes or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeEndpoint {
    #[error("it must be an https:// URL (or http:// on a loopback address)")]
    NotHttp,
    #[error("a URL holds no spaces or control characters")]
    BadCharacter,
    #[error("plain http to {host} would send signed requests and MFA codes in clear: use https")]
    PlainHttp { host: String },
}

/// An endpoint override in config.toml that may not be used, named as the person wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {url}: {why}")]
pub struct EndpointError {
    /// What the endpoint is for, and where it was set (`STS endpoint`, …).
    pub what: String,
    pub url: String,
    pub why: UnsafeEndpoint,
}

/// Whether `url` may receive the user's source keys and MFA codes: https anywhere, plain http
/// only on this machine (a local STS for tests).
pub fn check_endpoint(url: &str) -> Result<(), UnsafeEndpoint> {
    // Shown to the person before the touch that confirms it: nothing in it may steer a
    // terminal (or hide the lines after it).
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UnsafeEndpoint::BadCharacter);
    }
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(UnsafeEndpoint::NotHttp);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(UnsafeEndpoint::PlainHttp {
            host: host.to_owned(),
        })
    }
}

/// `url`, checked, as the endpoint `what` (none: not set).
pub fn checked(what: &str, url: Option<&str>) -> Result<Option<String>, EndpointError> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    check_endpoint(url).map_err(|why| EndpointError {
        what: what.to_owned(),
        url: url.to_owned(),
        why,
    })?;
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback() {
        for ok in [
            "https://sts.example.com",
            "http://127.0.0.1:5000",
            "http://127.1.2.3",
            "http://[::1]:80/x",
            "http://LOCALHOST:1",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://example.com",
            "http://127.0.0.1.evil.com",
            "http://localhost.evil.com",
            "ftp://127.0.0.1",
            "127.0.0.1:5000",
            "https://signin.aws.amazon.com/federation\r\u{1b}[2K",
            "https://sts.example.com/\u{1b}[8m",
            "https://sts.example.com /x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
