//! The demo's workload-identity beat (chapter 6): a running agent instance proves itself with the
//! JWT-SVID its platform gives it (SPIFFE), so it holds no key of its own that could be stolen,
//! and the token and audit name the instance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use mandate_server::config::SpiffeTrustDomain;
use mandate_token::sign::sign_jwt;
use mandate_token::{Alg, SigningKey};
use serde_json::{Value, json};

use crate::client::Client;

/// The demo's trust domain.
const TRUST_DOMAIN: &str = "demo.example";
/// The SPIFFE ID the demo's support agent runs as.
const SPIFFE_ID: &str = "spiffe://demo.example/ns/support/sa/support-agent";
const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";

/// A stand-in for the platform's SPIFFE issuer (a SPIRE server): a JWT-SVID signing key, with
/// its trust bundle written to a file Mandate trusts.
pub struct Spire {
    key: SigningKey,
    bundle_file: PathBuf,
}

impl Spire {
    /// A new signing key, its bundle written to `dir`.
    pub fn new(dir: &Path) -> Result<Spire> {
        let key = SigningKey::generate(Alg::EdDSA)?.with_kid("demo-spire-1");
        let mut jwk = key.public_jwk().clone();
        jwk["use"] = json!("jwt-svid");
        let bundle_file = dir.join("demo.example.bundle.json");
        std::fs::write(
            &bundle_file,
            json!({"keys": [jwk], "spiffe_sequence": 1}).to_string(),
        )
        .context("cannot write the demo's SPIFFE bundle")?;
        Ok(Spire { key, bundle_file })
    }

    /// The trust domain, as configured.
    pub fn trust_domain(&self) -> SpiffeTrustDomain {
        SpiffeTrustDomain {
            trust_domain: TRUST_DOMAIN.into(),
            bundle_file: Some(self.bundle_file.clone()),
            bundle_endpoint: None,
            x509_bundle_file: None,
        }
    }
}

/// A JWT-SVID for `sub` addressed to `aud`, valid for five minutes, signed by `key`.
fn svid(key: &SigningKey, sub: &str, aud: &str) -> Result<String> {
    let now = crate::demo::now();
    Ok(sign_jwt(
        key,
        "JWT",
        &json!({"sub": sub, "aud": [aud], "iat": now, "exp": now + 300}),
    )?)
}

/// Binds support-v2 to its SPIFFE ID, exchanges alice's token with a JWT-SVID as the only proof,
/// and shows an SVID signed outside the trust domain's bundle refused.
pub async fn beat(
    admin: &Client,
    http: &reqwest::Client,
    spire: &Spire,
    resource: &str,
    user_token: &str,
    task: &str,
) -> Result<()> {
    admin
        .patch(
            "/v1/agents/support-v2",
            &json!({"workloads": [{"kind": "spiffe", "id": SPIFFE_ID}]}),
        )
        .await?;
    println!(
        "   workload identity: support-v2 is bound to SPIFFE ID {SPIFFE_ID}; the pod's JWT-SVID is its only proof"
    );
    let exchange = |assertion: String| {
        let mut form: Vec<(&str, String)> =
            crate::demo_gateway::exchange_form(user_token, "crm.customers:read", resource, task)
                .into();
        form.push(("client_assertion_type", JWT_SPIFFE.to_owned()));
        form.push(("client_id", "support-v2".to_owned()));
        form.push(("client_assertion", assertion));
        let req = http.post(format!("{}/oauth2/token", admin.url)).form(&form);
        async move {
            let resp = req.send().await.context("the token endpoint answers")?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (status, issued) = exchange(svid(&spire.key, SPIFFE_ID, &admin.url)?).await?;
    let token = issued["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token for the JWT-SVID ({status}): {issued}"))?;
    println!(
        "   → {status}: a token whose credential names the running instance: {}",
        crate::client::claims_of(token)["credential"]
            .as_str()
            .unwrap_or("?")
    );
    let rogue = SigningKey::generate(Alg::EdDSA)?.with_kid("demo-spire-1");
    let (status, refused) = exchange(svid(&rogue, SPIFFE_ID, &admin.url)?).await?;
    println!(
        "   ✓ an SVID for the same ID signed by a key outside the trust domain's bundle → {status} {}",
        refused["error"].as_str().unwrap_or_default()
    );
    Ok(())
}
