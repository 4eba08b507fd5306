//! `POST /oauth2/introspect` (RFC 7662). Callers authenticate as an agent (client assertion) or
//! with an admin credential. A token that is expired, revoked, derived from a revoked token, or
//! whose chain holds an inactive agent is `{"active": false}`; a live one is described in full,
//! `act` included.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_store::Op;
use serde_json::json;

use crate::admin::auth::admin_from_bearer;
use crate::app::RequestId;
use crate::error::OAuthError;
use crate::oauth::client_auth::authenticate;
use crate::oauth::form::read_form;
use crate::state::AppState;
use crate::tls::ClientCertificates;

/// The introspection endpoint.
pub async fn introspect(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    certs: Option<Extension<ClientCertificates>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let certs = certs.map(|Extension(c)| c);
    let now = state.clock.now();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (caller, burn) = match admin_from_bearer(&state, bearer) {
        Some(a) => (a.label(), None),
        None => match authenticate(&state, &form, certs.as_ref(), now).await {
            Ok(agent) => (format!("agent:{}", agent.agent.id), agent.use_once()),
            Err(f) => return f.error.into_response(),
        },
    };
    let Some(token) = form.get("token") else {
        return OAuthError::invalid_request("`token` is missing").into_response();
    };
    let mut ops: Vec<Op> = burn.into_iter().collect();
    let answer = match crate::live::check(&state, token, now) {
        Ok(live) => {
            let c = &live.claims;
            let mut v = json!({
                "active": true,
                "iss": c.iss, "sub": c.sub, "sub_profile": c.sub_profile, "aud": c.aud,
                "client_id": c.client_id, "iat": c.iat, "nbf": c.nbf, "exp": c.exp,
                "jti": c.jti, "scope": c.scope,
                "token_type": if c.cnf.is_some() { "DPoP" } else { "Bearer" },
                "task": c.task, "stage": c.stage, "credential": c.credential,
            });
            if let (Some(obj), Some(act)) = (v.as_object_mut(), &c.act) {
                obj.insert("act".into(), act.clone());
            }
            // RFC 9449 §6.2: the key the token is bound to.
            if let (Some(obj), Some(cnf)) = (v.as_object_mut(), &c.cnf) {
                obj.insert("cnf".into(), cnf.clone());
            }
            if let Some(obj) = v.as_object_mut() {
                if !c.groups.is_empty() {
                    obj.insert("groups".into(), json!(c.groups));
                }
                if !c.user_tags.is_empty() {
                    obj.insert("user_tags".into(), json!(c.user_tags));
                }
            }
            v
        }
        Err(why) => {
            ops.push(Op::Audit(NewEvent {
                kind: "token.introspect".into(),
                decision: Some(Decision::Deny),
                reason: why.to_string(),
                request_id: Some(rid.0.clone()),
                detail: json!({ "caller": caller }).to_string(),
                ..Default::default()
            }));
            json!({ "active": false })
        }
    };
    if !ops.is_empty() {
        match state.store.commit(ops).await {
            Ok(_) => {}
            Err(mandate_store::StoreError::Replay(_)) => {
                return OAuthError::invalid_client("client assertion was already used")
                    .into_response();
            }
            Err(e) => {
                tracing::error!(error = %e, "introspection commit failed");
                return OAuthError::server_error().into_response();
            }
        }
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response()
}
