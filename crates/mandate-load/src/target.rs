//! The one server a run may talk to: a base URL on loopback, checked before any request is sent.

use anyhow::{Result, bail};
use reqwest::Url;

/// Parses `--url` and refuses anything that is not `http(s)://` on `127.0.0.1`, `localhost` or
/// `[::1]`, with no path beyond `/`, no query, fragment or credentials. Returns the base URL
/// without a trailing slash.
pub fn loopback_base(raw: &str) -> Result<String> {
    let url = match Url::parse(raw.trim()) {
        Ok(u) => u,
        Err(e) => bail!("`--url {raw}` is not a URL: {e}"),
    };
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "`--url` must be http:// or https://, not `{}`",
            url.scheme()
        );
    }
    // The parser normalises hosts (lower case, canonical IPv4 and IPv6 forms), so a plain
    // comparison is exact.
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if !loopback {
        bail!(
            "`--url {raw}`: mandate-load only talks to a server on loopback (127.0.0.1, localhost or [::1])"
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("`--url` must not carry credentials");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("`--url` must be the server's base URL, with no path, query or fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted() {
        assert_eq!(
            loopback_base("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            loopback_base("http://localhost:9").unwrap(),
            "http://localhost:9"
        );
        assert_eq!(
            loopback_base("https://[::1]:8443").unwrap(),
            "https://[::1]:8443"
        );
    }

    #[test]
    fn other_hosts_are_refused() {
        for bad in [
            "http://example.com",
            "http://10.0.0.1:8080",
            "http://127.0.0.2:8080",
            "http://0.0.0.0:8080",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://[::2]:80",
            "http://[::ffff:127.0.0.1]:80",
        ] {
            let err = loopback_base(bad).unwrap_err().to_string();
            assert!(err.contains("loopback"), "{bad}: {err}");
        }
    }

    #[test]
    fn odd_urls_are_refused() {
        assert!(loopback_base("ftp://127.0.0.1").is_err());
        assert!(loopback_base("http://u:p@127.0.0.1").is_err());
        assert!(loopback_base("http://127.0.0.1/oauth2/token").is_err());
        assert!(loopback_base("http://127.0.0.1/?x=1").is_err());
        assert!(loopback_base("127.0.0.1:8080").is_err());
    }
}
