//! Admin authentication: `Authorization: Bearer <admin credential>` on every `/v1` route.
//!
//! Credentials are random 32-byte secrets, stored only as their SHA-256. Lookup is by that hash,
//! so comparison time reveals nothing about the secret itself.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of admin credentials, so they are recognisable in a secret scanner.
pub const CREDENTIAL_PREFIX: &str = "mnd_admin_";

/// What an admin credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read-only: agents, tasks, audit, keys.
    Auditor,
    /// A resource server's verifier: the revocation event stream and introspection, nothing
    /// else.
    Verifier,
    /// A standalone gateway: what a verifier may do, plus the `/v1/gateway/*` routes (policy
    /// bundle, secret values, its audit events, suspensions). It is the only role that reaches
    /// those routes.
    Gateway,
}

impl Role {
    /// Parses `admin`, `auditor`, `verifier` or `gateway`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "verifier" => Some(Role::Verifier),
            "gateway" => Some(Role::Gateway),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Verifier => "verifier",
            Role::Gateway => "gateway",
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The credential's id.
    pub id: String,
    /// Its role.
    pub role: Role,
}

impl Admin {
    /// Refuses callers without the `admin` role.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Auditor | Role::Verifier | Role::Gateway => Err(ApiError::forbidden(format!(
                "this credential has the `{}` role; the operation needs `admin`",
                self.role.as_str()
            ))),
        }
    }

    /// `admin:<id>`, as written in audit events.
    pub fn label(&self) -> String {
        format!("admin:{}", self.id)
    }
}

/// SHA-256 hex of a credential secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Finds the admin credential a bearer token names, if any.
pub fn admin_from_bearer(state: &AppState, value: Option<&str>) -> Option<Admin> {
    let (scheme, token) = value?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    if !token.starts_with(CREDENTIAL_PREFIX) || token.len() > 200 {
        return None;
    }
    let cred = state.admins.find(&hash_secret(token))?;
    Some(Admin {
        id: cred.id,
        role: Role::parse(&cred.role)?,
    })
}

/// Any valid credential, whatever its role.
fn any_credential(parts: &Parts, state: &AppState) -> Result<Admin, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if value.is_none() {
        return Err(ApiError::unauthorized(
            "admin credential required: send `Authorization: Bearer <credential>`",
        ));
    }
    admin_from_bearer(state, value)
        .ok_or_else(|| ApiError::unauthorized("admin credential is not valid"))
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    /// An `admin` or `auditor` credential; `verifier` credentials reach only the revocation
    /// stream (see [`StreamReader`]), `gateway` credentials that and the gateway's routes (see
    /// [`GatewayCaller`]).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let admin = any_credential(parts, state)?;
        if admin.role == Role::Verifier {
            return Err(ApiError::forbidden(
                "this credential has the `verifier` role; it may only follow the revocation \
                 stream and introspect tokens",
            ));
        }
        if admin.role == Role::Gateway {
            return Err(ApiError::forbidden(
                "this credential has the `gateway` role; it may only use `/v1/gateway/*`, follow \
                 the revocation stream and introspect tokens",
            ));
        }
        Ok(admin)
    }
}

/// A caller allowed to follow the revocation stream: any role.
#[derive(Debug, Clone)]
pub struct StreamReader(pub Admin);

impl FromRequestParts<Arc<AppState>> for StreamReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        any_credential(parts, state).map(StreamReader)
    }
}

/// A standalone gateway: a credential with the `gateway` role, and no other (an `admin`
/// credential is refused too, so that no admin can read a secret's value).
#[derive(Debug, Clone)]
pub struct GatewayCaller(pub Admin);

impl GatewayCaller {
    /// `gateway:<id>`, as written in audit events.
    pub fn label(&self) -> String {
        format!("gateway:{}", self.0.id)
    }
}

impl FromRequestParts<Arc<AppState>> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = any_credential(parts, state)?;
        if caller.role != Role::Gateway {
            return Err(ApiError::forbidden(format!(
                "this credential has the `{}` role; `/v1/gateway/*` needs the `gateway` role",
                caller.role.as_str()
            )));
        }
        Ok(GatewayCaller(caller))
    }
}
