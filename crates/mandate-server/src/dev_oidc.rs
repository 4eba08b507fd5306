//! `--dev`: the built-in test IdP as a minimal OpenID Connect provider, so the console's sign-in
//! (authorization code with PKCE) runs against a real provider in the demo world and in tests.
//!
//! One public client, [`CONSOLE_CLIENT_ID`], with one redirect URI ([`console_redirect_uri`]).
//! The sign-in page offers the demo users and the built-in operator
//! ([`crate::dev::sign_in_users`]); there are no passwords. Codes are one-time, live
//! [`crate::dev::CODE_TTL`] seconds and are kept in memory only.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::{DOCTYPE, Markup, html};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::dev::{CodeError, CodeGrant, DevIdp, OIDC_TOKEN_TTL, sign_in_user, sign_in_users};
use crate::error::{ApiError, OAuthError};
use crate::oauth::form::{Form, parse, read_form};
use crate::state::AppState;

/// The `client_id` of the console, the provider's one client (public: no secret, PKCE).
pub const CONSOLE_CLIENT_ID: &str = "mandate-console";

/// The console's redirect URI for Mandate's issuer `issuer`: the only one the provider accepts.
pub fn console_redirect_uri(issuer: &str) -> String {
    format!("{issuer}/console/auth/callback")
}

/// Longest `state` and `nonce` accepted, in bytes.
const MAX_TEXT: usize = 512;
/// The sign-in page's title.
const TITLE: &str = "Sign in to the demo world";

/// The provider's routes under `/dev-idp` (they answer 404 unless the server runs `--dev`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dev-idp/.well-known/openid-configuration", get(discovery))
        .route(
            "/dev-idp/authorize",
            get(authorize_page).post(authorize_submit),
        )
        .route("/dev-idp/token", post(token))
}

fn not_found() -> Response {
    ApiError::not_found("no test IdP outside `--dev`").into_response()
}

/// `GET /dev-idp/.well-known/openid-configuration`: OpenID Connect Discovery.
async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let Some(idp) = &state.dev else {
        return not_found();
    };
    let iss = &idp.issuer;
    axum::Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [idp.alg()],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid"],
        "claims_supported": [
            "iss", "sub", "aud", "iat", "exp", "auth_time", "nonce", "groups", "region",
        ],
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

// ---- The authorization endpoint ----

/// A validated authorization request.
struct AuthRequest {
    redirect_uri: String,
    scope: String,
    state: String,
    nonce: String,
    code_challenge: String,
}

/// Why an authorization request is refused.
enum Refusal {
    /// The client or redirect URI cannot be trusted: an error page, never a redirect.
    Page(StatusCode, String),
    /// An error sent back to the (registered) redirect URI (RFC 6749 §4.1.2.1).
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

/// At most 60 characters of `s`, for echoing input in a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an authorization request's parameters (the query of a GET, the form of a POST).
fn validate(state: &AppState, form: &Form) -> Result<AuthRequest, Refusal> {
    let page = |m: String| Refusal::Page(StatusCode::BAD_REQUEST, m);
    match form.get("client_id") {
        None => return Err(page("the request names no `client_id`".into())),
        Some(CONSOLE_CLIENT_ID) => {}
        Some(other) => {
            return Err(page(format!(
                "`{}` is not a client of the test identity provider; its only client is \
                 `{CONSOLE_CLIENT_ID}`",
                shown(other)
            )));
        }
    }
    let expected = console_redirect_uri(&state.issuer);
    let redirect_uri = match form.get("redirect_uri") {
        None => return Err(page("the request names no `redirect_uri`".into())),
        Some(uri) if uri == expected => uri.to_owned(),
        Some(other) => {
            return Err(page(format!(
                "`{}` is not a registered redirect URI of `{CONSOLE_CLIENT_ID}`; the only one \
                 is `{expected}`",
                shown(other)
            )));
        }
    };
    let state_param = form
        .get("state")
        .filter(|s| s.len() <= MAX_TEXT)
        .map(str::to_owned);
    let back = |error: &'static str, description: String| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description,
        state: state_param.clone(),
    };
    let invalid = |d: String| back("invalid_request", d);
    match form.get("response_type") {
        Some("code") => {}
        None => return Err(invalid("`response_type` is missing".into())),
        Some(other) => {
            return Err(back(
                "unsupported_response_type",
                format!(
                    "only `response_type=code` is supported, not `{}`",
                    shown(other)
                ),
            ));
        }
    }
    let scope = form.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(back(
            "invalid_scope",
            "`scope` must include `openid`".into(),
        ));
    }
    let text = |name: &str| -> Result<String, Refusal> {
        match form.get(name) {
            None => Err(invalid(format!("`{name}` is missing"))),
            Some(v) if v.len() > MAX_TEXT => {
                Err(invalid(format!("`{name}` is longer than {MAX_TEXT} bytes")))
            }
            Some(v) => Ok(v.to_owned()),
        }
    };
    let state_value = text("state")?;
    let nonce = text("nonce")?;
    match form.get("code_challenge_method") {
        Some("S256") => {}
        None => {
            return Err(invalid(
                "`code_challenge_method` is missing; PKCE with `S256` is required".into(),
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "`code_challenge_method` must be `S256`, not `{}`",
                shown(other)
            )));
        }
    }
    let code_challenge = match form.get("code_challenge") {
        None => {
            return Err(invalid(
                "`code_challenge` is missing; PKCE with `S256` is required".into(),
            ));
        }
        Some(c) if (43..=128).contains(&c.len()) && is_b64url(c) => c.to_owned(),
        Some(_) => {
            return Err(invalid(
                "`code_challenge` must be 43–128 base64url characters".into(),
            ));
        }
    };
    Ok(AuthRequest {
        redirect_uri,
        scope: scope.to_owned(),
        state: state_value,
        nonce,
        code_challenge,
    })
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", q.finish())
}

/// `303 See Other` to `location`.
fn see_other(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the redirect could not be built",
        );
    };
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, value);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn refuse(idp: &DevIdp, r: Refusal) -> Response {
    match r {
        Refusal::Page(status, message) => error_page(status, &message),
        Refusal::Redirect {
            redirect_uri,
            error,
            description,
            state,
        } => {
            let mut params = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &state {
                params.push(("state", s.as_str()));
            }
            params.push(("iss", idp.issuer.as_str()));
            see_other(&with_query(&redirect_uri, &params))
        }
    }
}

/// `GET /dev-idp/authorize`: the sign-in page.
async fn authorize_page(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let Some(idp) = &state.dev else {
        return not_found();
    };
    let form = match parse(query.unwrap_or_default().as_bytes()) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    let req = match validate(&state, &form) {
        Ok(r) => r,
        Err(r) => return refuse(idp, r),
    };
    html_response(StatusCode::OK, sign_in_page(&req))
}

/// `POST /dev-idp/authorize`: the user picked whom to sign in as; issues a code.
async fn authorize_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(idp) = &state.dev else {
        return not_found();
    };
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return error_page(e.status, &e.description),
    };
    let req = match validate(&state, &form) {
        Ok(r) => r,
        Err(r) => return refuse(idp, r),
    };
    let user = match form.get("user") {
        None => return error_page(StatusCode::BAD_REQUEST, "choose a user to sign in as"),
        Some(u) => match sign_in_user(u) {
            Some(user) => user,
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("`{}` is not a user of the test identity provider", shown(u)),
                );
            }
        },
    };
    let now = state.clock.now();
    let grant = CodeGrant {
        client_id: CONSOLE_CLIENT_ID.to_owned(),
        redirect_uri: req.redirect_uri.clone(),
        code_challenge: req.code_challenge,
        nonce: req.nonce,
        sub: user.sub.to_owned(),
        auth_time: now,
    };
    match idp.issue_code(grant, now) {
        Ok(code) => see_other(&with_query(
            &req.redirect_uri,
            &[("code", &code), ("state", &req.state), ("iss", &idp.issuer)],
        )),
        Err(CodeError::Full) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins are in progress; try again in a minute",
        ),
        Err(CodeError::Random) => {
            tracing::error!("the test IdP could not draw a random authorization code");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the sign-in could not be completed; see the server log",
            )
        }
    }
}

// ---- Pages ----

fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                main { (content) }
            }
        }
    }
}

fn sign_in_page(req: &AuthRequest) -> Markup {
    layout(
        TITLE,
        html! {
            h1 { (TITLE) }
            p {
                "This is the built-in test identity provider of " code { "mandate serve --dev" }
                ": there are no passwords, pick whom to sign in as."
            }
            ul class="dev-idp-users" {
                @for user in sign_in_users() {
                    li {
                        form method="post" action="/dev-idp/authorize" {
                            input type="hidden" name="response_type" value="code";
                            input type="hidden" name="client_id" value=(CONSOLE_CLIENT_ID);
                            input type="hidden" name="redirect_uri" value=(req.redirect_uri);
                            input type="hidden" name="scope" value=(req.scope);
                            input type="hidden" name="state" value=(req.state);
                            input type="hidden" name="nonce" value=(req.nonce);
                            input type="hidden" name="code_challenge" value=(req.code_challenge);
                            input type="hidden" name="code_challenge_method" value="S256";
                            input type="hidden" name="user" value=(user.sub);
                            button type="submit" {
                                "Sign in as " (user.sub) " (" (user.groups.join(", ")) ")"
                            }
                        }
                    }
                }
            }
        },
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let markup = layout(
        "Cannot sign in",
        html! {
            h1 { "Cannot sign in" }
            p role="alert" { (message) }
            p { "Go back to the console and sign in again." }
        },
    );
    html_response(status, markup)
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, markup).into_response();
    crate::console::protect(resp.headers_mut(), true);
    resp
}

// ---- The token endpoint ----

/// Whether `v` is a PKCE `code_verifier`: 43–128 characters of `A-Z a-z 0-9 - . _ ~`.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `POST /dev-idp/token`: exchanges a code for an ID token and a user token.
async fn token(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let Some(idp) = &state.dev else {
        return not_found();
    };
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    match exchange(&state, idp, &form) {
        Ok(v) => {
            let mut resp = axum::Json(v).into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

fn exchange(state: &AppState, idp: &DevIdp, form: &Form) -> Result<Value, OAuthError> {
    let now = state.clock.now();
    // A code is used once, whatever comes of this request.
    let grant = form.get("code").and_then(|c| idp.take_code(c, now));
    match form.get("grant_type") {
        Some("authorization_code") => {}
        None => return Err(OAuthError::invalid_request("`grant_type` is missing")),
        Some(other) => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "only `authorization_code` is supported, not `{}`",
                shown(other)
            )));
        }
    }
    match form.get("client_id") {
        Some(CONSOLE_CLIENT_ID) => {}
        None => return Err(OAuthError::invalid_request("`client_id` is missing")),
        Some(other) => {
            return Err(OAuthError::invalid_client(format!(
                "`{}` is not a client of the test identity provider",
                shown(other)
            )));
        }
    }
    let required = |name: &str| {
        form.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is missing")))
    };
    required("code")?;
    let redirect_uri = required("redirect_uri")?;
    let verifier = form.get("code_verifier").ok_or_else(|| {
        OAuthError::invalid_request("`code_verifier` is missing; PKCE is required")
    })?;
    let grant = grant
        .ok_or_else(|| OAuthError::invalid_grant("the code is unknown, expired or already used"))?;
    if grant.client_id != CONSOLE_CLIENT_ID {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if grant.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "`redirect_uri` differs from the authorization request's",
        ));
    }
    if !is_verifier(verifier) {
        return Err(OAuthError::invalid_grant(
            "`code_verifier` must be 43–128 characters of `A-Z a-z 0-9 - . _ ~`",
        ));
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if computed != grant.code_challenge {
        return Err(OAuthError::invalid_grant(
            "`code_verifier` does not match the `code_challenge`",
        ));
    }
    let Some(user) = sign_in_user(&grant.sub) else {
        return Err(OAuthError::invalid_grant(
            "the user of the code no longer exists",
        ));
    };
    let mut extra = serde_json::Map::new();
    if let Some(region) = user.region() {
        extra.insert("region".into(), json!(region));
    }
    let minted = idp
        .user_token_with(user.sub, &user.group_list(), OIDC_TOKEN_TTL, now, &extra)
        .and_then(|access| {
            idp.id_token(user, CONSOLE_CLIENT_ID, &grant.nonce, grant.auth_time, now)
                .map(|id| (access, id))
        });
    let (access_token, id_token) = minted.map_err(|e| {
        tracing::error!(error = %e, "the test IdP could not sign tokens");
        OAuthError::server_error()
    })?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": OIDC_TOKEN_TTL,
        "id_token": id_token,
        "scope": "openid",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_and_challenges_are_checked_for_shape() {
        assert!(is_verifier(&"a".repeat(43)));
        assert!(is_verifier(&"A-._~9".repeat(10)));
        assert!(!is_verifier(&"a".repeat(42)));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(43))));
        assert!(is_b64url("abc-_XYZ09"));
        assert!(!is_b64url("abc="));
    }

    #[test]
    fn queries_are_appended_encoded() {
        assert_eq!(
            with_query("https://x/cb", &[("code", "a b"), ("state", "&=")]),
            "https://x/cb?code=a+b&state=%26%3D"
        );
        assert_eq!(
            with_query("https://x/cb?a=1", &[("b", "2")]),
            "https://x/cb?a=1&b=2"
        );
    }

    #[test]
    fn long_input_is_shortened_in_messages() {
        assert_eq!(shown("abc"), "abc");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 61);
        assert_eq!(shown("a\nb"), "ab");
    }
}
