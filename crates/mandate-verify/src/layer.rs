//! A tower layer that admits only requests with a live Mandate token.
//!
//! The verified [`Principal`] is put into the request's extensions for the handler. A refused
//! request never reaches the inner service: it is answered `401` with an RFC 6750
//! `WWW-Authenticate: Bearer error="invalid_token"` header and a JSON body naming the reason, or
//! `503` (with `Retry-After`) when the verifier cannot tell and is set to fail closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::check::{Principal, Refusal};
use crate::verifier::{Presented, Verifier};

/// Wraps a service so that it sees only verified requests.
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Verifier,
}

impl VerifyLayer {
    /// A layer that verifies with `verifier`.
    pub fn new(verifier: Verifier) -> VerifyLayer {
        VerifyLayer { verifier }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`VerifyLayer`] makes.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B, R> Service<Request<B>> for VerifyService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: From<String>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let Some((dpop, token)) = credentials(&req) else {
                return Ok(missing());
            };
            let mut proofs = req.headers().get_all("dpop").iter();
            let proof = match (proofs.next(), proofs.next()) {
                (Some(p), None) => p.to_str().ok(),
                _ => None,
            };
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(req.uri().authority().map(|a| a.as_str()))
                .unwrap_or_default();
            let presented = Presented {
                token,
                dpop,
                proof,
                method: req.method().as_str(),
                host,
                path: req.uri().path(),
            };
            let verdict = verifier.verify_presented(&presented).await;
            match verdict {
                Ok(principal) => {
                    req.extensions_mut().insert::<Principal>(principal);
                    inner.call(req).await
                }
                Err(refusal) => Ok(refused(&refusal)),
            }
        })
    }
}

/// The token of `Authorization` and whether its scheme is `DPoP` (else `Bearer`).
pub fn credentials<B>(req: &Request<B>) -> Option<(bool, &str)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((false, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((true, token))
    } else {
        None
    }
}

/// The bearer token of `Authorization`, if there is exactly that.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn missing<R: From<String>>() -> Response<R> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        "invalid_request",
        "a bearer token is required",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The response for a refused token.
pub fn refused<R: From<String>>(refusal: &Refusal) -> Response<R> {
    let reason = refusal.to_string();
    if refusal.is_transient() {
        let mut resp = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &reason,
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let (scheme, code) = match refusal {
        Refusal::Dpop(e) => ("DPoP", e.code()),
        Refusal::Scheme(_) => ("DPoP", "invalid_token"),
        _ => ("Bearer", "invalid_token"),
    };
    let mut resp = json_response(StatusCode::UNAUTHORIZED, code, &reason);
    // RFC 6750 §3: the description is a quoted string; keep it to safe characters.
    let safe: String = reason
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{scheme} error=\"{code}\", error_description=\"{safe}\""
    )) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn json_response<R: From<String>>(
    status: StatusCode,
    error: &str,
    description: &str,
) -> Response<R> {
    let body = serde_json::json!({"error": error, "error_description": description}).to_string();
    let mut resp = Response::new(R::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
