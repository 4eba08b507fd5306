//! Signing in to the console: OpenID Connect authorization code with PKCE (RFC 7636) at the
//! configured identity provider — one of the trusted issuers, so the ID token is checked with
//! the same keys as users' tokens — and, in `--dev`, a one-time link printed at start.
//!
//! The flow's secrets (`state`, `nonce`, the PKCE verifier) travel in a short-lived sealed
//! cookie scoped to `/console/auth`, so any node can finish a sign-in another node began.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_core::ids::UserPrincipal;
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Failure;
use super::session::{self, Posted, Session, SignedInWith, cookie_header, cookie_value};
use super::view;
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie holding a sign-in in progress.
const LOGIN_COOKIE: &str = "mandate_console_login";
/// Its path: only the callback reads it.
const LOGIN_PATH: &str = "/console/auth";
/// Associated data of the sealed sign-in cookie.
const LOGIN_AAD: &[u8] = b"mandate console sign-in v1";
/// How long a person has to finish signing in at their identity provider, seconds.
const LOGIN_TTL: i64 = 600;

/// The subject the `--dev` one-time link signs in as (in group `admin`).
pub const DEV_OPERATOR: &str = "admin@example.com";

/// Sign-in state shared by the console's handlers: the `--dev` one-time link and the HTTP
/// client that talks to the identity provider.
pub struct Logins {
    dev_link: Mutex<Option<String>>,
    http: reqwest::Client,
}

impl Default for Logins {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Logins {
            dev_link: Mutex::new(None),
            http,
        }
    }
}

impl Logins {
    /// Makes a new one-time sign-in link (the `--dev` server prints it at start); the previous
    /// one stops working.
    pub fn issue_dev_link(&self, issuer: &str) -> Result<String, ApiError> {
        let code = session::random()?;
        let link = format!("{issuer}/console/sign-in/link/{code}");
        if let Ok(mut slot) = self.dev_link.lock() {
            *slot = Some(code);
        }
        Ok(link)
    }

    /// Takes the one-time code if `given` is it.
    fn redeem(&self, given: &str) -> bool {
        let Ok(mut slot) = self.dev_link.lock() else {
            return false;
        };
        let matches = slot.as_deref().is_some_and(|code| {
            code.len() == given.len()
                && code
                    .bytes()
                    .zip(given.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if matches {
            *slot = None;
        }
        matches
    }
}

/// The identity provider the console signs people in with.
struct Provider {
    /// Its `iss`.
    issuer: String,
    /// The name shown on the button.
    name: String,
    client_id: String,
    client_secret: Option<String>,
}

fn provider(state: &AppState) -> Result<Option<Provider>, ApiError> {
    let c = &state.config.console;
    if let (Some(cfg), Some(client_id)) = (state.config.console_issuer(), &c.client_id) {
        let client_secret = match &c.client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot read `console.client_secret_file`");
                        ApiError::server_error()
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        return Ok(Some(Provider {
            issuer: cfg.issuer.clone(),
            name: cfg.name.clone(),
            client_id: client_id.clone(),
            client_secret,
        }));
    }
    Ok(state.dev.as_ref().map(|dev| Provider {
        issuer: dev.issuer.clone(),
        name: "the dev identity provider".into(),
        client_id: crate::dev_oidc::CONSOLE_CLIENT_ID.into(),
        client_secret: None,
    }))
}

/// The console's redirect URI, registered at the identity provider.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}/console/auth/callback", state.issuer)
}

/// `GET /console/sign-in`.
pub async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if session::current(&state, &headers).is_some() {
        return Redirect::to("/console").into_response();
    }
    let provider = provider(&state).ok().flatten();
    view::bare(
        "Sign in",
        html! {
            p { "The console is for the people in the loop: approvers, agent owners, auditors and admins." }
            @if let Some(p) = &provider {
                p { a.button href="/console/auth/start" { "Sign in with " (p.name) } }
            } @else {
                p.message {
                    "OpenID Connect sign-in is not configured: set `console.issuer` and "
                    "`console.client_id` in mandate.toml."
                }
            }
            @if state.dev.is_some() {
                p.hint { "Or open the one-time sign-in link that `mandate serve --dev` printed (it signs you in as " (DEV_OPERATOR) ", an admin)." }
            }
        },
    )
    .into_response()
}

/// `GET /console/sign-in/link/{code}`: the `--dev` one-time link.
pub async fn dev_link(
    State(state): State<Arc<AppState>>,
    Path(code): Path<String>,
) -> Result<Response, Failure> {
    let dev = state
        .dev
        .as_ref()
        .ok_or_else(|| ApiError::not_found("sign-in links exist only in `--dev`"))?;
    if code.len() > 128 || !state.console.redeem(&code) {
        return Err(ApiError::forbidden(
            "this sign-in link is not valid: it was used already, or the server restarted (each \
             start prints a new one)",
        )
        .into());
    }
    let user = UserPrincipal {
        issuer: dev.issuer.clone(),
        subject: DEV_OPERATOR.into(),
        groups: vec!["admin".into()],
    };
    let now = state.clock.now();
    let session = Session::begin(&state, &user, SignedInWith::DevLink, now)?;
    tracing::info!(user = DEV_OPERATOR, "console sign-in with the dev link");
    signed_in(&state, &session)
}

/// Sets the session cookie and goes to the dashboard.
fn signed_in(state: &AppState, session: &Session) -> Result<Response, Failure> {
    let cookie = session.cookie(state)?;
    let clear = cookie_header(state, LOGIN_COOKIE, "", LOGIN_PATH, 0);
    let mut resp = Redirect::to("/console").into_response();
    let h = resp.headers_mut();
    for c in [cookie, clear] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

/// A sign-in in progress.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    iss: String,
    exp: i64,
}

/// The provider's OpenID configuration: the two endpoints the console uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

async fn discover(state: &AppState, issuer: &str) -> Result<Discovery, ApiError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let unavailable = |why: String| {
        tracing::warn!(%url, error = %why, "console: identity provider discovery failed");
        ApiError {
            status: StatusCode::BAD_GATEWAY,
            code: "bad_gateway",
            message: format!("the identity provider at `{issuer}` did not answer: {why}"),
        }
    };
    let resp = state
        .console
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(unavailable(format!("status {}", resp.status().as_u16())));
    }
    let d: Discovery = resp
        .json()
        .await
        .map_err(|e| unavailable(format!("its OpenID configuration is not valid: {e}")))?;
    if d.issuer != issuer {
        return Err(unavailable(format!(
            "its OpenID configuration names the issuer `{}`",
            d.issuer.chars().take(100).collect::<String>()
        )));
    }
    Ok(d)
}

/// `GET /console/auth/start`: off to the identity provider.
pub async fn start(State(state): State<Arc<AppState>>) -> Result<Response, Failure> {
    let provider = provider(&state)?.ok_or_else(|| {
        ApiError::not_found(
            "OpenID Connect sign-in is not configured: set `console.issuer` and \
             `console.client_id`",
        )
    })?;
    let d = discover(&state, &provider.issuer).await?;
    let pending = Pending {
        state: session::random()?,
        nonce: session::random()?,
        verifier: session::random()?,
        iss: provider.issuer.clone(),
        exp: state.clock.now() + LOGIN_TTL,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.client_id)
        .append_pair("redirect_uri", &redirect_uri(&state))
        .append_pair("scope", "openid")
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let json = serde_json::to_vec(&pending).map_err(|_| ApiError::server_error())?;
    let sealed = state
        .master
        .seal(&json, LOGIN_AAD)
        .map_err(|_| ApiError::server_error())?;
    let cookie = cookie_header(
        &state,
        LOGIN_COOKIE,
        &URL_SAFE_NO_PAD.encode(sealed),
        LOGIN_PATH,
        LOGIN_TTL,
    );
    let mut resp =
        Redirect::to(&format!("{}{sep}{query}", d.authorization_endpoint)).into_response();
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The callback's query: a code, or an error (RFC 6749 §4.1.2).
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sign_in_failed(why: impl std::fmt::Display) -> Failure {
    Failure::from(ApiError::unauthorized(format!("sign-in failed: {why}")))
}

/// `GET /console/auth/callback`: back from the identity provider with a code.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Result<Response, Failure> {
    let now = state.clock.now();
    let pending = cookie_value(&headers, LOGIN_COOKIE)
        .filter(|v| v.len() <= 4096)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|sealed| state.master.open(&sealed, LOGIN_AAD, "sign-in").ok())
        .and_then(|json| serde_json::from_slice::<Pending>(&json).ok())
        .filter(|p| p.exp > now)
        .ok_or_else(|| sign_in_failed("no sign-in was started in this browser, or it took longer than 10 minutes; start again"))?;
    if q.state.as_deref() != Some(pending.state.as_str()) {
        return Err(sign_in_failed(
            "the identity provider's answer does not belong to this sign-in (`state` differs)",
        ));
    }
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(sign_in_failed(format!(
            "the identity provider answered `{}`: {}",
            error.chars().take(64).collect::<String>(),
            detail.chars().take(300).collect::<String>()
        )));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| sign_in_failed("the identity provider sent no `code`"))?;
    let provider = provider(&state)?
        .filter(|p| p.issuer == pending.iss)
        .ok_or_else(|| sign_in_failed("the identity provider is no longer configured"))?;
    let d = discover(&state, &provider.issuer).await?;
    let id_token = redeem_code(&state, &provider, &d, &code, &pending.verifier).await?;
    let (user, claims) = state
        .idps
        .verify_id_token(
            &id_token,
            &provider.issuer,
            &provider.client_id,
            now,
            state.config.tokens.leeway,
        )
        .await
        .map_err(|e| sign_in_failed(format!("the ID token is not valid: {e}")))?;
    if claims.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
        return Err(sign_in_failed(
            "the ID token's `nonce` does not match this sign-in",
        ));
    }
    let mut session = Session::begin(&state, &user, SignedInWith::Oidc, now)?;
    // The identity provider's `iat` decides whether a user revocation applies, as for users'
    // tokens everywhere else.
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        session.iat = iat.min(now);
    }
    if session::is_revoked(&state, &session) {
        return Err(sign_in_failed(format!(
            "user `{}` has been revoked",
            user.subject
        )));
    }
    tracing::info!(user = %user.subject, "console sign-in");
    signed_in(&state, &session)
}

/// Exchanges the code for tokens at the provider's token endpoint; returns the ID token.
async fn redeem_code(
    state: &AppState,
    provider: &Provider,
    d: &Discovery,
    code: &str,
    verifier: &str,
) -> Result<String, Failure> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &redirect_uri(state)),
        ("client_id", &provider.client_id),
        ("code_verifier", verifier),
    ];
    let mut req = state.console.http.post(&d.token_endpoint).form(&form);
    if let Some(secret) = &provider.client_secret {
        req = req.basic_auth(&provider.client_id, Some(secret));
    }
    let resp = req.send().await.map_err(|e| {
        sign_in_failed(format!(
            "the identity provider's token endpoint did not answer: {e}"
        ))
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
        let detail = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(sign_in_failed(format!(
            "the identity provider refused the code: `{}` {}",
            error.chars().take(64).collect::<String>(),
            detail.chars().take(300).collect::<String>()
        )));
    }
    body.get("id_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| sign_in_failed("the identity provider returned no `id_token`"))
}

/// `POST /console/sign-out`.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    posted: Posted<std::collections::HashMap<String, String>>,
) -> Response {
    tracing::info!(user = %posted.person.subject(), "console sign-out");
    let clear = cookie_header(&state, session::COOKIE, "", "/console", 0);
    let mut resp = view::bare(
        "Signed out",
        html! { p { "You are signed out. " a href="/console/sign-in" { "Sign in again" } } },
    )
    .into_response();
    if let Ok(v) = clear.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
