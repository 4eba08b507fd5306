//! How the gateway tells a client what it needs: RFC 9728 protected-resource metadata, and
//! `WWW-Authenticate` challenges (RFC 6750 `Bearer`, RFC 9449 `DPoP`) that point to it.
//!
//! An MCP client that gets `401` follows `resource_metadata` to learn which authorization server
//! (Mandate) issues tokens for this resource; a `403 insufficient_scope` names the scope it
//! lacks.

use serde_json::{Value, json};

/// What the gateway publishes about a protected resource (RFC 9728 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The resource identifier: the URL agents use as the token's audience.
    pub resource: String,
    /// Mandate's issuer URL(s).
    pub authorization_servers: Vec<String>,
    /// The scopes the resource's routes and tools need.
    pub scopes_supported: Vec<String>,
    /// A human-readable name.
    pub resource_name: Option<String>,
    /// JWS algorithms accepted for DPoP proofs (empty: DPoP not supported).
    pub dpop_signing_alg_values_supported: Vec<String>,
}

impl ProtectedResource {
    /// The metadata document.
    pub fn metadata(&self) -> Value {
        let mut v = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(name) = &self.resource_name {
                o.insert("resource_name".into(), json!(name));
            }
            if !self.dpop_signing_alg_values_supported.is_empty() {
                o.insert(
                    "dpop_signing_alg_values_supported".into(),
                    json!(self.dpop_signing_alg_values_supported),
                );
            }
        }
        v
    }

    /// Where the metadata is served (RFC 9728 §3.1): `/.well-known/oauth-protected-resource`
    /// inserted between the resource's host and its path. `None` if the resource is not an
    /// absolute http(s) URL without query or fragment.
    pub fn metadata_url(&self) -> Option<String> {
        let (scheme, rest) = self
            .resource
            .split_once("://")
            .filter(|(s, _)| *s == "https" || *s == "http")?;
        if rest.contains(['?', '#']) {
            return None;
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return None;
        }
        let path = path.trim_end_matches('/');
        Some(format!(
            "{scheme}://{host}/.well-known/oauth-protected-resource{path}"
        ))
    }
}

/// Why a request is challenged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// No token at all (RFC 6750 §3.1: no error code).
    Missing,
    /// The token is not acceptable: malformed, expired, revoked, wrong audience.
    InvalidToken(String),
    /// The token is DPoP-bound and its proof is missing or bad (RFC 9449 §7.1:
    /// `invalid_dpop_proof`, or `use_dpop_nonce`).
    DpopProof {
        /// `invalid_dpop_proof` or `use_dpop_nonce`.
        code: &'static str,
        /// Why, for people.
        description: String,
    },
    /// The token is fine but lacks `scope`.
    InsufficientScope {
        /// The scope the request needs.
        scope: String,
        /// Why, for people.
        description: String,
    },
}

impl Challenge {
    /// The HTTP status: 401, or 403 for insufficient scope.
    pub fn status(&self) -> u16 {
        match self {
            Challenge::Missing | Challenge::InvalidToken(_) | Challenge::DpopProof { .. } => 401,
            Challenge::InsufficientScope { .. } => 403,
        }
    }

    /// The `error` code, if any.
    pub fn error(&self) -> Option<&'static str> {
        match self {
            Challenge::Missing => None,
            Challenge::InvalidToken(_) => Some("invalid_token"),
            Challenge::DpopProof { code, .. } => Some(code),
            Challenge::InsufficientScope { .. } => Some("insufficient_scope"),
        }
    }

    /// The `WWW-Authenticate` value for `scheme` (`Bearer` or `DPoP`), pointing to
    /// `resource_metadata`; `dpop_algs` is listed for the `DPoP` scheme (RFC 9449 §7.1).
    pub fn header(
        &self,
        scheme: Scheme,
        resource_metadata: Option<&str>,
        dpop_algs: &[String],
    ) -> String {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(e) = self.error() {
            params.push(("error", e.to_owned()));
        }
        match self {
            Challenge::Missing => {}
            Challenge::InvalidToken(d) => params.push(("error_description", d.clone())),
            Challenge::DpopProof { description, .. } => {
                params.push(("error_description", description.clone()));
            }
            Challenge::InsufficientScope { scope, description } => {
                params.push(("error_description", description.clone()));
                params.push(("scope", scope.clone()));
            }
        }
        if let Some(url) = resource_metadata {
            params.push(("resource_metadata", url.to_owned()));
        }
        if scheme == Scheme::DPoP && !dpop_algs.is_empty() {
            params.push(("algs", dpop_algs.join(" ")));
        }
        let mut out = scheme.as_str().to_owned();
        for (i, (k, v)) in params.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ", " });
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&quoted(v));
            out.push('"');
        }
        out
    }

    /// The JSON body to send with the challenge.
    pub fn body(&self) -> Value {
        match self {
            Challenge::Missing => {
                json!({"error": "invalid_request", "error_description": "a bearer token is required"})
            }
            Challenge::InvalidToken(d) => json!({"error": "invalid_token", "error_description": d}),
            Challenge::DpopProof { code, description } => {
                json!({"error": code, "error_description": description})
            }
            Challenge::InsufficientScope { scope, description } => {
                json!({"error": "insufficient_scope", "error_description": description, "scope": scope})
            }
        }
    }
}

/// An authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750.
    Bearer,
    /// RFC 9449.
    DPoP,
}

impl Scheme {
    /// As written in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::DPoP => "DPoP",
        }
    }
}

/// A value safe inside a quoted-string: printable ASCII, with `"` and `\` replaced (RFC 6750
/// §3 forbids them in `error_description`), at most 300 characters.
fn quoted(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn crm(resource: &str) -> ProtectedResource {
        ProtectedResource {
            resource: resource.into(),
            authorization_servers: vec!["https://mandate.example".into()],
            scopes_supported: vec!["mcp.crm.lookup_customer:call".into()],
            resource_name: Some("sample CRM".into()),
            dpop_signing_alg_values_supported: vec![],
        }
    }

    #[test]
    fn the_metadata_has_the_rfc_9728_members() {
        let m = crm("https://gw.example/mcp").metadata();
        assert_eq!(
            m,
            json!({
                "resource": "https://gw.example/mcp",
                "authorization_servers": ["https://mandate.example"],
                "scopes_supported": ["mcp.crm.lookup_customer:call"],
                "bearer_methods_supported": ["header"],
                "resource_name": "sample CRM",
            })
        );
        let mut with_dpop = crm("https://gw.example");
        with_dpop.dpop_signing_alg_values_supported = vec!["EdDSA".into(), "ES256".into()];
        assert_eq!(
            with_dpop.metadata()["dpop_signing_alg_values_supported"],
            json!(["EdDSA", "ES256"])
        );
    }

    #[test]
    fn the_well_known_url_goes_between_host_and_path() {
        assert_eq!(
            crm("https://gw.example/mcp").metadata_url().unwrap(),
            "https://gw.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            crm("http://127.0.0.1:8081").metadata_url().unwrap(),
            "http://127.0.0.1:8081/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            crm("https://gw.example/").metadata_url().unwrap(),
            "https://gw.example/.well-known/oauth-protected-resource"
        );
        for bad in [
            "gw.example/mcp",
            "ftp://gw.example",
            "https:///x",
            "https://gw.example/?a=1",
        ] {
            assert!(crm(bad).metadata_url().is_none(), "{bad}");
        }
    }

    #[test]
    fn challenges_follow_rfc_6750_and_point_to_the_metadata() {
        let url = "https://gw.example/.well-known/oauth-protected-resource/mcp";
        assert_eq!(
            Challenge::Missing.header(Scheme::Bearer, Some(url), &[]),
            format!("Bearer resource_metadata=\"{url}\"")
        );
        let c = Challenge::InvalidToken("token has been revoked (user `alice`)".into());
        assert_eq!(c.status(), 401);
        assert_eq!(
            c.header(Scheme::Bearer, Some(url), &[]),
            format!(
                "Bearer error=\"invalid_token\", error_description=\"token has been revoked (user `alice`)\", resource_metadata=\"{url}\""
            )
        );
        let c = Challenge::InsufficientScope {
            scope: "mcp.crm.delete_customer:call".into(),
            description: "the token does not hold `mcp.crm.delete_customer:call`".into(),
        };
        assert_eq!(c.status(), 403);
        assert_eq!(
            c.header(Scheme::Bearer, None, &[]),
            "Bearer error=\"insufficient_scope\", error_description=\"the token does not hold `mcp.crm.delete_customer:call`\", scope=\"mcp.crm.delete_customer:call\""
        );
        assert_eq!(c.body()["scope"], "mcp.crm.delete_customer:call");
        assert_eq!(
            Challenge::InvalidToken("x".into()).header(
                Scheme::DPoP,
                None,
                &["EdDSA".into(), "ES256".into()]
            ),
            "DPoP error=\"invalid_token\", error_description=\"x\", algs=\"EdDSA ES256\""
        );
    }

    #[test]
    fn descriptions_cannot_break_out_of_the_quoted_string() {
        let h = Challenge::InvalidToken("a\"b\\c\r\nSet-Cookie: x=1é".into()).header(
            Scheme::Bearer,
            None,
            &[],
        );
        assert_eq!(
            h,
            "Bearer error=\"invalid_token\", error_description=\"a'b'c??Set-Cookie: x=1?\""
        );
    }
}
