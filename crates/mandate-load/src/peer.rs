//! The `peer-client-credentials` scenario: the same `client_credentials` request as Mandate's,
//! sent to another authorization server on loopback (`bench/peer/provider.mjs`, node
//! oidc-provider) so both can be measured side by side in one run.
//!
//! The peer knows `support-v2` by the public half of the same Ed25519 key Mandate's demo agent
//! uses, so each request does the same client authentication: a fresh RFC 7523 assertion
//! (`private_key_jwt`, EdDSA, `iss` = `sub` = `support-v2`, `aud` = the peer's issuer, a random
//! single-use `jti`, one minute of life) signed before the latency clock starts, then
//! `grant_type=client_credentials`, scope `tickets:read`, resource `https://crm.example.com`. A
//! `200` whose body holds an `access_token` is a success.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use mandate_token::sign::sign_jwt;
use mandate_token::verify::{AudCheck, ClaimChecks, verify};
use mandate_token::{KeySet, SigningKey};
use serde_json::{Value, json};

use crate::server::{AGENT, RESOURCE, agent_key, http_client};
use crate::target;

/// The scope asked for, as in Mandate's `client-credentials` scenario.
pub const SCOPE: &str = "tickets:read";
/// `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The peer authorization server and `support-v2`'s key.
pub struct Peer {
    /// Base URL, no trailing slash; checked to be loopback.
    pub url: String,
    /// The peer's issuer (from its discovery document), the audience of client assertions.
    pub issuer: String,
    /// The token endpoint (from discovery), on the same origin as `url`.
    pub token_endpoint: String,
    /// The peer's JWKS URL (from discovery), on the same origin as `url`.
    jwks_uri: String,
    /// The pooled HTTP client: no redirects, no proxy.
    http: reqwest::Client,
    /// `support-v2`'s private key, read from the Mandate data directory.
    key: SigningKey,
}

/// Whether `endpoint` lies on `base`'s origin (`base` has no trailing slash).
fn same_origin(base: &str, endpoint: &str) -> bool {
    endpoint
        .strip_prefix(base)
        .is_some_and(|rest| rest.starts_with('/'))
}

impl Peer {
    /// Checks `raw` is a loopback base URL, reads `support-v2`'s key from `data` (a Mandate
    /// `--dev` data directory) and the peer's discovery document; `pool` is how many idle
    /// connections to keep.
    pub async fn connect(raw: &str, data: &Path, pool: usize) -> Result<Peer> {
        let url = target::loopback_base(raw).context("`--peer`")?;
        let key = agent_key(data)?;
        let http = http_client(pool)?;
        let meta = http
            .get(format!("{url}/.well-known/openid-configuration"))
            .send()
            .await
            .with_context(|| format!("cannot reach the peer at `{url}`"))?;
        if !meta.status().is_success() {
            bail!(
                "the peer at `{url}` answered {} for its discovery document",
                meta.status()
            );
        }
        let meta: Value = meta
            .json()
            .await
            .context("the peer's discovery document is not JSON")?;
        let field = |name: &str| {
            meta.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("the peer's discovery document names no `{name}`"))
        };
        let issuer = field("issuer")?;
        let token_endpoint = field("token_endpoint")?;
        let jwks_uri = field("jwks_uri")?;
        for endpoint in [&token_endpoint, &jwks_uri] {
            if !same_origin(&url, endpoint) {
                bail!("the peer's endpoint `{endpoint}` is not on `{url}`");
            }
        }
        Ok(Peer {
            url,
            issuer,
            token_endpoint,
            jwks_uri,
            http,
            key,
        })
    }

    /// One request, ready to send: a fresh client assertion and the `client_credentials` form.
    pub fn request(&self) -> Result<reqwest::RequestBuilder> {
        let t = now();
        let claims = json!({
            "iss": AGENT, "sub": AGENT, "aud": self.issuer,
            "iat": t, "exp": t + 60,
            "jti": mandate_token::random_id::<16>()?,
        });
        let form = [
            ("client_assertion_type", JWT_BEARER.to_owned()),
            ("client_assertion", sign_jwt(&self.key, "JWT", &claims)?),
            ("grant_type", "client_credentials".to_owned()),
            ("scope", SCOPE.to_owned()),
            ("resource", RESOURCE.to_owned()),
        ];
        Ok(self.http.post(&self.token_endpoint).form(&form))
    }

    /// Outside the measurement: asks for one token and checks it is a JWT signed with EdDSA by a
    /// key in the peer's JWKS, issued by the peer for `support-v2` at [`RESOURCE`] with
    /// [`SCOPE`]; then replays the same assertion and reports whether the peer refused it.
    /// Returns a one-line description for the log.
    pub async fn check(&self) -> Result<String> {
        let jwks: Value = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await
            .with_context(|| format!("cannot fetch the peer's JWKS at `{}`", self.jwks_uri))?
            .json()
            .await
            .context("the peer's JWKS is not JSON")?;
        let (keys, _) = KeySet::from_jwks(&jwks);
        if keys.is_empty() {
            bail!("the peer's JWKS holds no usable signing key");
        }
        let rb = self.request()?;
        let replay = rb
            .try_clone()
            .ok_or_else(|| anyhow!("cannot copy the peer request"))?;
        let answer = Self::send(rb).await.context("the peer refused a token")?;
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the peer's answer holds no `access_token`"))?;
        let audience = [RESOURCE.to_owned()];
        let checks = ClaimChecks {
            issuer: Some(&self.issuer),
            audience: AudCheck::OneOf(&audience),
            typ: Some("at+jwt"),
            require_iat: true,
            ..ClaimChecks::at(now())
        };
        let verified = verify(token, &keys, &checks)
            .context("the peer's access token does not verify against its JWKS")?;
        if verified.header.alg != "EdDSA" {
            bail!(
                "the peer's access token is signed with `{}`, not EdDSA",
                verified.header.alg
            );
        }
        let claim = |k: &str| verified.claims.get(k).and_then(Value::as_str);
        if claim("client_id") != Some(AGENT) || claim("scope") != Some(SCOPE) {
            bail!(
                "the peer's access token is not `support-v2`'s with scope `{SCOPE}`: {}",
                verified.claims
            );
        }
        let replayed = match Self::send(replay).await {
            Ok(_) => "accepted (the replay went undetected)",
            Err(_) => "refused",
        };
        Ok(format!(
            "access token is a JWT, alg {}, typ {}, {} bytes; a replayed assertion was {replayed}",
            verified.header.alg,
            verified.header.typ.as_deref().unwrap_or("-"),
            token.len(),
        ))
    }

    /// Sends `rb` and returns the JSON answer, or an error naming the status and body.
    async fn send(rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = rb.send().await.context("no answer from the peer")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::OK {
            bail!("{status}: {}", text.chars().take(500).collect::<String>());
        }
        serde_json::from_str(&text).with_context(|| format!("{status}: the answer is not JSON"))
    }
}

/// Whether a `200` answer's body is a success: JSON with a non-empty `access_token`.
pub fn accepts(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("access_token")
                .and_then(Value::as_str)
                .map(|t| !t.is_empty())
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_share_the_origin() {
        assert!(same_origin(
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/token"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:9000",
            "http://127.0.0.1:90001/token"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:9000",
            "http://example.com/token"
        ));
        assert!(!same_origin(
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000"
        ));
    }

    #[test]
    fn success_needs_an_access_token() {
        assert!(accepts(
            br#"{"access_token":"a.b.c","token_type":"Bearer"}"#
        ));
        assert!(!accepts(br#"{"access_token":""}"#));
        assert!(!accepts(br#"{"error":"invalid_client"}"#));
        assert!(!accepts(b"not json"));
    }
}
