//! The reverse proxy: one request in, at most one upstream request out.
//!
//! Per request, in this order (SPEC §6): serve protected-resource metadata without a token;
//! verify the bearer token (401 with a challenge pointing to the metadata); map the request to
//! an action and a resource (route table, or MCP `tools/call`); admit it (scope and stage: 403
//! `insufficient_scope` naming the scope); ask policy with the resource and its tags (403 with
//! the policies' reason); count it against the circuit breakers (429, or suspend the agent);
//! swap the agent's credential for the upstream's and a Transaction Token; stream the request
//! up and the answer back; record one audit event with the outcome and the upstream's status.
//!
//! Bodies stream both ways without being held whole, except MCP messages, which the gateway
//! must read to decide (at most 1 MiB), and `tools/list` answers, which it filters.

mod mcp;
mod proposals;
mod respond;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::scope::Scope;
use mandate_verify::Principal;
use serde_json::{Value, json};

use crate::admit::{Admitted, NotAdmitted, Target, admit};
use crate::authority::{Ask, Authority};
use crate::breaker::{Breakers, Then, Trip, Verdict};
use crate::challenge::{Challenge, ProtectedResource, Scheme};
use crate::config::Plan;
use crate::route::NoRoute;

pub use proposals::{SWEEP_EVERY, run_dispatcher, spawn_dispatcher};
pub use upstream::Client;

/// Errors carried by proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the gateway sends both ways.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A refusal answered before anything goes upstream (boxed: answers are large).
type Refused = Box<Response<ProxyBody>>;

/// Where a standalone gateway publishes the keys of its Transaction Tokens.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The well-known path of RFC 9728 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The gateway: its plan, Mandate (the [`Authority`]), the upstream client and the breakers'
/// counts.
pub struct Gateway<A> {
    plan: Plan,
    authority: Arc<A>,
    client: Client,
    audiences: Vec<String>,
    /// The root resource's metadata and, per MCP server, its own.
    resources: Vec<ProtectedResource>,
    breakers: Mutex<BreakerState>,
    /// DPoP proofs seen recently (RFC 9449 §11.1): a proof is accepted once per gateway.
    dpop_seen: mandate_token::dpop::ReplayCache,
    /// Tool classes learnt from `tools/list` answers: (MCP server index, tool) → read-only.
    tools: Mutex<HashMap<(usize, String), bool>>,
}

struct BreakerState {
    breakers: Breakers,
    /// When a `suspend` breaker latched for an agent (ms): a token issued after it proves a
    /// human resumed the agent (suspension revoked every earlier token).
    latched_at: HashMap<String, i64>,
}

/// What one request is about, for its audit event.
struct Ctx {
    method: String,
    path: String,
    peer: Option<IpAddr>,
    started: Instant,
    request_id: String,
}

/// How a request was decided and how it went.
struct Outcome<'a> {
    principal: Option<&'a Principal>,
    action: Option<&'a str>,
    resource: Option<&'a str>,
    decision: Decision,
    reason: String,
    policies: Vec<String>,
    status: StatusCode,
    upstream_status: Option<u16>,
    txn: Option<String>,
    /// For a held write: its approval and, once decided, the approver.
    approval: Option<(String, Option<String>)>,
}

impl<A: Authority> Gateway<A> {
    /// A gateway for `plan`, asking `authority`.
    pub fn new(plan: Plan, authority: Arc<A>) -> std::io::Result<Gateway<A>> {
        let client = upstream::client()?;
        let audiences = plan.audiences();
        let mut scopes: Vec<String> = plan.routes.actions().map(str::to_owned).collect();
        scopes.sort();
        scopes.dedup();
        let root = ProtectedResource {
            resource: plan.public_url.clone(),
            authorization_servers: vec![authority.issuer().to_owned()],
            scopes_supported: scopes,
            resource_name: Some("Mandate gateway".into()),
            dpop_signing_alg_values_supported: dpop_algs(),
        };
        let mut resources = vec![root];
        for m in &plan.mcp {
            resources.push(ProtectedResource {
                resource: format!("{}{}", plan.public_url, m.path),
                authorization_servers: vec![authority.issuer().to_owned()],
                scopes_supported: vec![format!("mcp.{}.*:call", m.server)],
                resource_name: Some(format!("MCP server `{}`", m.server)),
                dpop_signing_alg_values_supported: dpop_algs(),
            });
        }
        Ok(Gateway {
            dpop_seen: mandate_token::dpop::ReplayCache::new(DPOP_REPLAY_CAPACITY),
            breakers: Mutex::new(BreakerState {
                breakers: plan.breakers.clone(),
                latched_at: HashMap::new(),
            }),
            plan,
            authority,
            client,
            audiences,
            resources,
            tools: Mutex::new(HashMap::new()),
        })
    }

    /// The checked configuration.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Handles one request from `peer`.
    pub async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        peer: Option<IpAddr>,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let ctx = Ctx {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            peer,
            started: Instant::now(),
            request_id: mandate_token::random_id::<12>().unwrap_or_default(),
        };
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > crate::serve::MAX_HEADER_BYTES {
            return respond::error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                &format!(
                    "the request's headers are larger than {} bytes",
                    crate::serve::MAX_HEADER_BYTES
                ),
            );
        }
        if ctx.path == METADATA_PATH || ctx.path.starts_with(&format!("{METADATA_PATH}/")) {
            return self.metadata(&ctx.path);
        }
        let mcp = self.plan.mcp.iter().position(|m| m.path == ctx.path);
        let resource = &self.resources[mcp.map_or(0, |i| i + 1)];
        let metadata_url = resource.metadata_url().unwrap_or_default();
        if ctx.path == JWKS_PATH
            && let Some(jwks) = self.authority.jwks()
        {
            return respond::json(StatusCode::OK, &jwks);
        }
        let principal = match self.authenticate(req.headers(), &ctx, &metadata_url).await {
            Ok(p) => p,
            Err(r) => return *r,
        };
        if ctx
            .path
            .starts_with(&format!("{}/", crate::hold::PROPOSALS_PATH))
        {
            return self.poll_proposal(&ctx, &principal).await;
        }
        match mcp {
            Some(i) => self.mcp(i, req, &principal, &ctx, &metadata_url).await,
            None => self.rest(req, &principal, &ctx, &metadata_url).await,
        }
    }

    fn metadata(&self, path: &str) -> Response<ProxyBody> {
        let rest = &path[METADATA_PATH.len()..];
        let found = if rest.is_empty() || rest == "/" {
            self.resources.first()
        } else {
            let wanted = format!("{}{rest}", self.plan.public_url);
            self.resources.iter().skip(1).find(|r| r.resource == wanted)
        };
        match found {
            Some(r) => respond::json(StatusCode::OK, &r.metadata()),
            None => respond::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no protected resource is served at this path",
            ),
        }
    }

    /// Checks the `DPoP` proof sent with a token bound to `jkt`: for this method and URL (the
    /// gateway's public URL and the request's path), this token (`ath`), recent, with the
    /// bound key, and never seen before at this gateway.
    fn check_dpop(
        &self,
        headers: &HeaderMap,
        ctx: &Ctx,
        token: &str,
        jkt: &str,
    ) -> Result<(), mandate_token::dpop::ProofError> {
        use mandate_token::dpop::{ProofCheck, ProofError, check_proof};
        let mut values = headers.get_all("dpop").iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ProofError::Malformed("send exactly one `DPoP` header"));
        };
        let proof = value
            .to_str()
            .map_err(|_| ProofError::Malformed("the `DPoP` header is not text"))?;
        let now = self.authority.now_ms().div_euclid(1000);
        let url = format!("{}{}", self.plan.public_url, ctx.path);
        let verified = check_proof(
            proof,
            &ProofCheck {
                method: &ctx.method,
                url: &url,
                now,
                max_age: DPOP_MAX_AGE,
                leeway: DPOP_LEEWAY,
                access_token: Some(token),
                nonces: None,
            },
        )?;
        if verified.jkt != jkt {
            return Err(ProofError::WrongKey);
        }
        self.dpop_seen.remember(&verified, now)
    }

    /// The bearer token, verified; or the 401/503 answer (recorded).
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        ctx: &Ctx,
        metadata_url: &str,
    ) -> Result<Principal, Refused> {
        let refuse = |challenge: Challenge, scheme: Scheme, reason: String| {
            self.record(
                ctx,
                Outcome {
                    reason,
                    status: StatusCode::from_u16(challenge.status())
                        .unwrap_or(StatusCode::UNAUTHORIZED),
                    ..Outcome::deny()
                },
            );
            respond::challenge(&challenge, scheme, metadata_url)
        };
        let Some((scheme, token)) = credentials(headers) else {
            return Err(Box::new(refuse(
                Challenge::Missing,
                Scheme::Bearer,
                "no bearer token".into(),
            )));
        };
        match self.authority.verify(token, &self.audiences).await {
            Ok(p) => {
                let jkt = p
                    .claims
                    .cnf
                    .as_ref()
                    .and_then(|c| c.get("jkt"))
                    .and_then(|j| j.as_str());
                match (jkt, scheme) {
                    (None, Scheme::Bearer) => Ok(p),
                    (None, Scheme::DPoP) => {
                        let why =
                            "the token is not DPoP-bound: present it with the `Bearer` scheme"
                                .to_owned();
                        Err(Box::new(refuse(
                            Challenge::InvalidToken(why.clone()),
                            Scheme::Bearer,
                            why,
                        )))
                    }
                    (Some(_), Scheme::Bearer) => {
                        let why = "the token is DPoP-bound: present it with the `DPoP` scheme and a `DPoP` proof".to_owned();
                        Err(Box::new(refuse(
                            Challenge::InvalidToken(why.clone()),
                            Scheme::DPoP,
                            why,
                        )))
                    }
                    (Some(jkt), Scheme::DPoP) => match self.check_dpop(headers, ctx, token, jkt) {
                        Ok(()) => Ok(p),
                        Err(e) => {
                            let why = e.to_string();
                            let challenge = Challenge::DpopProof {
                                code: e.code(),
                                description: why.clone(),
                            };
                            Err(Box::new(refuse(challenge, Scheme::DPoP, why)))
                        }
                    },
                }
            }
            Err(r) if r.is_transient() => {
                let why = r.to_string();
                self.record(
                    ctx,
                    Outcome {
                        reason: why.clone(),
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        ..Outcome::deny()
                    },
                );
                Err(Box::new(respond::retry_after(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &why,
                    1,
                )))
            }
            Err(r) => {
                let why = r.to_string();
                Err(Box::new(refuse(
                    Challenge::InvalidToken(why.clone()),
                    Scheme::Bearer,
                    why,
                )))
            }
        }
    }

    /// A REST request: route, admit, decide, break, forward.
    async fn rest<B>(
        &self,
        req: Request<B>,
        p: &Principal,
        ctx: &Ctx,
        metadata_url: &str,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let resolved = match self.plan.routes.resolve(&ctx.method, &ctx.path) {
            Ok(r) => r,
            Err(e) => {
                let (status, code) = match &e {
                    NoRoute::MethodNotAllowed { .. } => {
                        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
                    }
                    _ => (StatusCode::NOT_FOUND, "not_found"),
                };
                self.record(
                    ctx,
                    Outcome {
                        principal: Some(p),
                        reason: e.to_string(),
                        status,
                        ..Outcome::deny()
                    },
                );
                let mut r = respond::error(status, code, &e.to_string());
                if let NoRoute::MethodNotAllowed { allowed, .. } = &e
                    && let Ok(v) = HeaderValue::from_str(&allowed.join(", "))
                {
                    r.headers_mut().insert(ALLOW, v);
                }
                return r;
            }
        };
        let audiences = self
            .plan
            .route_audiences
            .get(resolved.route.wrapping_sub(1))
            .map_or(&[][..], Vec::as_slice);
        if let Err(r) = self.audience(p, audiences, ctx, metadata_url) {
            return *r;
        }
        if let Some(len) = content_length(req.headers())
            && len > self.plan.max_body_bytes
        {
            return respond::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("the body is larger than {} bytes", self.plan.max_body_bytes),
            );
        }
        let tags: BTreeMap<String, String> = resolved.params.iter().cloned().collect();
        let target = Target {
            action: &resolved.action,
            class: resolved.action.class(),
            least_stage: resolved.stage,
        };
        let admitted = match self.decide(p, &target, &resolved.resource, &tags, ctx, metadata_url) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        // `route` counts from 1; the plan has an upstream for every route.
        let Some(&upstream) = self
            .plan
            .route_upstreams
            .get(resolved.route.wrapping_sub(1))
        else {
            return respond::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the route has no upstream",
            );
        };
        let (parts, body) = req.into_parts();
        if admitted == Admitted::Hold {
            let limit = usize::try_from(self.plan.max_body_bytes)
                .unwrap_or(usize::MAX)
                .min(crate::hold::MAX_HELD_BODY);
            let bytes = match read_body(body, limit).await {
                Ok(b) => b,
                Err(ReadError::TooLarge) => {
                    return respond::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        &format!(
                            "the body is larger than {limit} bytes, the most a write held for approval may carry"
                        ),
                    );
                }
                Err(ReadError::Broken) => {
                    return respond::error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the body could not be read",
                    );
                }
            };
            let target = proposals::HoldTarget {
                upstream,
                upstream_path: format!("{}{}", self.plan.upstreams[upstream].base_path, ctx.path),
                action: resolved.action.as_str(),
                resource: &resolved.resource,
            };
            return self.hold_rest(ctx, p, &parts, bytes, &target).await;
        }
        let body = limited(body, self.plan.max_body_bytes);
        let path = format!("{}{}", self.plan.upstreams[upstream].base_path, ctx.path);
        self.forward(
            ctx,
            p,
            upstream,
            &path,
            parts,
            body,
            resolved.action.as_str(),
            &resolved.resource,
            true,
        )
        .await
    }

    /// The token must carry one of `audiences` (the route's or MCP server's): a token for one
    /// upstream is not good for another behind the same gateway.
    fn audience(
        &self,
        p: &Principal,
        audiences: &[String],
        ctx: &Ctx,
        metadata_url: &str,
    ) -> Result<(), Refused> {
        if audiences.iter().any(|a| p.claims.aud.contains(a)) {
            return Ok(());
        }
        let why = match audiences {
            [one] => format!("token audience is not accepted here; this needs `{one}`"),
            _ => format!(
                "token audience is not accepted here; this needs `{}`",
                self.plan.public_url
            ),
        };
        self.record(
            ctx,
            Outcome {
                principal: Some(p),
                reason: why.clone(),
                status: StatusCode::UNAUTHORIZED,
                ..Outcome::deny()
            },
        );
        Err(Box::new(respond::challenge(
            &Challenge::InvalidToken(why),
            Scheme::Bearer,
            metadata_url,
        )))
    }

    /// Admission, policy and breakers for a mapped request: whether to send it or hold it, or
    /// the refusal answer.
    fn decide(
        &self,
        p: &Principal,
        target: &Target<'_>,
        resource: &str,
        tags: &BTreeMap<String, String>,
        ctx: &Ctx,
        metadata_url: &str,
    ) -> Result<Admitted, Refused> {
        let action = target.action.as_str();
        let deny = |reason: String, policies: Vec<String>, status: StatusCode| {
            self.record(
                ctx,
                Outcome {
                    principal: Some(p),
                    action: Some(action),
                    resource: Some(resource),
                    reason,
                    policies,
                    status,
                    ..Outcome::deny()
                },
            );
        };
        let admitted = match admit(&p.scopes, p.claims.stage, target) {
            Ok(a) => a,
            Err(n) => {
                let reason = n.reason();
                deny(reason.clone(), Vec::new(), StatusCode::FORBIDDEN);
                return Err(Box::new(match n {
                    NotAdmitted::Scope { scope } => respond::challenge(
                        &Challenge::InsufficientScope {
                            scope,
                            description: reason,
                        },
                        Scheme::Bearer,
                        metadata_url,
                    ),
                    NotAdmitted::Stage { .. } => {
                        respond::error(StatusCode::FORBIDDEN, "insufficient_stage", &reason)
                    }
                }));
            }
        };
        let verdict = self.authority.decide(&Ask {
            principal: p,
            action: target.action,
            resource,
            resource_tags: tags,
        });
        if !verdict.allowed {
            deny(
                verdict.reason.clone(),
                verdict.policies,
                StatusCode::FORBIDDEN,
            );
            return Err(Box::new(respond::error(
                StatusCode::FORBIDDEN,
                "access_denied",
                &verdict.reason,
            )));
        }
        if let Err(trip) = self.breaker(p, target.action) {
            let reason = trip.reason();
            let (status, answer) = match trip.then {
                Then::Suspend => (
                    StatusCode::FORBIDDEN,
                    respond::error(StatusCode::FORBIDDEN, "agent_suspended", &reason),
                ),
                Then::Deny => (
                    StatusCode::TOO_MANY_REQUESTS,
                    respond::retry_after(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        &reason,
                        trip.window_secs.div_ceil(crate::breaker::BUCKETS as u64),
                    ),
                ),
            };
            deny(reason, vec![format!("breaker:{}", trip.rule)], status);
            return Err(Box::new(answer));
        }
        Ok(admitted)
    }

    /// Counts the request against the breakers; on the first trip of a streak, suspends the
    /// agent (for `suspend` rules), alerts the webhook and records the trip.
    fn breaker(&self, p: &Principal, action: &Scope) -> Result<(), Trip> {
        let Some(agent) = p.agent() else {
            return Ok(());
        };
        let now = self.authority.now_ms();
        let verdict = {
            let mut st = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
            if st.breakers.is_empty() {
                return Ok(());
            }
            let resumed = st
                .latched_at
                .get(agent)
                .is_some_and(|at| p.claims.iat.saturating_mul(1000) > *at);
            if resumed {
                st.breakers.reset(agent);
                st.latched_at.remove(agent);
            }
            let v = st.breakers.check(agent, action, now);
            if let Verdict::Trip(t) = &v
                && t.first
                && t.then == Then::Suspend
            {
                st.latched_at.insert(agent.to_owned(), now);
            }
            st.breakers.prune(now);
            v
        };
        let Verdict::Trip(trip) = verdict else {
            return Ok(());
        };
        if trip.first {
            let reason = trip.reason();
            self.authority.record(NewEvent {
                kind: "gateway.breaker".into(),
                user: p.user().map(str::to_owned),
                chain: p.chain.agent_ids(),
                task: Some(p.task().to_owned()),
                action: Some(action.as_str().to_owned()),
                resource: Some(format!("agent:{agent}")),
                decision: Some(Decision::Deny),
                reason: reason.clone(),
                policy_ids: vec![format!("breaker:{}", trip.rule)],
                request_id: None,
                credential: None,
                jti: Some(p.claims.jti.clone()),
                detail: json!({"rule": trip.rule, "then": trip.then.as_str(), "count": trip.count,
                    "max": trip.max, "window_secs": trip.window_secs})
                .to_string(),
            });
            if let Some(url) = &trip.webhook {
                self.authority.alert(
                    url,
                    json!({"type": "mandate.breaker.tripped", "rule": trip.rule,
                        "agent": agent, "action": action.as_str(), "then": trip.then.as_str(),
                        "count": trip.count, "max": trip.max, "window_secs": trip.window_secs,
                        "user": p.user(), "task": p.task(), "reason": reason}),
                );
            }
            if trip.then == Then::Suspend {
                let suspension = self.authority.suspend(agent, &reason);
                let agent = agent.to_owned();
                tokio::spawn(async move {
                    if let Err(e) = suspension.await {
                        tracing::error!(agent, error = %e, "breaker could not suspend the agent");
                    }
                });
            }
        }
        Err(trip)
    }

    /// Records the request's audit event.
    fn record(&self, ctx: &Ctx, o: Outcome<'_>) {
        let ms = u64::try_from(ctx.started.elapsed().as_micros() / 1000).unwrap_or(u64::MAX);
        let mut detail = json!({
            "method": ctx.method, "path": ctx.path, "status": o.status.as_u16(), "ms": ms,
        });
        if let Some(o2) = detail.as_object_mut() {
            if let Some(s) = o.upstream_status {
                o2.insert("upstream_status".into(), json!(s));
            }
            if let Some(t) = &o.txn {
                o2.insert("txn".into(), json!(t));
            }
            if let Some(ip) = ctx.peer {
                o2.insert("client_ip".into(), json!(ip.to_string()));
            }
            if let Some((id, approver)) = &o.approval {
                o2.insert("approval".into(), json!(id));
                if let Some(a) = approver {
                    o2.insert("approver".into(), json!(a));
                }
            }
        }
        let p = o.principal;
        self.authority.record(NewEvent {
            kind: "gateway.request".into(),
            user: p.and_then(Principal::user).map(str::to_owned),
            chain: p.map(|p| p.chain.agent_ids()).unwrap_or_default(),
            task: p.map(|p| p.task().to_owned()),
            action: o.action.map(str::to_owned),
            resource: o.resource.map(str::to_owned),
            decision: Some(o.decision),
            reason: o.reason,
            policy_ids: o.policies,
            request_id: Some(ctx.request_id.clone()),
            credential: p.map(|p| p.claims.credential.clone()),
            jti: p.map(|p| p.claims.jti.clone()),
            detail: detail.to_string(),
        });
    }
}

impl Outcome<'_> {
    fn deny() -> Outcome<'static> {
        Outcome {
            principal: None,
            action: None,
            resource: None,
            decision: Decision::Deny,
            reason: String::new(),
            policies: Vec::new(),
            status: StatusCode::FORBIDDEN,
            upstream_status: None,
            txn: None,
            approval: None,
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
/// How old a DPoP proof may be at the gateway, seconds.
const DPOP_MAX_AGE: i64 = 60;
/// Clock skew tolerated for a DPoP proof's `iat`, seconds.
const DPOP_LEEWAY: i64 = 5;
/// Most DPoP proofs remembered at once (about 100 bytes each); beyond it new proofs are refused
/// until old ones expire.
const DPOP_REPLAY_CAPACITY: usize = 1_000_000;

/// The access token and the scheme it came with: `Authorization: Bearer <token>` or
/// `Authorization: DPoP <token>` (RFC 9449 §7.1).
fn credentials(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::DPoP, token))
    } else {
        None
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Scalar arguments as resource tags (strings as they are, numbers and booleans as text).
fn scalar_tags(arguments: &Value) -> BTreeMap<String, String> {
    arguments
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.len() <= 64)
        .filter_map(|(k, v)| {
            let s = match v {
                Value::String(s) if s.len() <= 256 => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect()
}

/// `body` as a [`ProxyBody`] that fails once more than `limit` bytes have passed.
fn limited<B>(body: B, limit: u64) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).boxed()
}

/// Why a body could not be read whole.
#[derive(Debug)]
enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// The stream failed.
    Broken,
}

/// Reads `body` whole, refusing more than `limit` bytes.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|_| ReadError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The DPoP proof algorithms this gateway verifies, for its resource metadata.
fn dpop_algs() -> Vec<String> {
    mandate_token::dpop::SUPPORTED_ALGS
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
}
