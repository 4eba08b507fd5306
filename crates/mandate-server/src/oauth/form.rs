//! Reading `application/x-www-form-urlencoded` bodies the way RFC 6749 asks: size-limited,
//! UTF-8, and no parameter twice (except those the RFCs let repeat: `resource`, `audience`).

use axum::body::Body;
use axum::http::{HeaderMap, header};

use crate::error::OAuthError;

/// Parameters that may appear more than once (RFC 8707 `resource`, RFC 8693 `audience`).
const REPEATABLE: &[&str] = &["resource", "audience"];
/// Most parameters accepted.
const MAX_PARAMS: usize = 64;

/// Parsed form parameters.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// The single value of `name`, treating an empty value as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Reads and parses the body. Errors are OAuth errors ready to send.
pub async fn read_form(headers: &HeaderMap, body: Body, limit: usize) -> Result<Form, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = ct.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "request body must be `application/x-www-form-urlencoded`",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| OAuthError::too_large(limit))?;
    parse(&bytes)
}

/// Parses a form body.
pub fn parse(bytes: &[u8]) -> Result<Form, OAuthError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(OAuthError::invalid_request("request body is not UTF-8"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if pairs.len() >= MAX_PARAMS {
            return Err(OAuthError::invalid_request(format!(
                "request has more than {MAX_PARAMS} parameters"
            )));
        }
        if !REPEATABLE.contains(&k.as_ref()) && pairs.iter().any(|(pk, _)| *pk == k) {
            let name: String = k.chars().take(40).collect();
            return Err(OAuthError::invalid_request(format!(
                "parameter `{name}` appears more than once"
            )));
        }
        // No identifier or text of the protocol holds a NUL character, and PostgreSQL text
        // cannot store one. A `token` to introspect or revoke is answered as usual (inactive).
        if k.contains('\0') || (k != "token" && v.contains('\0')) {
            let name: String = k.chars().filter(|c| *c != '\0').take(40).collect();
            return Err(OAuthError::invalid_request(format!(
                "parameter `{name}` holds a NUL character"
            )));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(Form { pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_except_resource_and_audience() {
        assert!(parse(b"scope=a&scope=b").is_err());
        let f = parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&scope=x").unwrap();
        assert_eq!(f.all("resource"), vec!["https://a", "https://b"]);
        assert_eq!(f.get("scope"), Some("x"));
        assert_eq!(parse(b"scope=").unwrap().get("scope"), None);
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn nul_characters_are_refused_except_in_a_token_to_check() {
        let e = parse(b"scope=a%00b").err().map(|e| e.description);
        assert_eq!(
            e.as_deref(),
            Some("parameter `scope` holds a NUL character")
        );
        assert!(parse(b"sc%00ope=a").is_err());
        assert_eq!(parse(b"token=x%00y").unwrap().get("token"), Some("x\0y"));
    }
}
