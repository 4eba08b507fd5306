//! The server under load as the generator sees it: its base URL and issuer, the admin credential
//! and the `support-v2` agent's key (both read from a `--dev` data directory), and one pooled HTTP
//! client that never follows redirects and never uses a proxy — so nothing leaves loopback.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mandate_token::SigningKey;
use mandate_token::sign::sign_jwt;
use serde_json::{Value, json};

/// The agent every scenario acts as (a `--dev` demo agent).
pub const AGENT: &str = "support-v2";
/// The demo user whose token is exchanged.
pub const USER: &str = "alice@example.com";
/// The resource every token is asked for.
pub const RESOURCE: &str = "https://crm.example.com";
/// `grant_type` of RFC 8693.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` for a user's token from the IdP.
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `client_assertion_type` of RFC 7523.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One running Mandate server and the credentials to drive it.
pub struct Server {
    /// Base URL, no trailing slash; checked to be loopback.
    pub url: String,
    /// The server's issuer (from its metadata), the audience of client assertions.
    pub issuer: String,
    /// The admin bearer credential.
    pub admin_token: String,
    /// The pooled HTTP client.
    pub http: reqwest::Client,
    /// `support-v2`'s private key.
    key: SigningKey,
}

impl Server {
    /// Reads the credentials from `data` and the issuer from the server at `url` (already
    /// checked to be loopback); `pool` is how many idle connections to keep.
    pub async fn connect(url: String, data: &Path, pool: usize) -> Result<Server> {
        let token_path = data.join("admin.token");
        let admin_token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("cannot read `{}`", token_path.display()))?
            .trim()
            .to_owned();
        if admin_token.is_empty() {
            bail!("`{}` is empty", token_path.display());
        }
        let key = agent_key(data)?;
        let http = http_client(pool)?;
        let meta = http
            .get(format!("{url}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .with_context(|| format!("cannot reach Mandate at `{url}`"))?;
        if !meta.status().is_success() {
            bail!("`{url}` answered {} for its metadata", meta.status());
        }
        let meta: Value = meta.json().await.context("the metadata is not JSON")?;
        let issuer = meta
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the metadata names no `issuer`"))?
            .to_owned();
        Ok(Server {
            url,
            issuer,
            admin_token,
            http,
            key,
        })
    }

    /// The client authentication fields with a fresh single-use assertion (RFC 7523): `iss` =
    /// `sub` = the agent, `aud` = the issuer, a random `jti`, one minute of life.
    pub fn client_auth(&self) -> Result<[(&'static str, String); 2]> {
        let t = now();
        let claims = json!({
            "iss": AGENT, "sub": AGENT, "aud": self.issuer,
            "iat": t, "exp": t + 60,
            "jti": mandate_token::random_id::<16>()?,
        });
        Ok([
            ("client_assertion_type", JWT_BEARER.to_owned()),
            ("client_assertion", sign_jwt(&self.key, "JWT", &claims)?),
        ])
    }

    /// The form of a first-hop token exchange of `subject` (a user token) for `task`.
    pub fn exchange_form(&self, subject: &str, task: &str) -> Result<Vec<(&'static str, String)>> {
        self.exchange_form_for(subject, task, "crm.customers:read tickets:read", RESOURCE)
    }

    /// The form of a first-hop token exchange of `subject` (a user token) for `task`, asking for
    /// `scope` at `resource`.
    pub fn exchange_form_for(
        &self,
        subject: &str,
        task: &str,
        scope: &str,
        resource: &str,
    ) -> Result<Vec<(&'static str, String)>> {
        let mut form: Vec<(&'static str, String)> = self.client_auth()?.into();
        form.extend([
            ("grant_type", TOKEN_EXCHANGE.to_owned()),
            ("subject_token", subject.to_owned()),
            ("subject_token_type", TYPE_JWT.to_owned()),
            ("scope", scope.to_owned()),
            ("resource", resource.to_owned()),
            ("task", task.to_owned()),
        ]);
        Ok(form)
    }

    /// Sends `rb` and returns the JSON answer, or an error naming the status and body.
    async fn json(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach Mandate at `{}`", self.url))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{status}: {}", text.chars().take(500).collect::<String>());
        }
        serde_json::from_str(&text).with_context(|| format!("{status}: the answer is not JSON"))
    }

    /// A user token from the `--dev` test IdP (`POST /v1/dev/user-token`); `groups` `None` means
    /// the demo user's own groups.
    pub async fn user_token(&self, sub: &str, groups: Option<&[&str]>) -> Result<String> {
        let mut body = json!({ "sub": sub });
        if let (Some(g), Some(obj)) = (groups, body.as_object_mut()) {
            obj.insert("groups".into(), json!(g));
        }
        let rb = self
            .http
            .post(format!("{}/v1/dev/user-token", self.url))
            .bearer_auth(&self.admin_token)
            .json(&body);
        let v = self
            .json(rb)
            .await
            .with_context(|| format!("cannot mint a user token for `{sub}`"))?;
        v.get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the user-token answer holds no `token`"))
    }

    /// One token exchange outside the measurement (to prepare tokens to introspect).
    pub async fn exchange(&self, subject: &str, task: &str) -> Result<String> {
        let form = self.exchange_form(subject, task)?;
        self.exchange_with(&form).await
    }

    /// One token exchange outside the measurement of `subject` for `task`, asking for `scope`
    /// at `resource` (e.g. a token for the gateway).
    pub async fn exchange_for(
        &self,
        subject: &str,
        task: &str,
        scope: &str,
        resource: &str,
    ) -> Result<String> {
        let form = self.exchange_form_for(subject, task, scope, resource)?;
        self.exchange_with(&form).await
    }

    /// Sends a token-exchange `form` and returns the access token.
    async fn exchange_with(&self, form: &[(&'static str, String)]) -> Result<String> {
        let rb = self
            .http
            .post(format!("{}/oauth2/token", self.url))
            .form(form);
        let v = self
            .json(rb)
            .await
            .context("a preparatory exchange failed")?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the token answer holds no `access_token`"))
    }
}

/// `support-v2`'s private key, read from a `--dev` data directory.
pub fn agent_key(data: &Path) -> Result<SigningKey> {
    let key_path = data.join("agents").join(format!("{AGENT}.jwk"));
    let text = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read `{}`", key_path.display()))?;
    let jwk: Value = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a JWK", key_path.display()))?;
    SigningKey::from_private_jwk(&jwk).with_context(|| format!("`{}`", key_path.display()))
}

/// The load generator's HTTP client: keeps `pool` idle connections, never follows redirects,
/// never uses a proxy, gives up on a request after 30 s.
pub fn http_client(pool: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(pool)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")
}
