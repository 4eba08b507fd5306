//! Draft stage on the wire (see [`crate::hold`]): holding a write, answering the agent's polls,
//! and sending an approved write once.
//!
//! * [`Gateway::hold_rest`] / [`Gateway::hold_tool_call`]: the request is kept in an approval
//!   (durably, before the answer) and the agent gets `202` with the proposal id and the URL to
//!   poll — or, for an MCP `tools/call`, a JSON-RPC result saying the same, which a model can read.
//! * `GET /.mandate/proposals/{id}` with the same user's and agent chain's token: `202` while
//!   undecided, `403 access_denied` when denied, `410 expired`, and once sent, the upstream's own
//!   answer (status, headers, body) with `Mandate-Proposal-Status: sent`.
//! * [`Gateway::dispatch`]: claims an approved held write (exactly one claim ever succeeds, so a
//!   second approval, a second gateway or a restart never sends it again), checks that no
//!   revocation reached its token since, sends it with the upstream's credential and a
//!   Transaction Token naming the approver, stores the answer, and records a `gateway.request`
//!   event naming the agent and the approver. [`run_dispatcher`] calls it when decisions land.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, LOCATION};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use mandate_core::approval::{Ask, Dispatch, Status};
use mandate_core::audit::Decision;
use mandate_verify::Principal;
use serde_json::{Value, json};

use super::upstream::Hop;
use super::{Ctx, Gateway, Outcome, ProxyBody, respond};
use crate::authority::Authority;
use crate::forward::prepare_response;
use crate::hold::{
    Delivered, HeldRequest, MAX_DELIVERED_BODY, PROPOSALS_PATH, PollView, binding_message,
    kept_headers, poll_view, same_principal, status_body,
};

/// How often a gateway without decision notifications asks for approved held writes.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// A held write's place in the upstream call: which upstream, what it maps to.
pub(super) struct HoldTarget<'a> {
    pub upstream: usize,
    pub upstream_path: String,
    pub action: &'a str,
    pub resource: &'a str,
}

impl<A: Authority> Gateway<A> {
    fn poll_url(&self, id: &str) -> String {
        format!("{}{PROPOSALS_PATH}/{id}", self.plan.public_url)
    }

    /// Keeps the request in an approval; the approval's id and expiry, or the error answer.
    async fn hold(
        &self,
        ctx: &Ctx,
        p: &Principal,
        parts: &Parts,
        body: Bytes,
        target: &HoldTarget<'_>,
    ) -> Result<(String, i64), Response<ProxyBody>> {
        let held = HeldRequest {
            method: ctx.method.clone(),
            path: ctx.path.clone(),
            query: parts.uri.query().map(str::to_owned),
            upstream: self.plan.upstreams[target.upstream].name.clone(),
            upstream_path: target.upstream_path.clone(),
            headers: kept_headers(&parts.headers),
            body: body.to_vec(),
            action: target.action.to_owned(),
            resource: target.resource.to_owned(),
            claims: p.claims.clone(),
            client_ip: ctx.peer.map(|ip| ip.to_string()),
        };
        let message = binding_message(&held);
        match self.authority.hold(held, message).await {
            Ok(r) => {
                self.record(
                    ctx,
                    Outcome {
                        principal: Some(p),
                        action: Some(target.action),
                        resource: Some(target.resource),
                        decision: Decision::Info,
                        reason: format!("held for approval `{}` (draft stage)", r.id),
                        status: StatusCode::ACCEPTED,
                        approval: Some((r.id.clone(), None)),
                        ..Outcome::deny()
                    },
                );
                Ok((r.id, r.expires_at))
            }
            Err(e) => {
                tracing::error!(error = %e, "a write could not be held for approval");
                let why = "the write could not be held for approval; it was not sent".to_owned();
                self.record(
                    ctx,
                    Outcome {
                        principal: Some(p),
                        action: Some(target.action),
                        resource: Some(target.resource),
                        reason: why.clone(),
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        ..Outcome::deny()
                    },
                );
                Err(respond::retry_after(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &why,
                    1,
                ))
            }
        }
    }

    /// Holds a REST write: `202` with the proposal.
    pub(super) async fn hold_rest(
        &self,
        ctx: &Ctx,
        p: &Principal,
        parts: &Parts,
        body: Bytes,
        target: &HoldTarget<'_>,
    ) -> Response<ProxyBody> {
        let (id, expires_at) = match self.hold(ctx, p, parts, body, target).await {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        let poll = self.poll_url(&id);
        let mut r = respond::json(
            StatusCode::ACCEPTED,
            &json!({
                "status": "pending", "proposal": id, "poll": poll, "expires_at": expires_at,
                "message": "the token is at stage `draft`: this write is held until a human approves it, then sent once; poll the URL for the upstream's answer",
            }),
        );
        if let Ok(v) = HeaderValue::from_str(&poll) {
            r.headers_mut().insert(LOCATION, v);
        }
        r
    }

    /// Holds an MCP `tools/call`: a JSON-RPC result (not an error) that says where to poll.
    pub(super) async fn hold_tool_call(
        &self,
        ctx: &Ctx,
        p: &Principal,
        parts: &Parts,
        body: Bytes,
        rpc_id: &Value,
        target: &HoldTarget<'_>,
    ) -> Response<ProxyBody> {
        let (id, expires_at) = match self.hold(ctx, p, parts, body, target).await {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        let poll = self.poll_url(&id);
        let text = format!(
            "This call was not made yet: the token is at stage `draft`, so `{}` is held for a human's approval (proposal `{id}`). Once approved it is sent once; its result is at GET {poll}.",
            target.action
        );
        respond::json(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": rpc_id, "result": {
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"status": "pending", "proposal": id, "poll": poll, "expires_at": expires_at},
                "isError": false,
            }}),
        )
    }

    /// `GET /.mandate/proposals/{id}`, for the principal that made the held request.
    pub(super) async fn poll_proposal(&self, ctx: &Ctx, p: &Principal) -> Response<ProxyBody> {
        let id = ctx
            .path
            .strip_prefix(PROPOSALS_PATH)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or_default();
        let not_found = || {
            respond::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no proposal with this id was made with this token's user and agents",
            )
        };
        if ctx.method != "GET" {
            let mut r = respond::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "proposals are read with GET",
            );
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return not_found();
        }
        let mut proposal = match self.authority.proposal(id).await {
            Ok(Some(found)) if same_principal(&found.held.claims, &p.claims) => found,
            Ok(_) => return not_found(),
            Err(e) => return unavailable(&e),
        };
        if proposal.approval.status() == Status::Approved && proposal.dispatch == Dispatch::NotSent
        {
            // The dispatcher may not have got to it yet: send it now (the claim keeps it once).
            if let Err(e) = self.dispatch(id).await {
                tracing::warn!(proposal = id, error = %e, "held write not sent on poll");
            }
            match self.authority.proposal(id).await {
                Ok(Some(again)) => proposal = again,
                Ok(None) => return not_found(),
                Err(e) => return unavailable(&e),
            }
        }
        let now = self.authority.now_ms().div_euclid(1000);
        let view = poll_view(&proposal, now);
        let poll = self.poll_url(id);
        let (status, body) = match &view {
            PollView::Delivered(d) => return delivered_answer(id, d),
            PollView::Pending { .. } => (StatusCode::ACCEPTED, status_body(id, &view, &poll)),
            PollView::Denied { .. } => (StatusCode::FORBIDDEN, status_body(id, &view, &poll)),
            PollView::Expired => (StatusCode::GONE, status_body(id, &view, &poll)),
        };
        respond::json(status, &body)
    }

    /// Sends approved held write `id` if this gateway wins its claim; `Ok(false)` when it was
    /// not approved, not a held write, or already claimed.
    pub async fn dispatch(&self, id: &str) -> Result<bool, String> {
        let Some(proposal) = self.authority.proposal(id).await? else {
            return Ok(false);
        };
        let Some(decided) = proposal.approval.decided.clone().filter(|d| d.approved) else {
            return Ok(false);
        };
        if !matches!(proposal.approval.ask, Ask::HeldWrite { .. })
            || proposal.dispatch != Dispatch::NotSent
        {
            return Ok(false);
        }
        if !self.authority.claim(id).await? {
            return Ok(false);
        }
        let held = proposal.held;
        let now = self.authority.now_ms().div_euclid(1000);
        let delivered = self.send_held(id, &held, &decided.by, now).await;
        self.authority.deliver(id, delivered).await?;
        Ok(true)
    }

    /// Sends a claimed held write; what came of it (never an error: a failure is stored for the
    /// agent, since the claim means it will not be tried again).
    async fn send_held(&self, id: &str, held: &HeldRequest, approver: &str, now: i64) -> Delivered {
        let failed = |status: StatusCode, why: String, txn: Option<String>| Delivered {
            status: status.as_u16(),
            headers: Vec::new(),
            body: Vec::new(),
            truncated: false,
            sent_at: now,
            txn,
            approver: approver.to_owned(),
            error: Some(why),
        };
        let ctx = Ctx {
            method: held.method.clone(),
            path: held.path.clone(),
            peer: held
                .client_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
            started: Instant::now(),
            request_id: mandate_token::random_id::<12>().unwrap_or_default(),
        };
        let principal = match (held.claims.chain(), held.claims.scopes()) {
            (Ok(chain), Ok(scopes)) => Principal {
                claims: held.claims.clone(),
                chain,
                scopes,
            },
            _ => {
                return failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the held request's token claims do not parse".into(),
                    None,
                );
            }
        };
        let refuse = |status: StatusCode, why: String, txn: Option<String>| {
            self.record(
                &ctx,
                Outcome {
                    principal: Some(&principal),
                    action: Some(&held.action),
                    resource: Some(&held.resource),
                    reason: why.clone(),
                    status,
                    txn: txn.clone(),
                    approval: Some((id.to_owned(), Some(approver.to_owned()))),
                    ..Outcome::deny()
                },
            );
            failed(status, why, txn)
        };
        if let Some(why) = self.authority.revoked(&held.claims) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("approved, but not sent: {why} since the request was held"),
                None,
            );
        }
        let Some(index) = self
            .plan
            .upstreams
            .iter()
            .position(|u| u.name == held.upstream)
        else {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("upstream `{}` is no longer configured", held.upstream),
                None,
            );
        };
        let parts = match rebuild(held) {
            Some(p) => p,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the held request cannot be rebuilt".into(),
                    None,
                );
            }
        };
        let up = &self.plan.upstreams[index];
        let hop = Hop {
            ctx: &ctx,
            p: &principal,
            up,
            action: &held.action,
            resource: &held.resource,
            approver: Some(approver),
        };
        let (answer, txn) = match self
            .send(
                &hop,
                &held.upstream_path,
                parts,
                respond::full(held.body.clone()),
            )
            .await
        {
            Ok(a) => a,
            Err(f) => return refuse(f.status, f.why, f.txn),
        };
        let (mut head, body) = answer.into_parts();
        prepare_response(&mut head.headers);
        let (bytes, truncated) = read_capped(body, MAX_DELIVERED_BODY).await;
        let status = head.status;
        self.record(
            &ctx,
            Outcome {
                principal: Some(&principal),
                action: Some(&held.action),
                resource: Some(&held.resource),
                decision: Decision::Allow,
                reason: format!(
                    "approved by {approver} (approval `{id}`); forwarded to `{}`",
                    up.name
                ),
                status,
                upstream_status: Some(status.as_u16()),
                txn: Some(txn.clone()),
                approval: Some((id.to_owned(), Some(approver.to_owned()))),
                ..Outcome::deny()
            },
        );
        Delivered {
            status: status.as_u16(),
            headers: head
                .headers
                .iter()
                .filter(|(n, _)| *n != http::header::CONTENT_LENGTH)
                .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: bytes,
            truncated,
            sent_at: now,
            txn: Some(txn),
            approver: approver.to_owned(),
            error: None,
        }
    }
}

/// The held request's head, as it is sent (the body is added by the caller).
fn rebuild(held: &HeldRequest) -> Option<Parts> {
    let uri = match &held.query {
        Some(q) => format!("{}?{q}", held.path),
        None => held.path.clone(),
    };
    let mut builder = Request::builder().method(held.method.as_str()).uri(uri);
    for (n, v) in &held.headers {
        let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
        let value = HeaderValue::from_str(v).ok()?;
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some(parts)
}

/// Reads up to `limit` bytes of `body`; whether there was more.
async fn read_capped<B>(body: B, limit: usize) -> (Vec<u8>, bool)
where
    B: http_body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = body.as_mut().frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                out.extend_from_slice(&data[..limit - out.len()]);
                return (out, true);
            }
            out.extend_from_slice(&data);
        }
    }
    (out, false)
}

/// The upstream's stored answer, as the agent gets it.
fn delivered_answer(id: &str, d: &Delivered) -> Response<ProxyBody> {
    if let Some(why) = &d.error {
        let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut r = respond::json(
            status,
            &json!({"error": "not_delivered", "error_description": why, "proposal": id,
                "status": "failed", "approver": d.approver}),
        );
        r.headers_mut().insert(
            HeaderName::from_static("mandate-proposal-status"),
            HeaderValue::from_static("failed"),
        );
        return r;
    }
    let mut r = Response::new(respond::full(d.body.clone()));
    *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    for (n, v) in &d.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(n, v);
        }
    }
    if !h.contains_key(CONTENT_TYPE) && d.body.is_empty() {
        h.remove(CONTENT_TYPE);
    }
    h.insert(
        HeaderName::from_static("mandate-proposal-status"),
        HeaderValue::from_static("sent"),
    );
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(HeaderName::from_static("mandate-proposal"), v);
    }
    if d.truncated {
        h.insert(
            HeaderName::from_static("mandate-proposal-truncated"),
            HeaderValue::from_static("true"),
        );
    }
    r
}

fn unavailable(e: &str) -> Response<ProxyBody> {
    tracing::warn!(error = %e, "proposal state unavailable");
    respond::retry_after(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the proposal's state could not be read; try again",
        1,
    )
}

/// Sends approved held writes as they are decided: at start (anything approved while no
/// gateway ran), on each decision the authority announces, and every [`SWEEP_EVERY`] when it
/// announces none (a standalone gateway). Ends when the gateway is dropped.
pub async fn run_dispatcher<A: Authority>(gateway: std::sync::Weak<Gateway<A>>) {
    let mut decisions = match gateway.upgrade() {
        Some(g) => g.authority.decisions(),
        None => return,
    };
    let mut sweep = true;
    loop {
        let Some(g) = gateway.upgrade() else { return };
        if sweep {
            match g.authority.approved_holds().await {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = g.dispatch(&id).await {
                            tracing::warn!(proposal = %id, error = %e, "held write not sent yet");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "approved held writes could not be listed"),
            }
        }
        drop(g);
        sweep = match &mut decisions {
            Some(rx) => match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Ok(id)) => {
                    if let Some(g) = gateway.upgrade()
                        && let Err(e) = g.dispatch(&id).await
                    {
                        tracing::warn!(proposal = %id, error = %e, "held write not sent yet");
                    }
                    false
                }
                // Lagged, or a quiet half minute: look in the store.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | Err(_) => true,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
            },
            None => {
                tokio::time::sleep(SWEEP_EVERY).await;
                true
            }
        };
    }
}

/// Starts [`run_dispatcher`] for `gateway` in the background.
pub fn spawn_dispatcher<A: Authority>(gateway: &Arc<Gateway<A>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_dispatcher(Arc::downgrade(gateway)))
}
