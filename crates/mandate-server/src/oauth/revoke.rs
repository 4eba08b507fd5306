//! `POST /oauth2/revoke` (RFC 7009). An agent revokes a token it holds or that was delegated
//! through it; the token and every token derived from it end. Per RFC 7009 §2.2, an invalid or
//! unknown token is answered with 200 all the same.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::revocation::RevocationKind;
use mandate_store::StoreError;

use crate::app::RequestId;
use crate::error::OAuthError;
use crate::oauth::client_auth::authenticate;
use crate::oauth::form::read_form;
use crate::state::AppState;
use crate::tls::ClientCertificates;

/// The revocation endpoint.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    certs: Option<Extension<ClientCertificates>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let certs = certs.map(|Extension(c)| c);
    let now = state.clock.now();
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let agent = match authenticate(&state, &form, certs.as_ref(), now).await {
        Ok(a) => a,
        Err(f) => return f.error.into_response(),
    };
    match state
        .store
        .commit(agent.use_once().into_iter().collect())
        .await
    {
        Ok(_) => {}
        Err(StoreError::Replay(_)) => {
            return OAuthError::invalid_client("client assertion was already used").into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation commit failed");
            return OAuthError::server_error().into_response();
        }
    }
    let Some(token) = form.get("token") else {
        return OAuthError::invalid_request("`token` is missing").into_response();
    };
    let Ok(live) = crate::live::check(&state, token, now) else {
        // Invalid, expired or already revoked: nothing to do (RFC 7009 §2.2).
        return StatusCode::OK.into_response();
    };
    if !live.chain.contains(&agent.agent.id) {
        return OAuthError::unauthorized_client(
            "the token was not issued to this agent nor delegated through it",
        )
        .into_response();
    }
    let by = format!("agent:{}", agent.agent.id);
    let mut req = crate::revocation::Request::new(RevocationKind::Token, &live.claims.jti, &by);
    req.reason = "revoked through RFC 7009".into();
    req.request_id = Some(rid.0);
    match crate::revocation::revoke(&state, req).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(_) => OAuthError::server_error().into_response(),
    }
}
