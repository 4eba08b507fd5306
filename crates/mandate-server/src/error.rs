//! Errors as clients see them: OAuth errors (RFC 6749 §5.2) on `/oauth2/*`, and a small JSON
//! error shape on `/v1/*`. Both carry a useful description and never an internal detail.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An OAuth error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The RFC 6749 / RFC 8693 error code.
    pub error: &'static str,
    /// A human description, safe to show.
    pub description: String,
    /// Seconds to wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u64>,
    /// A fresh DPoP server nonce (sent as `DPoP-Nonce`, RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// `invalid_dpop_proof` (RFC 9449 §5): the DPoP proof is missing where required, or bad.
    pub fn invalid_dpop_proof(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", d)
    }
    /// `use_dpop_nonce` (RFC 9449 §8), carrying the nonce to use.
    pub fn use_dpop_nonce(d: impl Into<String>, nonce: String) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "use_dpop_nonce", d);
        e.dpop_nonce = Some(nonce);
        e
    }

    /// `invalid_request`.
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// `invalid_client` (401).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    /// `invalid_grant`.
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    /// `unauthorized_client`.
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    /// `invalid_scope`.
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    /// `invalid_target` (RFC 8707).
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }
    /// `invalid_request` with 413: the body is too large.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body is larger than {limit} bytes"),
        )
    }
    /// `slow_down` (429) with `Retry-After`: an issuance rate limit was hit.
    pub fn slow_down(d: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", d);
        e.retry_after = Some(retry_after);
        e
    }
    /// `server_error` (500), for storage failures; the description says nothing internal.
    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the request could not be completed; try again",
        )
    }
    /// The same error with a status of 400 (e.g. `invalid_client` for a request without
    /// credentials).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", nonce);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_client\""),
            );
        }
        resp
    }
}

/// An error of the admin API (`/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// A short machine-readable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `server_error`.
    pub code: &'static str,
    /// A lowercase human message, with user input in backticks.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: m.into(),
        }
    }
    /// 401.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: m.into(),
        }
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: m.into(),
        }
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: m.into(),
        }
    }
    /// 500; the message says nothing internal.
    pub fn server_error() -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            message: "the request could not be completed; see the server log".into(),
        }
    }
}

impl From<mandate_store::StoreError> for ApiError {
    fn from(e: mandate_store::StoreError) -> Self {
        use mandate_store::StoreError as E;
        match e {
            E::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            e @ E::TaskNotActive { .. } => ApiError::conflict(e.to_string()),
            E::Unstorable(why) => ApiError::bad_request(why),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::server_error()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl OAuthError {
    /// Rewords a scope denial for autonomous tokens, where "the user" is the agent's own policy.
    pub fn own_rights(mut self) -> Self {
        self.description = self
            .description
            .replace("not granted to the user", "not granted to the agent itself");
        self
    }
}
