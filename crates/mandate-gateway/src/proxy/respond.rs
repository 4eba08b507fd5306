//! The gateway's own answers: challenges, refusals, upstream faults, JSON-RPC errors.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::{BoxError, ProxyBody};
use crate::challenge::{Challenge, Scheme};

/// A body from bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An OAuth-style error: `{"error", "error_description"}`.
pub(crate) fn error(status: StatusCode, code: &str, description: &str) -> Response<ProxyBody> {
    json(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

/// A 401/403 challenge pointing to the resource's metadata.
pub(crate) fn challenge(c: &Challenge, scheme: Scheme, metadata_url: &str) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(c.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = json(status, &c.body());
    let algs: Vec<String> = mandate_token::dpop::SUPPORTED_ALGS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    if let Ok(v) = HeaderValue::from_str(&c.header(scheme, Some(metadata_url), &algs)) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

/// A 429 or 503 with `Retry-After`.
pub(crate) fn retry_after(
    status: StatusCode,
    code: &str,
    description: &str,
    secs: u64,
) -> Response<ProxyBody> {
    let mut r = error(status, code, description);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// A JSON-RPC error answer with an HTTP status.
pub(crate) fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
) -> Response<ProxyBody> {
    json(status, &crate::mcp::error(id, code, message, None))
}
