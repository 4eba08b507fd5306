//! Configuration: `mandate.toml` plus `MANDATE_*` environment overrides.
//!
//! Every key can be overridden by an environment variable named after its path, upper-cased,
//! with `__` between levels: `listen` ← `MANDATE_LISTEN`, `tokens.default_ttl` ←
//! `MANDATE_TOKENS__DEFAULT_TTL`. Values are read as TOML (`300`, `true`, `["a","b"]`) and
//! otherwise as plain strings. Unknown keys — in the file or the environment — are errors that
//! name the key, never silently ignored. Secrets are never inline: the master key comes from
//! `MANDATE_MASTER_KEY` or a key file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mandate_core::scope::PatternSet;
use serde::{Deserialize, Serialize};

/// Environment variables that are not configuration keys.
pub const NON_CONFIG_ENV: &[&str] = &[
    "MANDATE_MASTER_KEY",
    "MANDATE_URL",
    "MANDATE_TOKEN",
    "MANDATE_CONFIG",
    "MANDATE_LOG",
    "MANDATE_GATEWAY_CREDENTIAL",
    "MANDATE_USER_TOKEN",
    // The test suites' PostgreSQL server (see `mandate_store::testing`).
    "MANDATE_TEST_DATABASE_URL",
];

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file or an override is not valid.
    #[error("invalid configuration in {origin}: {message}")]
    Invalid {
        /// The file, or `environment`.
        origin: String,
        /// What is wrong (names the key).
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the authorization server listens on.
    pub listen: SocketAddr,
    /// Directory for the database, keys and dev files.
    pub data_dir: PathBuf,
    /// A PostgreSQL database instead of the embedded SQLite file (`postgres://user:password@host:
    /// port/db?sslmode=require`), for several nodes sharing one database. Unset: SQLite in
    /// `data_dir`. `MANDATE_DATABASE_URL` in the environment keeps the password out of the file.
    pub database_url: Option<DatabaseUrl>,
    /// Public issuer URL (`iss` of every token). Default: `http://<listen>`.
    pub issuer: Option<String>,
    /// Signing algorithm for new keys: `EdDSA` or `ES256`.
    pub signing_alg: String,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Request limits.
    pub limits: Limits,
    /// Token lifetimes and chain limits.
    pub tokens: Tokens,
    /// Trusted identity providers for user tokens.
    pub issuers: Vec<TrustedIssuerConfig>,
    /// Directory of `*.cedar` policy files (in `--dev`, default `<data_dir>/policies`).
    pub policies_dir: Option<PathBuf>,
    /// Shorthand for simple policies: what members of each group, and each agent on its own,
    /// may do. Each entry becomes one Cedar `permit`.
    pub rights: Rights,
    /// Audiences tokens may be requested for; empty means any absolute URI or name.
    pub audiences: Vec<String>,
    /// Action classes that differ from the default (`read`, `list`, `get`, `search`, `query`,
    /// `view` read; everything else writes), by action (`export = "read"`) or by full scope
    /// (`"crm.reports:generate" = "read"`).
    pub catalog: mandate_core::scope::ActionCatalog,
    /// Seconds between signed checkpoints of the audit chain's head (written only when the
    /// head moved); 0 turns the periodic checkpoint off (shutdown and `POST
    /// /v1/audit/checkpoint` still write one).
    pub audit_checkpoint_secs: u64,
    /// Days audit events stay in the database: older ones (from the UTC midnight before) are
    /// archived to segment files under `<data_dir>/audit-archive/` (checked at most once an
    /// hour; the newest event always stays). 0 keeps them forever.
    pub audit_retention_days: u64,
    /// The gateway (SPEC §6): listener, upstreams, routes, MCP servers, breakers.
    pub gateway: mandate_gateway::GatewayConfig,
    /// Human approvals (SPEC §6): who may approve, how long a request waits, what needs one.
    pub approvals: Approvals,
    /// Workload identity of agents (SPEC §3): trusted SPIFFE trust domains and OIDC workload
    /// issuers.
    pub workload: Workload,
    /// TLS on the listener; `None`: plain HTTP (behind a terminating proxy, or on loopback).
    pub tls: Option<Tls>,
    /// The web console at `/console`: who signs in, with what, and their roles.
    pub console: Console,
}

/// The console (`[console]`): people sign in with OpenID Connect (authorization code with
/// PKCE) at one of the trusted identity providers; their roles come from their groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Serve `/console` at all.
    pub enabled: bool,
    /// The identity provider people sign in with: the `name` or `issuer` of one of the
    /// `[[issuers]]`, whose OpenID configuration is read from
    /// `<issuer>/.well-known/openid-configuration`. Unset: no OpenID Connect sign-in (in
    /// `--dev`, the built-in test IdP).
    pub issuer: Option<String>,
    /// The console's client id at that provider.
    pub client_id: Option<String>,
    /// A file holding the client secret, for a provider that requires one (sent with HTTP
    /// Basic); PKCE is used either way.
    pub client_secret_file: Option<PathBuf>,
    /// Groups whose members are admins in the console (everything, including suspending agents
    /// and revoking tasks).
    pub admin_groups: Vec<String>,
    /// Groups whose members are auditors (read everything: agents, tasks, audit, posture).
    pub auditor_groups: Vec<String>,
    /// How long a console session lasts, seconds.
    pub session_ttl: i64,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            issuer: None,
            client_id: None,
            client_secret_file: None,
            admin_groups: vec!["admin".into()],
            auditor_groups: vec!["auditor".into()],
            session_ttl: 8 * 3600,
        }
    }
}

/// HTTPS on Mandate's listener (`[tls]`). Client certificates (X.509-SVIDs) are asked for
/// when a `[[workload.spiffe]]` trust domain has an `x509_bundle_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file: the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A database URL. It may hold a password, so it is never shown: `Debug` prints only the
/// scheme and host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The URL itself, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `scheme://host:port/db`, without user, password or options: safe to log.
    pub fn display_safe(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("?", &self.0));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let rest = rest.split('?').next().unwrap_or_default();
        format!("{scheme}://{rest}")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.display_safe())
    }
}

/// Human approvals: stage escalations before issuance (CIBA), writes held at the gateway in
/// `draft` stage, and changes to what an agent may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Approvals {
    /// Groups whose members may approve for every agent, besides each agent's owner. In
    /// `--dev`, `["approver"]` when empty.
    pub approver_groups: Vec<String>,
    /// How long a request waits for a decision before it expires (a denial), seconds.
    pub ttl: i64,
    /// The CIBA poll interval an agent is told, seconds (`slow_down` adds 5 each time).
    pub poll_interval: i64,
    /// A token request above the agent's `max_stage` becomes an approval request (CIBA
    /// `auth_req_id`) instead of a refusal.
    pub escalation: bool,
    /// Scope patterns a token only gets once a human approves, even within the agent's
    /// ceiling and the user's rights (e.g. `billing.payments:create`).
    pub scopes: Vec<String>,
    /// Whether widening an agent's ceiling or raising its `max_stage` needs an approval.
    /// Default: on, except in `--dev`.
    pub agent_changes: Option<bool>,
    /// A URL that gets a JSON POST (`text` for chat tools, and the approval) on each new
    /// request.
    pub webhook: Option<String>,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            approver_groups: Vec::new(),
            ttl: 900,
            poll_interval: 5,
            escalation: true,
            scopes: Vec::new(),
            agent_changes: None,
            webhook: None,
        }
    }
}

/// Limits on requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, bytes.
    pub body_bytes: usize,
    /// Largest total size of request headers, bytes.
    pub header_bytes: usize,
    /// Per-request timeout, seconds.
    pub request_timeout_secs: u64,
    /// How long a client may take to send a request's headers, seconds; an idle connection is
    /// closed after it too.
    pub header_timeout_secs: u64,
    /// Most connections served at once; beyond it new connections wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// Tokens issued per user per minute (bursts up to this many); 0 = no limit.
    pub issuance_per_user_per_minute: u32,
    /// Tokens issued per agent per minute; 0 = no limit.
    pub issuance_per_agent_per_minute: u32,
}

/// Token lifetimes and chain limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    /// Lifetime when none is requested, seconds.
    pub default_ttl: i64,
    /// Longest lifetime of any token, seconds.
    pub max_ttl: i64,
    /// Default and longest lifetime of `execute`-stage tokens holding a write scope.
    pub execute_write_ttl: i64,
    /// Longest lifetime per stage, seconds.
    pub stage_max_ttl: StageTtl,
    /// Most agents in a delegation chain.
    pub max_chain_depth: usize,
    /// Clock skew tolerated when checking incoming tokens, seconds.
    pub leeway: i64,
    /// Longest lifetime of a client assertion, seconds.
    pub assertion_max_lifetime: i64,
    /// How old a DPoP proof's `iat` may be, seconds (RFC 9449 §11.1).
    pub dpop_proof_max_age: i64,
    /// Whether DPoP proofs must carry a server nonce (RFC 9449 §8): the token endpoint answers
    /// `use_dpop_nonce` with a `DPoP-Nonce` header until they do.
    pub dpop_nonce: bool,
    /// Names of the user's identity-provider claims copied into access tokens as `user_tags`
    /// (string claims only; nothing else of the user's token leaves Mandate). In `--dev`,
    /// `["region"]` when empty.
    pub carry_claims: Vec<String>,
}

/// Longest token lifetime at each stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageTtl {
    /// `observe`.
    pub observe: i64,
    /// `draft`.
    pub draft: i64,
    /// `execute`.
    pub execute: i64,
}

impl Default for StageTtl {
    fn default() -> Self {
        StageTtl {
            observe: 3600,
            draft: 900,
            execute: 300,
        }
    }
}

/// A trusted identity provider whose tokens name users.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// Short name shown in audit when several issuers are trusted.
    pub name: String,
    /// Its `iss`.
    pub issuer: String,
    /// Audiences its tokens must carry (one of).
    pub audiences: Vec<String>,
    /// JWKS URL, fetched and cached; refreshed when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// JWKS file, read at start.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim naming the user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

/// Workload identity of agents: SPIFFE JWT-SVIDs and OIDC workload tokens (a Kubernetes
/// service-account token, a CI job's OIDC token) that prove an agent bound to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Longest lifetime of an SVID or workload token, seconds (`exp − iat`, or `exp − now`
    /// without `iat`): they are reusable until they expire, so their lifetime is bounded.
    pub max_token_lifetime: i64,
    /// Seconds between fetches of a bundle endpoint or JWKS when the bundle gives no
    /// `spiffe_refresh_hint`; bundle files are checked for changes every few seconds.
    pub refresh_secs: u64,
    /// Least seconds between two fetches of one trust domain's bundle or one issuer's JWKS
    /// triggered by an unknown `kid`.
    pub unknown_kid_refresh_secs: u64,
    /// Trusted SPIFFE trust domains.
    pub spiffe: Vec<SpiffeTrustDomain>,
    /// Trusted OIDC workload issuers.
    pub oidc: Vec<OidcWorkloadIssuer>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            max_token_lifetime: 3600,
            refresh_secs: 300,
            unknown_kid_refresh_secs: 10,
            spiffe: Vec::new(),
            oidc: Vec::new(),
        }
    }
}

/// A SPIFFE trust domain whose JWT-SVIDs prove agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiffeTrustDomain {
    /// The trust domain (`prod.example`): the host of the SPIFFE IDs it vouches for.
    pub trust_domain: String,
    /// A SPIFFE bundle file (a JWKS whose JWT-SVID keys have `use: "jwt-svid"`), re-read when it
    /// changes.
    #[serde(default)]
    pub bundle_file: Option<PathBuf>,
    /// An `https` URL serving the trust domain's SPIFFE bundle (`http` only on loopback).
    #[serde(default)]
    pub bundle_endpoint: Option<String>,
    /// A PEM file of the trust domain's X.509 authorities: X.509-SVIDs chaining to them prove
    /// agents in mutual TLS (needs `[tls]`; read at start).
    #[serde(default)]
    pub x509_bundle_file: Option<PathBuf>,
}

/// An OIDC issuer of workload tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcWorkloadIssuer {
    /// Its `iss`, exactly.
    pub issuer: String,
    /// Its JWKS URL. Default: the `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// What the token's `aud` must contain. Default: Mandate's issuer (or its token endpoint).
    #[serde(default)]
    pub audience: Option<String>,
}

/// Whether `url` is `https`, or `http` to a loopback host (for tests and local agents).
pub fn fetchable_url(url: &str) -> bool {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_workload(w: &Workload) -> Result<(), String> {
    if w.max_token_lifetime <= 0 || w.max_token_lifetime > 86_400 {
        return Err("`workload.max_token_lifetime` must be between 1 second and 1 day".to_owned());
    }
    if w.refresh_secs == 0 || w.unknown_kid_refresh_secs == 0 {
        return Err(
            "`workload.refresh_secs` and `workload.unknown_kid_refresh_secs` must be positive"
                .to_owned(),
        );
    }
    for (i, d) in w.spiffe.iter().enumerate() {
        let td = &d.trust_domain;
        if td.is_empty()
            || td.len() > 255
            || !td.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            })
        {
            return Err(format!(
                "`workload.spiffe` trust domain `{td}` must be a bare name of lowercase letters, digits, `.`, `-` and `_` (not a `spiffe://` URL)"
            ));
        }
        if w.spiffe[..i].iter().any(|o| &o.trust_domain == td) {
            return Err(format!("`workload.spiffe` names trust domain `{td}` twice"));
        }
        if d.bundle_file.is_some() && d.bundle_endpoint.is_some()
            || d.bundle_file.is_none()
                && d.bundle_endpoint.is_none()
                && d.x509_bundle_file.is_none()
        {
            return Err(format!(
                "trust domain `{td}` needs one of `bundle_file` and `bundle_endpoint` (JWT-SVIDs), and/or an `x509_bundle_file` (X.509-SVIDs)"
            ));
        }
        if let Some(url) = &d.bundle_endpoint
            && !fetchable_url(url)
        {
            return Err(format!(
                "trust domain `{td}`: `bundle_endpoint` must be an `https` URL (`http` only on loopback), not `{url}`"
            ));
        }
    }
    for (i, o) in w.oidc.iter().enumerate() {
        let iss = &o.issuer;
        if !fetchable_url(iss) || iss.ends_with('/') {
            return Err(format!(
                "`workload.oidc` issuer `{iss}` must be an `https` URL without a trailing `/` (`http` only on loopback)"
            ));
        }
        if w.oidc[..i].iter().any(|p| &p.issuer == iss) {
            return Err(format!("`workload.oidc` names issuer `{iss}` twice"));
        }
        if let Some(url) = &o.jwks_uri
            && !fetchable_url(url)
        {
            return Err(format!(
                "workload issuer `{iss}`: `jwks_uri` must be an `https` URL (`http` only on loopback), not `{url}`"
            ));
        }
        if o.audience.as_deref().is_some_and(str::is_empty) {
            return Err(format!("workload issuer `{iss}`: `audience` is empty"));
        }
    }
    Ok(())
}

fn default_user_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}

/// Group → scopes and agent → scopes rights.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rights {
    /// What members of each group may do.
    pub groups: BTreeMap<String, PatternSet>,
    /// What each agent may do on its own (client credentials), within its ceiling.
    pub agents: BTreeMap<String, PatternSet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("mandate-data"),
            database_url: None,
            issuer: None,
            signing_alg: "EdDSA".into(),
            log_format: "text".into(),
            limits: Limits::default(),
            tokens: Tokens::default(),
            issuers: Vec::new(),
            policies_dir: None,
            rights: Rights::default(),
            audiences: Vec::new(),
            catalog: mandate_core::scope::ActionCatalog::default(),
            audit_checkpoint_secs: 60,
            audit_retention_days: 0,
            gateway: mandate_gateway::GatewayConfig::default(),
            approvals: Approvals::default(),
            workload: Workload::default(),
            tls: None,
            console: Console::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            header_bytes: 16 * 1024,
            request_timeout_secs: 15,
            header_timeout_secs: 10,
            max_connections: 4096,
            issuance_per_user_per_minute: 0,
            issuance_per_agent_per_minute: 0,
        }
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            default_ttl: 300,
            max_ttl: 3600,
            execute_write_ttl: 60,
            stage_max_ttl: StageTtl::default(),
            max_chain_depth: 4,
            leeway: 30,
            assertion_max_lifetime: 300,
            dpop_proof_max_age: 60,
            dpop_nonce: false,
            carry_claims: Vec::new(),
        }
    }
}

impl Config {
    /// Loads `path` (if given) and applies `env` overrides (pairs of name and value; pass
    /// `std::env::vars()`).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut doc, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let doc: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Invalid {
                            origin: format!("`{}`", p.display()),
                            message: e.message().to_owned(),
                        })?;
                (doc, format!("`{}`", p.display()))
            }
            None => (toml::Table::new(), "defaults".to_owned()),
        };
        let mut overridden = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("MANDATE_") else {
                continue;
            };
            if NON_CONFIG_ENV.contains(&name.as_str()) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut doc, &path, parse_env_value(&value)).map_err(|message| {
                ConfigError::Invalid {
                    origin: format!("environment variable `{name}`"),
                    message,
                }
            })?;
            overridden.push(name);
        }
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} with overrides {}", overridden.join(", "))
        };
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: origin.clone(),
                message: e.message().to_owned(),
            })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        mandate_token::Alg::parse(&self.signing_alg).map_err(|e| e.to_string())?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "`log_format` must be `text` or `json`, not `{}`",
                self.log_format
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://"))
        {
            return Err(format!(
                "`database_url` must be a `postgres://` URL, not `{}`",
                url.display_safe()
            ));
        }
        let t = &self.tokens;
        let s = &t.stage_max_ttl;
        if t.default_ttl <= 0
            || t.max_ttl <= 0
            || t.execute_write_ttl <= 0
            || s.observe <= 0
            || s.draft <= 0
            || s.execute <= 0
        {
            return Err("token lifetimes in `tokens` must be positive".into());
        }
        if t.default_ttl > t.max_ttl {
            return Err("`tokens.default_ttl` must not exceed `tokens.max_ttl`".into());
        }
        if t.max_chain_depth == 0 || t.max_chain_depth > 16 {
            return Err("`tokens.max_chain_depth` must be between 1 and 16".into());
        }
        validate_carry_claims(&t.carry_claims)?;
        self.validate_console()?;
        if self.audit_retention_days > 36_500 {
            return Err(format!(
                "`audit_retention_days` must be between 0 (keep forever) and 36500, not `{}`",
                self.audit_retention_days
            ));
        }
        let a = &self.approvals;
        if a.ttl <= 0 || a.ttl > 30 * 86_400 {
            return Err("`approvals.ttl` must be between 1 second and 30 days".into());
        }
        if a.poll_interval <= 0 || a.poll_interval > 600 {
            return Err("`approvals.poll_interval` must be between 1 and 600 seconds".into());
        }
        PatternSet::parse(a.scopes.iter().map(String::as_str))
            .map_err(|e| format!("`approvals.scopes`: {e}"))?;
        if let Some(url) = &a.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "`approvals.webhook` must be an http(s) URL, not `{url}`"
            ));
        }
        for i in &self.issuers {
            if i.jwks_url.is_some() == i.jwks_file.is_some() {
                return Err(format!(
                    "issuer `{}` needs exactly one of `jwks_url` and `jwks_file`",
                    i.name
                ));
            }
            if i.audiences.is_empty() {
                return Err(format!("issuer `{}` needs at least one audience", i.name));
            }
        }
        validate_workload(&self.workload)?;
        if self.tls.is_none()
            && let Some(d) = self
                .workload
                .spiffe
                .iter()
                .find(|d| d.x509_bundle_file.is_some())
        {
            return Err(format!(
                "trust domain `{}` has an `x509_bundle_file`, which needs `[tls]` (X.509-SVIDs are presented in mutual TLS)",
                d.trust_domain
            ));
        }
        Ok(())
    }

    /// The issuer URL: configured, or `http://<listen>` (`https://` with `[tls]`).
    pub fn issuer_url(&self, bound: SocketAddr) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{bound}")
            })
            .trim_end_matches('/')
            .to_owned()
    }
}

/// Most claims `tokens.carry_claims` may name.
const MAX_CARRY_CLAIMS: usize = 32;

impl Config {
    fn validate_console(&self) -> Result<(), String> {
        let c = &self.console;
        if !(60..=7 * 24 * 3600).contains(&c.session_ttl) {
            return Err(format!(
                "`console.session_ttl` must be between 60 and 604800 seconds, not `{}`",
                c.session_ttl
            ));
        }
        match (&c.issuer, &c.client_id) {
            (Some(iss), Some(_)) => {
                if self.console_issuer().is_none() {
                    return Err(format!(
                        "`console.issuer` names `{}`, which is not the `name` or `issuer` of \
                         any `[[issuers]]` entry",
                        iss.chars().take(100).collect::<String>()
                    ));
                }
            }
            (Some(_), None) => return Err("`console.issuer` needs `console.client_id`".into()),
            (None, Some(_)) => return Err("`console.client_id` needs `console.issuer`".into()),
            (None, None) if c.client_secret_file.is_some() => {
                return Err("`console.client_secret_file` needs `console.issuer`".into());
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The trusted issuer the console signs people in with, if configured.
    pub fn console_issuer(&self) -> Option<&TrustedIssuerConfig> {
        let want = self.console.issuer.as_deref()?;
        self.issuers
            .iter()
            .find(|i| i.name == want || i.issuer == want)
    }
}

fn validate_carry_claims(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_CARRY_CLAIMS {
        return Err(format!(
            "`tokens.carry_claims` names at most {MAX_CARRY_CLAIMS} claims"
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(format!(
                "`tokens.carry_claims` entry `{name}` must be 1–64 characters"
            ));
        }
        if crate::policy::REGISTERED_CLAIMS.contains(&name.as_str()) || name == "groups" {
            return Err(format!(
                "`tokens.carry_claims` entry `{name}` is a registered claim; only other claims of the user's token can be carried"
            ));
        }
        if names[..i].contains(name) {
            return Err(format!("`tokens.carry_claims` names `{name}` twice"));
        }
    }
    Ok(())
}

fn parse_env_value(v: &str) -> toml::Value {
    // A bare TOML value (number, bool, array, inline table) when it parses as one.
    format!("v = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_owned()))
}

fn set_path(doc: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut cur = doc;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = Config::load(
            None,
            env(&[
                ("MANDATE_LISTEN", "127.0.0.1:9999"),
                ("MANDATE_TOKENS__DEFAULT_TTL", "120"),
                ("MANDATE_MASTER_KEY", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.tokens.default_ttl, 120);
        assert_eq!(c.tokens.max_ttl, 3600);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::load(None, env(&[("MANDATE_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MANDATE_LISTN") && err.contains("listn"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mandate.toml");
        std::fs::write(&p, "[tokens]\ndefault_tll = 3\n").unwrap();
        let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("default_tll") && err.contains("mandate.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let err = Config::load(None, env(&[("MANDATE_SIGNING_ALG", "HS256")])).unwrap_err();
        assert!(err.to_string().contains("HS256"));
        let err = Config::load(None, env(&[("MANDATE_TOKENS__DEFAULT_TTL", "-1")])).unwrap_err();
        assert!(err.to_string().contains("positive"));
    }

    #[test]
    fn x509_authorities_need_tls_and_a_trust_domain_needs_a_bundle() {
        let td = |x509: bool| {
            let mut c = Config::default();
            c.workload.spiffe.push(SpiffeTrustDomain {
                trust_domain: "prod.example".into(),
                bundle_file: None,
                bundle_endpoint: None,
                x509_bundle_file: x509.then(|| PathBuf::from("prod.pem")),
            });
            c
        };
        let err = td(true).validate().unwrap_err();
        assert!(
            err.contains("`x509_bundle_file`, which needs `[tls]`"),
            "{err}"
        );
        let mut with_tls = td(true);
        with_tls.tls = Some(Tls {
            cert_file: "server.pem".into(),
            key_file: "server.key".into(),
        });
        with_tls.validate().unwrap();
        assert_eq!(
            with_tls.issuer_url("127.0.0.1:8443".parse().unwrap()),
            "https://127.0.0.1:8443"
        );
        let err = td(false).validate().unwrap_err();
        assert!(err.contains("needs one of `bundle_file`"), "{err}");
    }

    #[test]
    fn carry_claims_names_are_checked() {
        let c = Config::load(
            None,
            env(&[("MANDATE_TOKENS__CARRY_CLAIMS", r#"["region", "tier"]"#)]),
        )
        .unwrap();
        assert_eq!(c.tokens.carry_claims, ["region", "tier"]);
        for (bad, why) in [
            (r#"["iss"]"#, "registered"),
            (r#"["groups"]"#, "registered"),
            (r#"["scope"]"#, "registered"),
            (r#"[""]"#, "1–64"),
            (r#"["region", "region"]"#, "twice"),
        ] {
            let err = Config::load(None, env(&[("MANDATE_TOKENS__CARRY_CLAIMS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("tokens.carry_claims") && err.contains(why),
                "{bad}: {err}"
            );
        }
        let long = format!("[\"{}\"]", "x".repeat(65));
        let err = Config::load(None, env(&[("MANDATE_TOKENS__CARRY_CLAIMS", &long)])).unwrap_err();
        assert!(err.to_string().contains("1–64"), "{err}");
    }
}
