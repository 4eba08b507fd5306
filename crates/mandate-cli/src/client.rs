//! The CLI's HTTP client: admin calls with the bearer credential, and OAuth calls as an agent
//! (client assertions signed with the agent's private key).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use mandate_token::SigningKey;
use mandate_token::sign::sign_jwt;
use serde_json::{Value, json};

/// Talks to one Mandate server.
pub struct Client {
    /// Base URL, no trailing slash.
    pub url: String,
    token: Option<String>,
    http: reqwest::Client,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HTTP client for talking to Mandate with `timeout`, trusting, besides the system's roots,
/// the CA certificates in the PEM file `MANDATE_CA_FILE` names (for a server whose `[tls]`
/// certificate comes from a private CA).
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(file) = std::env::var_os("MANDATE_CA_FILE").filter(|f| !f.is_empty()) {
        let shown = std::path::Path::new(&file).display().to_string();
        let pem = std::fs::read(&file)
            .with_context(|| format!("`MANDATE_CA_FILE` `{shown}` cannot be read"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("`MANDATE_CA_FILE` `{shown}` holds no PEM certificate"))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().context("cannot build the HTTP client")
}

impl Client {
    /// A client for `url` with an optional admin credential.
    pub fn new(url: &str, token: Option<String>) -> Result<Client> {
        let http = http_client(std::time::Duration::from_secs(30))?;
        Ok(Client {
            url: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn admin(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        let token = self.token.as_deref().ok_or_else(|| {
            anyhow!("no admin credential: pass `--token` or set `MANDATE_TOKEN` (in `--dev` it is in `<data>/admin.token`)")
        })?;
        Ok(rb.bearer_auth(token))
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach Mandate at `{}`", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = body
                .get("message")
                .or_else(|| body.get("error_description"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| body.to_string());
            let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
            bail!("{status}: {code}: {msg}");
        }
        Ok(body)
    }

    /// `GET` an admin path.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let rb = self.admin(self.http.get(format!("{}{path}", self.url)))?;
        self.send(rb).await
    }

    /// `GET` an admin path with query parameters.
    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let rb = self.admin(self.http.get(format!("{}{path}", self.url)).query(query))?;
        self.send(rb).await
    }

    /// `POST` JSON to an admin path.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let rb = self.admin(self.http.post(format!("{}{path}", self.url)).json(body))?;
        self.send(rb).await
    }

    /// `PATCH` JSON to an admin path.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        let rb = self.admin(self.http.patch(format!("{}{path}", self.url)).json(body))?;
        self.send(rb).await
    }

    /// `PUT` JSON to an admin path.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        let rb = self.admin(self.http.put(format!("{}{path}", self.url)).json(body))?;
        self.send(rb).await
    }

    /// `DELETE` an admin path.
    pub async fn delete(&self, path: &str) -> Result<Value> {
        let rb = self.admin(self.http.delete(format!("{}{path}", self.url)))?;
        self.send(rb).await
    }

    /// `POST` a form to an OAuth endpoint; returns the JSON answer or the OAuth error.
    pub async fn oauth(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        let rb = self.http.post(format!("{}{path}", self.url)).form(form);
        self.send(rb).await
    }

    /// `POST` a form with the admin credential (introspection).
    pub async fn oauth_admin(&self, path: &str, form: &[(&str, String)]) -> Result<Value> {
        let rb = self.admin(self.http.post(format!("{}{path}", self.url)).form(form))?;
        self.send(rb).await
    }
}

/// An agent's identity for OAuth calls: its id and private key.
pub struct AgentKey {
    /// The agent id.
    pub id: String,
    key: SigningKey,
}

impl AgentKey {
    /// Reads a private JWK file (as `--dev` writes to `<data>/agents/<id>.jwk`).
    pub fn load(id: &str, path: &Path) -> Result<AgentKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let jwk: Value = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not a JWK", path.display()))?;
        let key =
            SigningKey::from_private_jwk(&jwk).with_context(|| format!("`{}`", path.display()))?;
        Ok(AgentKey {
            id: id.to_owned(),
            key,
        })
    }

    /// A fresh single-use client assertion for `issuer` (RFC 7523).
    pub fn assertion(&self, issuer: &str) -> Result<String> {
        let t = now();
        let claims = json!({
            "iss": self.id, "sub": self.id, "aud": issuer,
            "iat": t, "exp": t + 60,
            "jti": mandate_token::random_id::<16>()?,
        });
        Ok(sign_jwt(&self.key, "JWT", &claims)?)
    }

    /// The client authentication form fields.
    pub fn auth_fields(&self, issuer: &str) -> Result<Vec<(&'static str, String)>> {
        Ok(vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", self.assertion(issuer)?),
        ])
    }
}

/// Reads the claims of a JWT without verifying it, for display.
pub fn claims_of(token: &str) -> Value {
    mandate_token::verify::peek_claims(token).unwrap_or(Value::Null)
}

/// Parses `--claim key=value` arguments into a JSON object of strings.
pub fn parse_claims(claims: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for c in claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| anyhow!("`--claim {c}` is not `key=value`"))?;
        out.insert(k.to_owned(), json!(v));
    }
    Ok(out)
}
