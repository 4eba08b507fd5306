//! `POST /ssf/poll/{stream_id}`: poll delivery (RFC 8936).
//!
//! A request acknowledges SETs (`ack`, and `setErrs`, which are recorded as the stream's last
//! error) and asks for up to `maxEvents` more (default 100, at most 1000; `0` only
//! acknowledges). SETs stay in the outbox until acknowledged, so an unacknowledged SET is sent
//! again by the next poll. With `returnImmediately: false` (the default) a poll that finds
//! nothing waits until a SET is queued, up to 30 s (and always a little less than the server's
//! request timeout). A paused stream answers with no SETs; they are held until it is enabled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_store::Op;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::short;
use super::set;
use super::{ENABLED, POLL, no_store};
use crate::admin::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// SETs returned when the request names no `maxEvents`.
pub const DEFAULT_MAX_EVENTS: i64 = 100;
/// The most SETs one poll returns.
pub const MAX_EVENTS: i64 = 1000;
/// The most `jti`s one poll may acknowledge or report.
const MAX_ACKS: usize = 10_000;
/// The longest a long poll waits.
pub const LONG_POLL: Duration = Duration::from_secs(30);

/// One entry of `setErrs`.
#[derive(Debug, Clone, Deserialize)]
pub struct SetErr {
    /// The error code (RFC 8935 §2.4).
    pub err: String,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A poll request (RFC 8936 §2.2). Unknown members are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PollRequest {
    /// The most SETs to return.
    #[serde(default, rename = "maxEvents")]
    pub max_events: Option<i64>,
    /// Answer at once even if there is nothing.
    #[serde(default, rename = "returnImmediately")]
    pub return_immediately: Option<bool>,
    /// `jti`s processed.
    #[serde(default)]
    pub ack: Option<Vec<String>>,
    /// `jti`s refused, with why.
    #[serde(default, rename = "setErrs")]
    pub set_errs: Option<BTreeMap<String, SetErr>>,
}

/// An RFC 8935-style error answer (`err`, `description`).
fn refuse(status: StatusCode, description: impl Into<String>) -> Response {
    no_store(
        (
            status,
            Json(json!({"err": "invalid_request", "description": description.into()})),
        )
            .into_response(),
    )
}

/// Parses and checks a poll request; `Err` says what is wrong.
pub fn parse(bytes: &Bytes) -> Result<PollRequest, String> {
    let req: PollRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        PollRequest::default()
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                "request body is not valid JSON".to_owned()
            } else {
                format!("request body does not fit: {e}")
            }
        })?
    };
    if req.max_events.is_some_and(|n| n < 0) {
        return Err("`maxEvents` must not be negative".into());
    }
    let acks =
        req.ack.as_ref().map_or(0, Vec::len) + req.set_errs.as_ref().map_or(0, BTreeMap::len);
    if acks > MAX_ACKS {
        return Err(format!("one poll may acknowledge at most {MAX_ACKS} SETs"));
    }
    let too_long = |j: &String| j.is_empty() || j.len() > 256;
    if req.ack.iter().flatten().any(too_long)
        || req.set_errs.iter().flat_map(|m| m.keys()).any(too_long)
    {
        return Err("`ack` and `setErrs` must name SETs by their `jti`".into());
    }
    Ok(req)
}

/// The last `setErrs` entry, as the stream's last error.
fn reported_error(errs: &BTreeMap<String, SetErr>) -> Option<String> {
    let (jti, e) = errs.iter().next_back()?;
    let description: String = e
        .description
        .as_deref()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    Some(
        json!({
            "err": short(&e.err),
            "description": description,
            "jti": jti,
            "reported_by": "receiver",
        })
        .to_string(),
    )
}

/// `POST /ssf/poll/{stream_id}`.
pub async fn poll(
    State(state): State<Arc<AppState>>,
    _admin: Admin,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let req = match parse(&bytes) {
        Ok(r) => r,
        Err(why) => return Ok(refuse(StatusCode::BAD_REQUEST, why)),
    };
    let stream = super::config::find(&state, &id).await?;
    if stream.method != POLL {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "stream `{}` uses push delivery; its SETs are sent to the receiver",
                short(&id)
            ),
        ));
    }

    let mut jtis: Vec<String> = req.ack.clone().unwrap_or_default();
    let errs = req.set_errs.clone().unwrap_or_default();
    jtis.extend(errs.keys().cloned());
    if !jtis.is_empty() {
        let mut ops = vec![Op::AckSsf {
            stream: id.clone(),
            jtis,
        }];
        if let Some(e) = reported_error(&errs) {
            ops.push(Op::SetSsfError {
                stream: id.clone(),
                error: Some(e),
                at: state.clock.now(),
            });
        }
        state.store.commit(ops).await?;
    }

    let max = req.max_events.unwrap_or(DEFAULT_MAX_EVENTS).min(MAX_EVENTS);
    let wait = !req.return_immediately.unwrap_or(false) && max > 0;
    let bound = LONG_POLL.min(Duration::from_secs(
        state.config.limits.request_timeout_secs.saturating_sub(2),
    ));
    let deadline = tokio::time::Instant::now() + bound;
    let stop = state.ssf.watch_stopping();
    let (queued, more) = loop {
        let mut wake = state.ssf.watch_queue(&id);
        let Some(current) = state.store.ssf_stream(&id).await? else {
            break (Vec::new(), false);
        };
        let items = if current.status == ENABLED {
            let limit = u32::try_from(max.max(0) + 1).unwrap_or(1);
            state.store.ssf_outbox(&id, limit).await?
        } else {
            Vec::new()
        };
        let more = i64::try_from(items.len()).unwrap_or(i64::MAX) > max;
        if more || max == 0 || !items.is_empty() || !wait || state.ssf.is_stopping() {
            break (items, more);
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { break (Vec::new(), false) },
            () = tokio::time::sleep_until(deadline) => break (Vec::new(), false),
            () = super::stopped(stop.clone()) => break (Vec::new(), false),
        }
    };

    let key = state.keys.keys().current.clone();
    let mut sets = Map::new();
    for q in queued.iter().take(usize::try_from(max).unwrap_or(0)) {
        let jwt = set::sign(&key, &q.claims).map_err(|e| {
            tracing::error!(error = %e, stream = %id, "signing a SET failed");
            ApiError::server_error()
        })?;
        sets.insert(q.jti.clone(), Value::String(jwt));
    }
    Ok(no_store(
        (
            StatusCode::OK,
            Json(json!({"sets": sets, "moreAvailable": more})),
        )
            .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn requests_parse_with_defaults_and_refuse_nonsense() {
        let r = parse(&Bytes::from_static(b"")).unwrap();
        assert!(r.max_events.is_none() && r.ack.is_none());
        let r = parse(&Bytes::from_static(
            br#"{"maxEvents": 5, "returnImmediately": true, "ack": ["a"],
                 "setErrs": {"b": {"err": "invalid_key", "description": "no"}}, "extra": 1}"#,
        ))
        .unwrap();
        assert_eq!(r.max_events, Some(5));
        assert_eq!(r.return_immediately, Some(true));
        assert_eq!(r.ack.unwrap(), ["a"]);
        assert_eq!(r.set_errs.unwrap()["b"].err, "invalid_key");
        for bad in [
            &b"{"[..],
            br#"{"maxEvents": -1}"#,
            br#"{"maxEvents": "ten"}"#,
            br#"{"ack": "a"}"#,
            br#"{"ack": [""]}"#,
            br#"{"setErrs": {"a": {}}}"#,
        ] {
            assert!(parse(&Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn reported_errors_name_the_set() {
        let mut m = BTreeMap::new();
        m.insert(
            "j1".to_owned(),
            SetErr {
                err: "invalid_issuer".into(),
                description: Some("who are you".into()),
            },
        );
        let v: Value = serde_json::from_str(&reported_error(&m).unwrap()).unwrap();
        assert_eq!(v["err"], "invalid_issuer");
        assert_eq!(v["jti"], "j1");
        assert!(reported_error(&BTreeMap::new()).is_none());
    }
}
