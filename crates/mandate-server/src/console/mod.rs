//! The console at `/console`: server-rendered pages for the humans in the loop — approvers,
//! agent owners, auditors and admins (SPEC §6–8).
//!
//! Pages are HTML rendered with `maud`; htmx (embedded, no build step) adds live updates from
//! the console's event stream. Handlers are thin: they read through the same store and state
//! the admin API uses, and every change goes through the same functions (`approvals::decide`,
//! `revocation::revoke`, the agents' status changes), so the console can do nothing the API
//! could not, and everything it does is audited the same way.
//!
//! * [`session`]: the sealed session cookie, the signed-in [`session::Person`], CSRF.
//! * [`signin`]: OpenID Connect sign-in (authorization code with PKCE), the `--dev` link.
//! * [`view`]: the page layout and small markup helpers.
//! * one module per page: [`dashboard`], [`agents`], [`tasks`], [`approvals`], [`audit`],
//!   [`posture`]; [`live`] is the event stream.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod dashboard;
pub mod live;
pub mod posture;
pub mod session;
pub mod signin;
pub mod tasks;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

/// The console's Content-Security-Policy: scripts, styles and connections from the console's
/// own origin only; no inline script or style, no framing, forms post only to the console.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// The console's routes (none when `console.enabled` is off).
pub fn routes(enabled: bool) -> Router<Arc<AppState>> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/console", get(dashboard::page))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/sign-in", get(signin::page))
        .route("/console/sign-in/link/{code}", get(signin::dev_link))
        .route("/console/auth/start", get(signin::start))
        .route("/console/auth/callback", get(signin::callback))
        .route("/console/sign-out", post(signin::sign_out))
        .route("/console/events", get(live::stream))
        .route("/console/approvals", get(approvals::queue))
        .route("/console/approvals/list", get(approvals::list_fragment))
        .route("/console/approvals/{id}", get(approvals::detail))
        .route("/console/approvals/{id}/decide", post(approvals::decide))
        .route("/console/agents", get(agents::list))
        .route("/console/agents/{id}", get(agents::detail))
        .route(
            "/console/agents/{id}/{action}",
            get(agents::confirm).post(agents::change),
        )
        .route("/console/tasks", get(tasks::list))
        .route("/console/tasks/{id}", get(tasks::timeline))
        .route("/console/tasks/{id}/revoke", post(tasks::revoke))
        .route("/console/audit", get(audit::search))
        .route("/console/audit/results", get(audit::results_fragment))
        .route("/console/audit/export", get(audit::export))
        .route("/console/posture", get(posture::report))
        .route("/console/compliance", get(posture::compliance))
        .route("/console/assets/{name}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// Headers on every console response: the CSP, no sniffing, no referrer, no framing, no
/// caching of pages that show who did what.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/console/assets/");
    let from_htmx = req.headers().contains_key("hx-request");
    let mut resp = next.run(req).await;
    if from_htmx && is_sign_in_redirect(&resp) {
        // A live refresh whose session ended: the whole page goes to sign-in, not the fragment.
        resp = (StatusCode::OK, [("hx-redirect", SIGN_IN)]).into_response();
    }
    protect(resp.headers_mut(), !is_asset);
    resp
}

/// Sets the console's protective headers on a response: the CSP, no sniffing, no referrer, no
/// framing, and (for pages, `no_store`) no caching. The `--dev` IdP's pages use it too.
pub fn protect(h: &mut HeaderMap, no_store: bool) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if no_store {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Where people sign in.
const SIGN_IN: &str = "/console/sign-in";

fn is_sign_in_redirect(resp: &Response) -> bool {
    resp.status().is_redirection()
        && resp
            .headers()
            .get(header::LOCATION)
            .is_some_and(|l| l.as_bytes() == SIGN_IN.as_bytes())
}

/// The embedded static files: htmx, its SSE extension, the style sheet and the console's own
/// small script.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/htmx.min.js"),
    ),
    (
        "htmx-sse.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console/htmx-sse.min.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/console/console.css"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => Failure::from(ApiError::not_found(format!(
            "no console asset `{}`",
            name.chars().take(64).collect::<String>()
        )))
        .into_response(),
    }
}

/// Why a console request did not get its page.
#[derive(Debug)]
pub enum Failure {
    /// Nobody is signed in (or the session ended): go to the sign-in page.
    SignIn,
    /// Anything else, shown as an error page with the API's status and message.
    Error(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Error(e)
    }
}

impl From<mandate_store::StoreError> for Failure {
    fn from(e: mandate_store::StoreError) -> Self {
        Failure::Error(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::SignIn => Redirect::to(SIGN_IN).into_response(),
            Failure::Error(e) => {
                let title = match e.status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::CONFLICT => "Could not be done",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "Not accepted",
                };
                (e.status, view::bare_page(title, &e.message)).into_response()
            }
        }
    }
}
