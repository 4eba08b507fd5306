//! Sending a request upstream: the real credential and the Transaction Token in, the agent's
//! credentials out, the body streamed, a deadline on the answer's head.

use std::time::Duration;

use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mandate_core::audit::Decision;
use mandate_verify::Principal;

use super::{BoxError, Ctx, Gateway, Outcome, ProxyBody, respond};
use crate::authority::Authority;
use crate::forward::{Outbound, prepare_request, prepare_response};

/// The upstream HTTP client: pooled connections, `http://` and `https://` (rustls, the
/// platform's roots).
pub type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// A new client.
pub(super) fn client() -> std::io::Result<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .map_err(std::io::Error::other)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https),
    )
}

/// A fault on the way upstream: answered with `status`, recorded as an allowed request that
/// failed.
pub(super) struct Fault {
    pub(super) status: StatusCode,
    code: &'static str,
    pub(super) why: String,
    pub(super) txn: Option<String>,
}

impl Fault {
    fn new(status: StatusCode, code: &'static str, why: String, txn: Option<String>) -> Fault {
        Fault {
            status,
            code,
            why,
            txn,
        }
    }
}

/// Who and what a forwarded request is, for the Transaction Token and the audit event.
pub(super) struct Hop<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) p: &'a Principal,
    pub(super) up: &'a crate::config::Upstream,
    pub(super) action: &'a str,
    pub(super) resource: &'a str,
    /// Who approved it, for a held write.
    pub(super) approver: Option<&'a str>,
}

/// The name this gateway gives itself in Transaction Tokens (`req_wl`).
const WORKLOAD: &str = "mandate-gateway";

impl<A: Authority> Gateway<A> {
    /// Forwards an admitted request to upstream `index` at `path` and returns the answer (the
    /// upstream's, or 502/504). Faults are always recorded; an answer only when `audit` (a
    /// request that was an action: a route or a tool call, not MCP's protocol chatter).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        ctx: &Ctx,
        p: &Principal,
        index: usize,
        path: &str,
        parts: Parts,
        body: ProxyBody,
        action: &str,
        resource: &str,
        audit: bool,
    ) -> Response<ProxyBody> {
        let up = &self.plan.upstreams[index];
        let hop = Hop {
            ctx,
            p,
            up,
            action,
            resource,
            approver: None,
        };
        let (answer, txn) = match self.send(&hop, path, parts, body).await {
            Ok(a) => a,
            Err(f) => {
                self.record(
                    ctx,
                    Outcome {
                        principal: Some(p),
                        action: Some(action),
                        resource: Some(resource),
                        decision: Decision::Allow,
                        reason: f.why.clone(),
                        status: f.status,
                        txn: f.txn,
                        ..Outcome::deny()
                    },
                );
                return respond::error(f.status, f.code, &f.why);
            }
        };
        let status = answer.status();
        if audit {
            self.record(
                ctx,
                Outcome {
                    principal: Some(p),
                    action: Some(action),
                    resource: Some(resource),
                    decision: Decision::Allow,
                    reason: format!("forwarded to `{}`", up.name),
                    status,
                    upstream_status: Some(status.as_u16()),
                    txn: Some(txn),
                    ..Outcome::deny()
                },
            );
        }
        let (mut parts, body) = answer.into_parts();
        prepare_response(&mut parts.headers);
        Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed())
    }

    /// Opens the credential, signs the Transaction Token, rewrites the request and sends it;
    /// the answer's head and the transaction id, or the fault.
    pub(super) async fn send(
        &self,
        hop: &Hop<'_>,
        path: &str,
        mut parts: Parts,
        body: ProxyBody,
    ) -> Result<(Response<hyper::body::Incoming>, String), Fault> {
        let up = hop.up;
        let secret = match &up.secret {
            Some(name) => Some(self.authority.secret(name).await.map_err(|e| {
                tracing::error!(upstream = %up.name, error = %e, "upstream credential unavailable");
                Fault::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!("the credential for upstream `{}` is unavailable", up.name),
                    None,
                )
            })?),
            None => None,
        };
        let txn = format!(
            "txn-{}",
            mandate_token::random_id::<12>().unwrap_or_default()
        );
        let client_ip = hop.ctx.peer.map(|ip| ip.to_string());
        let claims = crate::txn::claims(&crate::txn::Request {
            token: &hop.p.claims,
            chain: &hop.p.chain,
            action: hop.action,
            resource: hop.resource,
            purpose: None,
            method: &hop.ctx.method,
            client_ip: client_ip.clone(),
            issuer: self.authority.txn_issuer(),
            trust_domain: &self.plan.trust_domain,
            gateway: WORKLOAD,
            txn: &txn,
            now: self.authority.now_ms().div_euclid(1000),
            approver: hop.approver,
        });
        let fault =
            |status, code, why: &str| Fault::new(status, code, why.to_owned(), Some(txn.clone()));
        let txn_token = self.authority.sign_txn(&claims).map_err(|e| {
            tracing::error!(error = %e, "could not sign a transaction token");
            fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the transaction token could not be signed",
            )
        })?;
        let target = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let mut uri = Uri::builder()
            .scheme(up.origin.scheme_str().unwrap_or("http"))
            .authority(
                up.origin
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or_default(),
            )
            .path_and_query(target)
            .build()
            .map_err(|_| {
                fault(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request's path cannot be forwarded",
                )
            })?;
        parts.headers.remove(http::header::HOST);
        let out = Outbound {
            injection: &up.injection,
            secret: secret.as_deref().map(String::as_str),
            txn_token: &txn_token,
            client_ip: client_ip.as_deref(),
        };
        prepare_request(&mut parts.headers, &mut uri, &out)
            .map_err(|e| fault(StatusCode::BAD_GATEWAY, "bad_gateway", &e.to_string()))?;
        drop(secret);
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let deadline = Duration::from_secs(up.timeout_secs);
        match tokio::time::timeout(deadline, self.client.request(request)).await {
            Ok(Ok(answer)) => Ok((answer, txn)),
            Ok(Err(e)) => {
                tracing::warn!(upstream = %up.name, error = %e, "upstream request failed");
                Err(fault(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &format!("upstream `{}` could not be reached", up.name),
                ))
            }
            Err(_) => Err(fault(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                &format!(
                    "upstream `{}` did not answer within {} s",
                    up.name, up.timeout_secs
                ),
            )),
        }
    }
}
