//! Who is signed in: the console's session cookie, the signed-in [`Person`] and their roles, and
//! the CSRF check every form post goes through.
//!
//! A session is a cookie sealed with the master key (ChaCha20-Poly1305, so several nodes sharing
//! the master key share sessions, and nobody can read or forge one). It is `HttpOnly`,
//! `SameSite=Lax`, scoped to `/console`, and `Secure` whenever the browser will keep a secure
//! cookie (an `https` issuer, or loopback). Each request re-checks the person against the
//! revocation index: revoking a user ends their console sessions too.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_core::agent::Agent;
use mandate_core::chain::DelegationChain;
use mandate_core::ids::UserPrincipal;
use mandate_core::revocation::TokenFacts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Failure;
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "mandate_console";
/// Associated data binding a sealed session to its purpose.
const AAD: &[u8] = b"mandate console session v1";
/// The form field (and `X-CSRF-Token` header) carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The largest cookie value accepted.
const MAX_COOKIE: usize = 4096;

/// How a person signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedInWith {
    /// OpenID Connect at the configured identity provider.
    Oidc,
    /// The one-time link `mandate serve --dev` prints.
    DevLink,
}

/// What the sealed cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The identity provider's `iss`.
    pub iss: String,
    /// The person's subject there.
    pub sub: String,
    /// Their groups at sign-in.
    pub groups: Vec<String>,
    /// When the session began.
    pub iat: i64,
    /// When it ends.
    pub exp: i64,
    /// The session's CSRF token.
    pub csrf: String,
    /// How they signed in.
    pub via: SignedInWith,
}

impl Session {
    /// A new session for `user` from `now`, lasting the configured `session_ttl`.
    pub fn begin(
        state: &AppState,
        user: &UserPrincipal,
        via: SignedInWith,
        now: i64,
    ) -> Result<Session, ApiError> {
        Ok(Session {
            iss: user.issuer.clone(),
            sub: user.subject.clone(),
            groups: user.groups.clone(),
            iat: now,
            exp: now + state.config.console.session_ttl,
            csrf: random()?,
            via,
        })
    }

    /// The `Set-Cookie` value carrying this session.
    pub fn cookie(&self, state: &AppState) -> Result<String, ApiError> {
        let json = serde_json::to_vec(self).map_err(|_| ApiError::server_error())?;
        let sealed = state.master.seal(&json, AAD).map_err(|e| {
            tracing::error!(error = %e, "cannot seal a console session");
            ApiError::server_error()
        })?;
        let max_age = (self.exp - self.iat).max(0);
        Ok(cookie_header(
            state,
            COOKIE,
            &URL_SAFE_NO_PAD.encode(sealed),
            "/console",
            max_age,
        ))
    }

    /// Opens a cookie value; `None` when it is not one of ours or has expired.
    fn open(state: &AppState, value: &str, now: i64) -> Option<Session> {
        if value.len() > MAX_COOKIE {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        let json = state.master.open(&sealed, AAD, "session").ok()?;
        let s: Session = serde_json::from_slice(&json).ok()?;
        (s.exp > now).then_some(s)
    }
}

/// A `Set-Cookie` header value with the console's attributes.
pub fn cookie_header(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
) -> String {
    let secure = if secure_cookies(&state.issuer) {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// Whether browsers keep `Secure` cookies for this issuer: an `https` URL, or plain HTTP on
/// loopback (which browsers treat as a secure context).
fn secure_cookies(issuer: &str) -> bool {
    if issuer.starts_with("https://") {
        return true;
    }
    let host = issuer
        .strip_prefix("http://")
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

/// A random URL-safe token (32 bytes).
pub fn random() -> Result<String, ApiError> {
    mandate_token::random_id::<32>().map_err(|_| ApiError::server_error())
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What a signed-in person may do in the console, from their groups and the agents they own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// In one of `console.admin_groups`: everything.
    pub admin: bool,
    /// In one of `console.auditor_groups`: reads everything.
    pub auditor: bool,
    /// In one of `approvals.approver_groups`: decides approvals for every agent.
    pub approver: bool,
}

/// The person signed in to the console.
#[derive(Debug, Clone)]
pub struct Person {
    /// Who, as their identity provider named them.
    pub user: UserPrincipal,
    /// Their roles.
    pub roles: Roles,
    /// The session (for its CSRF token and sign-in method).
    pub session: Session,
}

impl Person {
    fn from_session(state: &AppState, session: Session) -> Person {
        let c = &state.config.console;
        let any = |groups: &[String]| session.groups.iter().any(|g| groups.contains(g));
        let roles = Roles {
            admin: any(&c.admin_groups),
            auditor: any(&c.auditor_groups),
            approver: any(&state.config.approvals.approver_groups),
        };
        Person {
            user: UserPrincipal {
                issuer: session.iss.clone(),
                subject: session.sub.clone(),
                groups: session.groups.clone(),
            },
            roles,
            session,
        }
    }

    /// The person's subject.
    pub fn subject(&self) -> &str {
        &self.user.subject
    }

    /// The session's CSRF token, for forms.
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }

    /// How many agents they own.
    pub fn owned_agents(&self, state: &AppState) -> usize {
        state
            .directory
            .all()
            .iter()
            .filter(|a| self.owns(a))
            .count()
    }

    /// Admins and auditors see every agent, task, audit event and report.
    pub fn sees_everything(&self) -> bool {
        self.roles.admin || self.roles.auditor
    }

    /// Whether `agent` is theirs.
    pub fn owns(&self, agent: &Agent) -> bool {
        agent.owner == self.user.subject
    }

    /// Whether they may look at `agent`: admins, auditors and its owner.
    pub fn may_see_agent(&self, agent: &Agent) -> bool {
        self.sees_everything() || self.owns(agent)
    }

    /// Whether they may suspend, resume or retire `agent`: admins and its owner.
    pub fn may_manage_agent(&self, agent: &Agent) -> bool {
        self.roles.admin || self.owns(agent)
    }

    /// The role names, for the header.
    pub fn role_names(&self, owned_agents: usize) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.roles.admin {
            names.push("admin");
        }
        if self.roles.auditor {
            names.push("auditor");
        }
        if self.roles.approver {
            names.push("approver");
        }
        if owned_agents > 0 {
            names.push("owner");
        }
        names
    }

    /// Refuses anyone but admins and auditors.
    pub fn require_reader(&self, what: &str) -> Result<(), Failure> {
        if self.sees_everything() {
            Ok(())
        } else {
            Err(Failure::from(ApiError::forbidden(format!(
                "{what} is for admins and auditors; `{}` is neither",
                self.user.subject
            ))))
        }
    }
}

/// The session from the request, if any and still valid (not expired, the user not revoked).
pub fn current(state: &AppState, headers: &HeaderMap) -> Option<Person> {
    let now = state.clock.now();
    let session = Session::open(state, cookie_value(headers, COOKIE)?, now)?;
    if is_revoked(state, &session) {
        return None;
    }
    Some(Person::from_session(state, session))
}

/// Whether the session's user was revoked after the session began.
pub fn is_revoked(state: &AppState, session: &Session) -> bool {
    let chain = DelegationChain::new(Vec::new());
    let facts = TokenFacts {
        jti: "",
        task: "",
        user: Some(&session.sub),
        chain: &chain,
        iat: session.iat,
    };
    state.revocations.with(|idx| idx.check(&facts)).is_some()
}

impl FromRequestParts<Arc<AppState>> for Person {
    type Rejection = Failure;

    /// A signed-in person; otherwise the browser is sent to the sign-in page.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        current(state, &parts.headers).ok_or(Failure::SignIn)
    }
}

/// A form posted by a signed-in person, with its CSRF token checked: the `csrf` field (or the
/// `X-CSRF-Token` header, for htmx requests) must equal the session's. A post without it, or
/// from another site, is refused with 403 and changes nothing.
#[derive(Debug)]
pub struct Posted<T> {
    /// Who posted it.
    pub person: Person,
    /// The form's fields.
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Posted<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let person = Person::from_request_parts(&mut parts, state).await?;
        let forbidden = |m: &str| Failure::from(ApiError::forbidden(m));
        if parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site")
        {
            return Err(forbidden(
                "a form from another site cannot change anything here",
            ));
        }
        let limit = state.config.limits.body_bytes;
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::bad_request(format!("the form is larger than {limit} bytes")))?;
        let header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let field = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned());
        let given = field.or(header).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), person.csrf().as_bytes()) {
            return Err(forbidden(
                "this form has no valid CSRF token (it expired, or did not come from the \
                 console): reload the page and try again",
            ));
        }
        let form: T = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the form is not valid: {e}")))?;
        Ok(Posted { person, form })
    }
}

/// Compares two secrets without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_on_https_and_loopback_only() {
        assert!(secure_cookies("https://mandate.example.com"));
        assert!(secure_cookies("http://127.0.0.1:8080"));
        assert!(secure_cookies("http://localhost:8080/base"));
        assert!(secure_cookies("http://[::1]:8080"));
        assert!(!secure_cookies("http://mandate.internal:8080"));
        assert!(!secure_cookies("http://10.0.0.7"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; mandate_console=xyz".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "mandate"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
