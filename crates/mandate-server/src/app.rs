//! The router and its layers: request ids, header and body limits, timeouts, tracing, and a
//! panic guard (a handler never panics on input, but a defect must not take the server down).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::admin;
use crate::oauth;
use crate::state::AppState;

/// The request's id: the caller's `x-request-id` if sane, otherwise generated. Recorded in audit.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned);
    let id = match given {
        Some(id) => id,
        None => mandate_token::random_id::<12>().unwrap_or_else(|_| "unknown".into()),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn header_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > state.config.limits.header_bytes {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            axum::Json(json!({"error": "invalid_request", "error_description": format!("request headers exceed {} bytes", state.config.limits.header_bytes)})),
        )
            .into_response();
    }
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "not_found", "message": "no such route"})),
    )
        .into_response()
}

/// Builds the whole application.
pub fn router(state: Arc<AppState>) -> Router {
    let limits = state.config.limits.clone();
    let v1 = Router::new()
        .route(
            "/agents",
            get(admin::agents::list).post(admin::agents::create),
        )
        .route(
            "/agents/{id}",
            get(admin::agents::show).patch(admin::agents::update),
        )
        .route("/agents/{id}/suspend", post(admin::agents::suspend))
        .route("/agents/{id}/resume", post(admin::agents::resume))
        .route("/agents/{id}/retire", post(admin::agents::retire))
        .route("/agents/{id}/keys", post(admin::agents::add_key))
        .route("/agents/{id}/keys/{kid}", delete(admin::agents::remove_key))
        .route(
            "/revocations",
            get(admin::revocations::list).post(admin::revocations::create),
        )
        .route("/approvals", get(admin::approvals::list))
        .route("/approvals/{id}", get(admin::approvals::show))
        .route("/approvals/{id}/approve", post(admin::approvals::approve))
        .route("/approvals/{id}/deny", post(admin::approvals::deny))
        .route("/revocations/events", get(admin::events::stream))
        .route("/audit", get(admin::audit::query))
        .route("/audit/verify", get(admin::audit::verify))
        .route("/audit/checkpoint", post(admin::audit::checkpoint))
        // Audit retention
        .route("/audit/archive", post(admin::audit::archive))
        .route("/audit/segments", get(admin::audit::segments))
        // Posture and access reviews
        .route("/posture", get(admin::posture::report))
        .route(
            "/reviews",
            get(admin::posture::list).post(admin::posture::start),
        )
        .route("/reviews/{id}/attest", post(admin::posture::attest))
        .route("/reviews/{id}/remove", post(admin::posture::remove))
        .route("/compliance", get(admin::compliance::show))
        // Task steps and outcomes
        .route("/tasks", get(admin::tasks::list).post(admin::tasks::create))
        .route("/tasks/{id}", get(admin::tasks::show))
        .route("/tasks/{id}/steps", post(admin::tasks::step))
        .route("/tasks/{id}/complete", post(admin::tasks::complete))
        .route("/policies", get(admin::policies::show))
        .route("/policies/reload", post(admin::policies::reload))
        .route("/keys", get(admin::keys::list))
        .route("/keys/rotate", post(admin::keys::rotate))
        .route("/credentials", post(admin::credentials::create))
        // Gateway secrets
        .route("/secrets", get(admin::secrets::list))
        .route(
            "/secrets/{name}",
            put(admin::secrets::put).delete(admin::secrets::delete),
        )
        // The standalone gateway's routes (role `gateway` only)
        .route("/gateway/bundle", get(admin::gateway_api::bundle))
        .route("/gateway/secrets/{name}", get(admin::gateway_api::secret))
        .route("/gateway/events", post(admin::gateway_api::events))
        .route("/gateway/suspensions", post(admin::gateway_api::suspend))
        .route(
            "/gateway/holds",
            get(admin::gateway_holds::approved)
                .post(admin::gateway_holds::create)
                .layer(DefaultBodyLimit::max(admin::gateway_holds::HOLD_BODY_LIMIT)),
        )
        .route("/gateway/holds/{id}", get(admin::gateway_holds::show))
        .route(
            "/gateway/holds/{id}/claim",
            post(admin::gateway_holds::claim),
        )
        .route(
            "/gateway/holds/{id}/delivery",
            post(admin::gateway_holds::deliver)
                .layer(DefaultBodyLimit::max(admin::gateway_holds::HOLD_BODY_LIMIT)),
        )
        .route("/dev/user-token", post(admin::dev::user_token))
        .route("/openapi.json", get(admin::openapi::openapi));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata::metadata),
        )
        .route("/.well-known/jwks.json", get(oauth::metadata::jwks))
        .route("/dev-idp/jwks.json", get(admin::dev::jwks))
        .route("/oauth2/token", post(oauth::token::token))
        .route("/oauth2/introspect", post(oauth::introspect::introspect))
        .route("/oauth2/revoke", post(oauth::revoke::revoke))
        .route(
            "/.well-known/authzen-configuration",
            get(crate::authzen::configuration),
        )
        .route("/access/v1/evaluation", post(crate::authzen::evaluation))
        .route("/access/v1/evaluations", post(crate::authzen::evaluations))
        // Shared Signals transmitter
        .route(
            "/.well-known/ssf-configuration",
            get(crate::ssf::config::metadata),
        )
        .route(
            "/ssf/streams",
            get(crate::ssf::config::read)
                .post(crate::ssf::config::create)
                .patch(crate::ssf::config::update)
                .put(crate::ssf::config::replace)
                .delete(crate::ssf::config::delete),
        )
        .route(
            "/ssf/status",
            get(crate::ssf::streams::read_status).post(crate::ssf::streams::update_status),
        )
        .route("/ssf/verify", post(crate::ssf::streams::verify))
        .route("/ssf/subjects:add", post(crate::ssf::streams::add_subject))
        .route(
            "/ssf/subjects:remove",
            post(crate::ssf::streams::remove_subject),
        )
        .route("/ssf/poll/{stream_id}", post(crate::ssf::poll::poll))
        .nest("/v1", v1)
        .merge(crate::console::routes(state.config.console.enabled))
        .merge(crate::dev_oidc::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), header_limit))
        .layer(middleware::from_fn(request_id))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_secs),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": "server_error", "message": "internal error"})),
            )
                .into_response()
        }))
        .with_state(state)
}
