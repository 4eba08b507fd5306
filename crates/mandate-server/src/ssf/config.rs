//! Transmitter metadata (`GET /.well-known/ssf-configuration`) and the configuration endpoint
//! (`/ssf/streams`: `POST` creates, `GET` reads one or lists all, `PATCH` updates, `PUT`
//! replaces, `DELETE` deletes), SSF 1.0 §7.1.1.
//!
//! Stream configurations follow the spec's shape exactly; the push `authorization_header` is
//! write-only (sealed under the master key, never returned). Mandate accepts one extension on
//! creation: `aud` (a string or an array) names the receiver; it defaults to the stream id and
//! cannot change afterwards.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision, NewEvent};
use mandate_store::{Op, SsfStream};
use mandate_token::MasterKey;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::set::EVENTS_SUPPORTED;
use super::{DISABLED, ENABLED, MAX_STREAMS, MIN_VERIFICATION_INTERVAL, POLL, PUSH, SPEC_VERSION};
use crate::admin::auth::Admin;
use crate::app::RequestId;
use crate::error::ApiError;
use crate::state::AppState;

/// The most audiences of one stream.
const MAX_AUD: usize = 16;
/// The most event types a receiver may request.
const MAX_EVENTS_REQUESTED: usize = 64;
/// Longest description kept (longer ones are truncated, as SSF allows).
const MAX_DESCRIPTION: usize = 1000;
/// Longest URL, audience, event type or header value accepted.
const MAX_TEXT: usize = 2048;

/// `GET /.well-known/ssf-configuration` (SSF §6.1): the transmitter metadata.
pub fn metadata_document(state: &AppState) -> Value {
    let i = &state.issuer;
    json!({
        "spec_version": SPEC_VERSION,
        "issuer": i,
        "jwks_uri": format!("{i}/.well-known/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{i}/ssf/streams"),
        "status_endpoint": format!("{i}/ssf/status"),
        "add_subject_endpoint": format!("{i}/ssf/subjects:add"),
        "remove_subject_endpoint": format!("{i}/ssf/subjects:remove"),
        "verification_endpoint": format!("{i}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "ALL",
    })
}

/// `GET /.well-known/ssf-configuration`.
pub async fn metadata(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(metadata_document(&state)),
    )
}

/// The poll endpoint of a stream (the `endpoint_url` of poll delivery).
pub fn poll_url(issuer: &str, id: &str) -> String {
    format!("{issuer}/ssf/poll/{id}")
}

/// The event types a stream delivers: those supported that the receiver requested (all of
/// them if it requested none).
pub fn events_delivered(requested: Option<&[String]>) -> Vec<String> {
    EVENTS_SUPPORTED
        .iter()
        .filter(|e| requested.is_none_or(|r| r.iter().any(|x| x == *e)))
        .map(|e| (*e).to_owned())
        .collect()
}

/// A stream's configuration as SSF shows it.
pub fn view(issuer: &str, s: &SsfStream) -> Value {
    let aud = match s.aud.as_slice() {
        [one] => Value::String(one.clone()),
        many => json!(many),
    };
    let endpoint = if s.method == PUSH {
        s.endpoint_url.clone().unwrap_or_default()
    } else {
        poll_url(issuer, &s.id)
    };
    let mut v = json!({
        "stream_id": s.id,
        "iss": issuer,
        "aud": aud,
        "delivery": {"method": s.method, "endpoint_url": endpoint},
        "events_supported": EVENTS_SUPPORTED,
        "events_delivered": events_delivered(s.events_requested.as_deref()),
        "min_verification_interval": MIN_VERIFICATION_INTERVAL,
    });
    if let Some(r) = &s.events_requested {
        v["events_requested"] = json!(r);
    }
    if let Some(d) = &s.description {
        v["description"] = d.clone().into();
    }
    v
}

/// `aud`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `delivery` of a stream configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryBody {
    /// `urn:ietf:rfc:8935` or `urn:ietf:rfc:8936`.
    pub method: String,
    /// Push: where to POST SETs. Poll: set by the transmitter.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` header to send.
    #[serde(default)]
    pub authorization_header: Option<String>,
}

/// A stream configuration as a receiver sends it (create, update, replace).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// Transmitter-supplied; required to update or replace.
    #[serde(default)]
    pub stream_id: Option<String>,
    /// Transmitter-supplied; must match if given.
    #[serde(default)]
    pub iss: Option<String>,
    /// Mandate's extension on creation; must match afterwards.
    #[serde(default)]
    pub aud: Option<OneOrMany>,
    /// Transmitter-supplied; must match if given.
    #[serde(default)]
    pub events_supported: Option<Vec<String>>,
    /// Receiver-supplied.
    #[serde(default)]
    pub events_requested: Option<Vec<String>>,
    /// Transmitter-supplied; must match the value before the change if given.
    #[serde(default)]
    pub events_delivered: Option<Vec<String>>,
    /// Receiver-supplied.
    #[serde(default)]
    pub delivery: Option<DeliveryBody>,
    /// Receiver-supplied.
    #[serde(default)]
    pub description: Option<String>,
    /// Transmitter-supplied; must match if given.
    #[serde(default)]
    pub min_verification_interval: Option<i64>,
}

/// Parses a JSON body; an empty body is `{}`.
pub fn parse_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request("request body is not valid JSON")
        } else {
            ApiError::bad_request(format!("request body does not fit: {e}"))
        }
    })
}

/// `stream_id` from the query string (no other parameter is accepted).
pub fn stream_id_param(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut id = None;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if k != "stream_id" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{}`; only `stream_id` is accepted",
                short(&k)
            )));
        }
        if id.replace(v.into_owned()).is_some() {
            return Err(ApiError::bad_request("`stream_id` is given twice"));
        }
    }
    Ok(id)
}

/// At most 40 characters of user input, for messages.
pub fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The stream named by `id`, or 404.
pub async fn find(state: &AppState, id: &str) -> Result<SsfStream, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::not_found(format!(
            "stream `{}` not found",
            short(id)
        )));
    }
    state
        .store
        .ssf_stream(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stream `{}` not found", short(id))))
}

/// The additional authenticated data of a stream's sealed `authorization_header`.
fn header_aad(id: &str) -> Vec<u8> {
    format!("ssf-stream:{id}:authorization_header").into_bytes()
}

/// Seals a push `authorization_header` for storage.
pub fn seal_header(master: &MasterKey, id: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    master
        .seal(value.as_bytes(), &header_aad(id))
        .map_err(|_| ApiError::server_error())
}

/// Opens a stored `authorization_header`; `None` if it does not open.
pub fn open_header(master: &MasterKey, id: &str, sealed: &[u8]) -> Option<String> {
    let plain = master
        .open(sealed, &header_aad(id), "authorization_header")
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// A validated delivery: method, push URL, push header (clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Method URI.
    pub method: String,
    /// Push URL.
    pub endpoint_url: Option<String>,
    /// Push `Authorization` value.
    pub authorization_header: Option<String>,
}

/// Checks a push endpoint: an absolute `http` or `https` URL with a host.
pub fn check_push_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "`endpoint_url` is longer than {MAX_TEXT} characters"
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        ApiError::bad_request(format!("`endpoint_url` `{}` is not a URL: {e}", short(url)))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::bad_request(format!(
            "`endpoint_url` `{}` must be an http or https URL",
            short(url)
        )));
    }
    Ok(())
}

/// The delivery a body asks for. No `delivery` means poll (SSF §7.1.1.1). `poll_url` is the
/// stream's poll URL when it already has one.
pub fn delivery(body: Option<&DeliveryBody>, poll_url: Option<&str>) -> Result<Delivery, ApiError> {
    let Some(d) = body else {
        return Ok(Delivery {
            method: POLL.into(),
            endpoint_url: None,
            authorization_header: None,
        });
    };
    match d.method.as_str() {
        PUSH => {
            let url = d.endpoint_url.as_deref().ok_or_else(|| {
                ApiError::bad_request("push delivery needs `delivery.endpoint_url`")
            })?;
            check_push_url(url)?;
            if let Some(h) = &d.authorization_header
                && (h.len() > MAX_TEXT || h.is_empty() || HeaderValue::from_str(h).is_err())
            {
                return Err(ApiError::bad_request(
                    "`delivery.authorization_header` must be a valid HTTP header value",
                ));
            }
            Ok(Delivery {
                method: PUSH.into(),
                endpoint_url: Some(url.to_owned()),
                authorization_header: d.authorization_header.clone(),
            })
        }
        POLL => {
            if let Some(u) = &d.endpoint_url
                && Some(u.as_str()) != poll_url
            {
                return Err(ApiError::bad_request(
                    "the `endpoint_url` of poll delivery is set by the transmitter; leave it out",
                ));
            }
            if d.authorization_header.is_some() {
                return Err(ApiError::bad_request(
                    "`authorization_header` applies to push delivery only",
                ));
            }
            Ok(Delivery {
                method: POLL.into(),
                endpoint_url: None,
                authorization_header: None,
            })
        }
        other => Err(ApiError::bad_request(format!(
            "delivery method `{}` is not supported; use `{PUSH}` (push) or `{POLL}` (poll)",
            short(other)
        ))),
    }
}

/// Checks `events_requested`.
fn check_requested(r: &[String]) -> Result<(), ApiError> {
    if r.len() > MAX_EVENTS_REQUESTED {
        return Err(ApiError::bad_request(format!(
            "`events_requested` names more than {MAX_EVENTS_REQUESTED} event types"
        )));
    }
    if r.iter().any(|e| e.is_empty() || e.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(
            "`events_requested` must hold non-empty event type URIs",
        ));
    }
    Ok(())
}

/// Checks `aud` given on creation.
fn check_aud(aud: &[String]) -> Result<(), ApiError> {
    if aud.is_empty() || aud.len() > MAX_AUD {
        return Err(ApiError::bad_request(format!(
            "`aud` must name 1–{MAX_AUD} audiences"
        )));
    }
    if aud.iter().any(|a| a.is_empty() || a.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(
            "`aud` values must be non-empty strings",
        ));
    }
    Ok(())
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// Transmitter-supplied properties may be sent back, but must match what they are.
fn check_fixed(
    body: &ConfigBody,
    issuer: &str,
    aud: Option<&[String]>,
    delivered: &[String],
) -> Result<(), ApiError> {
    if let Some(i) = &body.iss
        && i != issuer
    {
        return Err(ApiError::bad_request(format!(
            "`iss` is set by the transmitter and is `{issuer}`"
        )));
    }
    let supported: Vec<String> = EVENTS_SUPPORTED.iter().map(|e| (*e).to_owned()).collect();
    if let Some(s) = &body.events_supported
        && !same_set(s, &supported)
    {
        return Err(ApiError::bad_request(
            "`events_supported` is set by the transmitter and does not match",
        ));
    }
    if let Some(d) = &body.events_delivered
        && !same_set(d, delivered)
    {
        return Err(ApiError::bad_request(
            "`events_delivered` is set by the transmitter and does not match its current value",
        ));
    }
    if let Some(n) = body.min_verification_interval
        && n != MIN_VERIFICATION_INTERVAL
    {
        return Err(ApiError::bad_request(format!(
            "`min_verification_interval` is set by the transmitter and is {MIN_VERIFICATION_INTERVAL}"
        )));
    }
    if let (Some(current), Some(given)) = (aud, &body.aud)
        && given.clone().into_vec() != current
    {
        return Err(ApiError::bad_request("`aud` of a stream cannot be changed"));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_DESCRIPTION).collect()
}

/// An audit event of a stream change.
pub fn audit(action: &str, id: &str, admin: &Admin, rid: &RequestId, detail: Value) -> Op {
    Op::Audit(NewEvent {
        kind: "ssf.stream".into(),
        action: Some(action.into()),
        resource: Some(format!("ssf-stream:{id}")),
        decision: Some(Decision::Info),
        reason: format!("by {}", admin.label()),
        request_id: Some(rid.0.clone()),
        detail: detail.to_string(),
        ..Default::default()
    })
}

fn answer(status: StatusCode, body: Value) -> Response {
    super::no_store((status, Json(body)).into_response())
}

/// `POST /ssf/streams`: creates a stream. It starts at the current end of the revocation feed
/// (no history) and `enabled`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let body: ConfigBody = parse_body(&bytes)?;
    if body.stream_id.is_some() {
        return Err(ApiError::bad_request(
            "`stream_id` is set by the transmitter; leave it out when creating a stream",
        ));
    }
    if let Some(r) = &body.events_requested {
        check_requested(r)?;
    }
    let delivered = events_delivered(body.events_requested.as_deref());
    check_fixed(&body, &state.issuer, None, &delivered)?;
    let d = delivery(body.delivery.as_ref(), None)?;
    let aud = body.aud.clone().map(OneOrMany::into_vec);
    if let Some(a) = &aud {
        check_aud(a)?;
    }

    let _guard = state.ssf.manage().await;
    if state.store.ssf_streams().await?.len() >= MAX_STREAMS {
        return Err(ApiError::conflict(format!(
            "this transmitter keeps at most {MAX_STREAMS} streams; delete one first"
        )));
    }
    let id = mandate_token::random_id::<16>().map_err(|_| ApiError::server_error())?;
    let now = state.clock.now();
    let sealed = d
        .authorization_header
        .as_deref()
        .map(|h| seal_header(&state.master, &id, h))
        .transpose()?;
    let stream = SsfStream {
        id: id.clone(),
        aud: aud.unwrap_or_else(|| vec![id.clone()]),
        method: d.method,
        endpoint_url: d.endpoint_url,
        authorization_header: sealed,
        events_requested: body.events_requested,
        description: body.description.as_deref().map(truncate),
        status: ENABLED.into(),
        reason: None,
        removed_subjects: Vec::new(),
        cursor: state.store.revocation_head().await?,
        last_error: None,
        last_error_at: None,
        created_at: now,
        updated_at: now,
    };
    let detail = json!({"method": stream.method, "aud": stream.aud, "cursor": stream.cursor});
    state
        .store
        .commit(vec![
            Op::InsertSsfStream(Box::new(stream.clone())),
            audit("ssf.stream.create", &id, &admin, &rid, detail),
        ])
        .await?;
    state.ssf.streams_changed();
    Ok(answer(StatusCode::CREATED, view(&state.issuer, &stream)))
}

/// `GET /ssf/streams[?stream_id=]`: one stream's configuration, or the list of all.
pub async fn read(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    match stream_id_param(q.as_deref())? {
        Some(id) => {
            let s = find(&state, &id).await?;
            Ok(answer(StatusCode::OK, view(&state.issuer, &s)))
        }
        None => {
            let all: Vec<Value> = state
                .store
                .ssf_streams()
                .await?
                .iter()
                .map(|s| view(&state.issuer, s))
                .collect();
            Ok(answer(StatusCode::OK, Value::Array(all)))
        }
    }
}

/// `PATCH /ssf/streams`: changes the receiver-supplied properties present in the body.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    change(state, rid, admin, bytes, false).await
}

/// `PUT /ssf/streams`: replaces the receiver-supplied properties; those missing are removed
/// (no `delivery` means poll).
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    change(state, rid, admin, bytes, true).await
}

async fn change(
    state: Arc<AppState>,
    rid: RequestId,
    admin: Admin,
    bytes: Bytes,
    whole: bool,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let body: ConfigBody = parse_body(&bytes)?;
    let id = body
        .stream_id
        .clone()
        .ok_or_else(|| ApiError::bad_request("`stream_id` is required"))?;
    if let Some(r) = &body.events_requested {
        check_requested(r)?;
    }
    let _guard = state.ssf.manage().await;
    let current = find(&state, &id).await?;
    let delivered = events_delivered(current.events_requested.as_deref());
    check_fixed(&body, &state.issuer, Some(&current.aud), &delivered)?;
    let poll = poll_url(&state.issuer, &id);
    let mut next = current.clone();
    if whole || body.delivery.is_some() {
        let d = delivery(body.delivery.as_ref(), Some(&poll))?;
        next.authorization_header = d
            .authorization_header
            .as_deref()
            .map(|h| seal_header(&state.master, &id, h))
            .transpose()?;
        next.method = d.method;
        next.endpoint_url = d.endpoint_url;
    }
    if whole || body.events_requested.is_some() {
        next.events_requested = body.events_requested.clone();
    }
    if whole || body.description.is_some() {
        next.description = body.description.as_deref().map(truncate);
    }
    next.updated_at = state.clock.now();
    let action = if whole {
        "ssf.stream.replace"
    } else {
        "ssf.stream.update"
    };
    let detail = json!({"method": next.method, "events_requested": next.events_requested});
    state
        .store
        .commit(vec![
            Op::UpdateSsfStream(Box::new(next.clone())),
            audit(action, &id, &admin, &rid, detail),
        ])
        .await?;
    state.ssf.streams_changed();
    state.ssf.queued(&id);
    Ok(answer(StatusCode::OK, view(&state.issuer, &next)))
}

/// `DELETE /ssf/streams?stream_id=`: deletes a stream and every SET waiting in it.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    admin: Admin,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    admin.require_admin()?;
    let id = stream_id_param(q.as_deref())?
        .ok_or_else(|| ApiError::bad_request("`stream_id` is required"))?;
    let _guard = state.ssf.manage().await;
    find(&state, &id).await?;
    state
        .store
        .commit(vec![
            Op::DeleteSsfStream { id: id.clone() },
            audit("ssf.stream.delete", &id, &admin, &rid, json!({})),
        ])
        .await?;
    state.ssf.forget(&id);
    state.ssf.streams_changed();
    Ok(super::no_store(StatusCode::NO_CONTENT.into_response()))
}

/// Whether a stream in this status holds SETs (`enabled` and `paused` do; `disabled` drops).
pub fn holds(status: &str) -> bool {
    status != DISABLED
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::ssf::set::{CREDENTIAL_CHANGE, SESSION_REVOKED};

    fn push(url: &str) -> DeliveryBody {
        DeliveryBody {
            method: PUSH.into(),
            endpoint_url: Some(url.into()),
            authorization_header: Some("Bearer x".into()),
        }
    }

    #[test]
    fn delivery_defaults_to_poll_and_checks_push_urls() {
        assert_eq!(delivery(None, None).unwrap().method, POLL);
        let d = delivery(Some(&push("https://rx.example/events")), None).unwrap();
        assert_eq!(d.endpoint_url.as_deref(), Some("https://rx.example/events"));
        assert_eq!(d.authorization_header.as_deref(), Some("Bearer x"));
        for bad in [
            "ftp://rx.example/x",
            "file:///etc/passwd",
            "not a url",
            "http://",
        ] {
            assert_eq!(
                delivery(Some(&push(bad)), None).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        let mut h = push("https://rx.example/e");
        h.authorization_header = Some("Bearer a\r\nX-Evil: 1".into());
        assert!(delivery(Some(&h), None).is_err());
        let other = DeliveryBody {
            method: "urn:example:smoke-signals".into(),
            endpoint_url: None,
            authorization_header: None,
        };
        assert!(delivery(Some(&other), None).is_err());
        let poll = DeliveryBody {
            method: POLL.into(),
            endpoint_url: Some("https://elsewhere.example/poll".into()),
            authorization_header: None,
        };
        assert!(delivery(Some(&poll), Some("https://m.example/ssf/poll/s")).is_err());
        let own = DeliveryBody {
            endpoint_url: Some("https://m.example/ssf/poll/s".into()),
            ..poll
        };
        assert!(delivery(Some(&own), Some("https://m.example/ssf/poll/s")).is_ok());
    }

    #[test]
    fn delivered_events_are_the_requested_supported_ones() {
        assert_eq!(events_delivered(None), [SESSION_REVOKED, CREDENTIAL_CHANGE]);
        let r = vec![CREDENTIAL_CHANGE.to_owned(), "urn:example:other".to_owned()];
        assert_eq!(events_delivered(Some(&r)), [CREDENTIAL_CHANGE]);
        assert!(events_delivered(Some(&[])).is_empty());
    }

    #[test]
    fn transmitter_fields_must_match() {
        let d = events_delivered(None);
        let ok = ConfigBody {
            iss: Some("https://m".into()),
            events_delivered: Some(d.iter().rev().cloned().collect()),
            min_verification_interval: Some(MIN_VERIFICATION_INTERVAL),
            ..ConfigBody::default()
        };
        assert!(check_fixed(&ok, "https://m", None, &d).is_ok());
        let bad_iss = ConfigBody {
            iss: Some("https://other".into()),
            ..ConfigBody::default()
        };
        assert!(check_fixed(&bad_iss, "https://m", None, &d).is_err());
        let bad_aud = ConfigBody {
            aud: Some(OneOrMany::One("x".into())),
            ..ConfigBody::default()
        };
        assert!(check_fixed(&bad_aud, "https://m", Some(&["y".into()]), &d).is_err());
        assert!(check_fixed(&bad_aud, "https://m", Some(&["x".into()]), &d).is_ok());
    }

    #[test]
    fn query_takes_only_stream_id() {
        assert_eq!(stream_id_param(None).unwrap(), None);
        assert_eq!(
            stream_id_param(Some("stream_id=abc")).unwrap().as_deref(),
            Some("abc")
        );
        assert!(stream_id_param(Some("stream_id=a&stream_id=b")).is_err());
        assert!(stream_id_param(Some("id=a")).is_err());
    }
}
