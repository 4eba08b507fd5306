//! `POST /oauth2/token`: token exchange (RFC 8693) and client credentials, issuing RFC 9068 JWTs,
//! and OpenID CIBA polls for requests held for a human's approval ([`crate::oauth::ciba`]).
//!
//! Every answer — token or error — is preceded by a durable audit event. The client assertion's
//! `jti` is burned in the same commit, so a replay loses even when it races the original.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::claims::AccessClaims;
use mandate_store::{Op, StoreError};
use serde_json::json;

use crate::app::RequestId;
use crate::error::OAuthError;
use crate::oauth::ciba::{self, CIBA};
use crate::oauth::client_auth::authenticate;
use crate::oauth::client_credentials::client_credentials;
use crate::oauth::dpop;
use crate::oauth::exchange::exchange;
use crate::oauth::form::read_form;
use crate::oauth::issue::{NewTask, Outcome};
use crate::state::AppState;
use crate::tls::ClientCertificates;

/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of a JWT.
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token.
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What is known about a request so far, for its audit event.
#[derive(Debug, Default, Clone)]
pub struct Attempt {
    /// The user.
    pub user: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The task.
    pub task: Option<String>,
    /// The requested scope.
    pub scope: Option<String>,
    /// The requested audiences.
    pub audience: Option<String>,
    /// The credential of the current actor.
    pub credential: Option<String>,
    /// The parent token's `jti`, for hops.
    pub parent_jti: Option<String>,
    /// The agent an unauthenticated request claimed to be: recorded in `detail`, never in
    /// `chain`, which only ever names agents that proved themselves.
    pub claimed_client: Option<String>,
}

impl Attempt {
    /// The event of this request, as known so far.
    pub fn event(
        &self,
        kind: &str,
        decision: Decision,
        reason: String,
        rid: &RequestId,
    ) -> NewEvent {
        NewEvent {
            kind: kind.to_owned(),
            user: self.user.clone(),
            chain: self.chain.clone(),
            task: self.task.clone(),
            action: self.scope.clone(),
            resource: self.audience.clone(),
            decision: Some(decision),
            reason,
            policy_ids: Vec::new(),
            request_id: Some(rid.0.clone()),
            credential: self.credential.clone(),
            jti: None,
            detail: match &self.claimed_client {
                Some(c) => json!({ "claimed_client": c }).to_string(),
                None => String::new(),
            },
        }
    }
}

/// Writes a deny event (with `burn`, e.g. the op burning the assertion, in the same unit) and
/// answers with `error`.
pub async fn deny(
    state: &AppState,
    rid: &RequestId,
    kind: &str,
    attempt: &Attempt,
    burn: Option<Op>,
    error: OAuthError,
) -> Response {
    let event = attempt.event(
        kind,
        Decision::Deny,
        format!("{}: {}", error.error, error.description),
        rid,
    );
    let mut ops = Vec::new();
    ops.extend(burn);
    ops.push(Op::Audit(event.clone()));
    match state.store.commit(ops).await {
        Ok(_) => error.into_response(),
        Err(StoreError::Replay(_)) => {
            let replay = OAuthError::invalid_client("client assertion was already used");
            let event = attempt.event(
                kind,
                Decision::Deny,
                format!("invalid_client: {}", replay.description),
                rid,
            );
            match state.store.commit(vec![Op::Audit(event)]).await {
                Ok(_) => replay.into_response(),
                Err(e) => store_failure(e),
            }
        }
        Err(e) => store_failure(e),
    }
}

/// The answer when the store fails: `server_error`, logged.
pub fn store_failure(e: StoreError) -> Response {
    tracing::error!(error = %e, "audit write failed; answering server_error");
    OAuthError::server_error().into_response()
}

/// The token endpoint.
pub async fn token(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    certs: Option<Extension<ClientCertificates>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let certs = certs.map(|Extension(c)| c);
    let now = state.clock.now();
    let mut attempt = Attempt::default();
    let form = match read_form(&headers, body, state.config.limits.body_bytes).await {
        Ok(f) => f,
        Err(e) => return deny(&state, &rid, "token.request", &attempt, None, e).await,
    };
    let grant_type = form.get("grant_type");
    let kind = match grant_type {
        Some(TOKEN_EXCHANGE) => "token.exchange",
        Some("client_credentials") => "token.client_credentials",
        Some(CIBA) => "token.ciba",
        _ => "token.request",
    };
    attempt.scope = form.get("scope").map(|s| s.chars().take(500).collect());
    let auds: Vec<&str> = form
        .all("resource")
        .into_iter()
        .chain(form.all("audience"))
        .collect();
    if !auds.is_empty() {
        attempt.audience = Some(auds.join(" ").chars().take(500).collect());
    }
    attempt.task = form.get("task").map(|t| t.chars().take(128).collect());
    let client = match authenticate(&state, &form, certs.as_ref(), now).await {
        Ok(c) => c,
        Err(f) => {
            attempt.claimed_client = f.claimed.map(|c| c.chars().take(64).collect());
            return deny(&state, &rid, kind, &attempt, None, f.error).await;
        }
    };
    attempt.chain = vec![client.agent.id.as_str().to_owned()];
    attempt.credential = Some(client.credential.clone());
    let mut client = client;
    let proof = match dpop::check_token_request(&state, &headers, &client.agent, now) {
        Ok(p) => p,
        Err(e) => return deny(&state, &rid, kind, &attempt, client.use_once(), e).await,
    };
    client.dpop_jkt = proof.as_ref().map(|p| p.jkt.clone());
    if let Err(wait) = state
        .agent_limit
        .check(client.agent.id.as_str(), state.clock.now_ms())
    {
        let e = OAuthError::slow_down(
            format!(
                "agent `{}` is issuing tokens too fast; retry in {wait} s",
                client.agent.id
            ),
            wait,
        );
        return deny(&state, &rid, kind, &attempt, client.use_once(), e).await;
    }
    if grant_type == Some(CIBA) {
        let proof_burn = proof.as_ref().map(dpop::use_once);
        return ciba::poll(&state, &rid, &form, &client, proof_burn, now, attempt).await;
    }
    let result = match grant_type {
        Some(TOKEN_EXCHANGE) => exchange(&state, &form, &client, now, &mut attempt).await,
        Some("client_credentials") => {
            client_credentials(&state, &form, &client, now, &mut attempt).await
        }
        None => Err(OAuthError::invalid_request("`grant_type` is missing")),
        Some(other) => Err(OAuthError::unsupported_grant_type(format!(
            "grant type `{}` is not supported",
            other.chars().take(80).collect::<String>()
        ))),
    };
    let issued = match result {
        Ok(Outcome::Issued(i)) => *i,
        Ok(Outcome::Escalate(esc)) => {
            return ciba::hold(&state, &rid, kind, &client, *esc, &attempt).await;
        }
        Err(e) => return deny(&state, &rid, kind, &attempt, client.use_once(), e).await,
    };
    let mut event = issued.event;
    event.kind = kind.to_owned();
    event.request_id = Some(rid.0.clone());
    let mut ops: Vec<Op> = client.use_once().into_iter().collect();
    ops.extend(proof.as_ref().map(dpop::use_once));
    ops.extend(issued.new_task.map(NewTask::op));
    ops.push(Op::InsertToken(issued.record));
    ops.push(Op::Audit(event));
    match state.store.commit(ops).await {
        Ok(_) => {}
        Err(StoreError::Replay(key))
            if proof.as_ref().is_some_and(|p| dpop::replay_key(p) == key) =>
        {
            return deny(
                &state,
                &rid,
                kind,
                &attempt,
                None,
                OAuthError::invalid_dpop_proof("the DPoP proof was already used"),
            )
            .await;
        }
        Err(StoreError::Replay(_)) => {
            return deny(
                &state,
                &rid,
                kind,
                &attempt,
                None,
                OAuthError::invalid_client("client assertion was already used"),
            )
            .await;
        }
        Err(StoreError::ParentRevoked(_)) => {
            return deny(
                &state,
                &rid,
                kind,
                &attempt,
                None,
                OAuthError::invalid_grant("subject token has been revoked"),
            )
            .await;
        }
        Err(e) => return store_failure(e),
    }
    token_response(
        &state,
        &issued.token,
        issued.issued_token_type,
        &issued.claims,
        now,
    )
}

/// The successful token response (after its records are durable); counts the issuance in the
/// usage windows.
pub fn token_response(
    state: &AppState,
    token: &str,
    issued_token_type: &str,
    c: &AccessClaims,
    now: i64,
) -> Response {
    for scope in c.scope.split(' ') {
        state
            .usage
            .record(&crate::usage::agent_key(&c.client_id, scope), now);
        if c.sub_profile == mandate_core::claims::SubProfile::User {
            state
                .usage
                .record(&crate::usage::user_key(&c.sub, scope), now);
        }
    }
    let mut resp = axum::Json(json!({
        "access_token": token,
        "issued_token_type": issued_token_type,
        "token_type": if c.cnf.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": c.exp - now,
        "scope": c.scope,
        "task": c.task,
        "stage": c.stage,
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(nonce) =
        dpop::nonces(state).and_then(|n| HeaderValue::from_str(&n.current(now)).ok())
    {
        resp.headers_mut().insert("dpop-nonce", nonce);
    }
    resp
}
