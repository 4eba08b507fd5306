//! `GET /.well-known/oauth-authorization-server` (RFC 8414) and `GET /.well-known/jwks.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::oauth::ciba::CIBA;
use crate::oauth::token::{TOKEN_EXCHANGE, TYPE_ACCESS_TOKEN, TYPE_JWT};
use crate::state::AppState;

/// The metadata document.
pub fn metadata_document(state: &AppState) -> Value {
    let i = &state.issuer;
    // Mutual TLS with X.509-SVIDs (RFC 8705 §2.1) when the listener asks for them.
    let mtls = state.config.tls.is_some()
        && state
            .config
            .workload
            .spiffe
            .iter()
            .any(|d| d.x509_bundle_file.is_some());
    let methods: &[&str] = if mtls {
        &["private_key_jwt", "tls_client_auth"]
    } else {
        &["private_key_jwt"]
    };
    let introspection: &[&str] = if mtls {
        &["private_key_jwt", "tls_client_auth", "bearer"]
    } else {
        &["private_key_jwt", "bearer"]
    };
    json!({
        "issuer": i,
        "token_endpoint": format!("{i}/oauth2/token"),
        "jwks_uri": format!("{i}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{i}/oauth2/introspect"),
        "revocation_endpoint": format!("{i}/oauth2/revoke"),
        "grant_types_supported": [TOKEN_EXCHANGE, "client_credentials", CIBA],
        "backchannel_token_delivery_modes_supported": ["poll"],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256", "ES384", "RS256", "PS256"],
        "introspection_endpoint_auth_methods_supported": introspection,
        "revocation_endpoint_auth_methods_supported": methods,
        "tls_client_certificate_bound_access_tokens": false,
        "response_types_supported": [],
        "scopes_supported": [],
        "token_exchange_token_types_supported": [TYPE_JWT, TYPE_ACCESS_TOKEN],
        "dpop_signing_alg_values_supported": mandate_token::dpop::SUPPORTED_ALGS,
        "authorization_details_types_supported": [],
        "service_documentation": format!("{i}/v1/openapi.json"),
    })
}

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(metadata_document(&state)),
    )
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.keys.keys().jwks.clone()),
    )
}
