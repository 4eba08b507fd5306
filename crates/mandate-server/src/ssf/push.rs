//! Push delivery (RFC 8935): one worker per push stream sends the stream's outbox in order,
//! one SET at a time, as `POST <endpoint_url>` with `Content-Type: application/secevent+jwt`
//! and the configured `Authorization` header. `202` (or `200`, `204`) removes the SET from the
//! outbox; anything else — an RFC 8935 error (`{"err", "description"}`), another status, a
//! connection failure — is recorded as the stream's last error and retried after a backoff
//! that doubles from 250 ms to 30 s. Nothing is dropped: a receiver that refuses a SET blocks
//! its stream until it accepts it (or the stream is changed, disabled or deleted), so SETs
//! always arrive in order.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use mandate_store::{Op, SsfStream};
use serde_json::{Value, json};

use super::config::open_header;
use super::set;
use super::{ENABLED, PUSH};
use crate::state::AppState;

/// How long one push may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry delay.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long an idle worker sleeps before looking again anyway.
const IDLE: Duration = Duration::from_secs(30);
/// Largest error body read from a receiver.
const MAX_ERROR_BODY: usize = 4096;

/// The HTTP client of push delivery: no redirects, bounded time.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The delay before retry number `failures` (1, 2, …).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

/// What a receiver's refusal says, as the stream's last error (JSON text): `err` and
/// `description` from an RFC 8935 error body if there is one, else `http_error` and the body's
/// start; plus the HTTP status and the SET's `jti`.
pub fn refusal(status: u16, body: &[u8], jti: &str) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = |v: Option<&Value>| -> Option<String> {
        v.and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect())
    };
    let err = text(parsed.as_ref().and_then(|p| p.get("err")));
    let description = text(parsed.as_ref().and_then(|p| p.get("description")));
    let (err, description) = match err {
        Some(e) => (e, description.unwrap_or_default()),
        None => (
            "http_error".to_owned(),
            String::from_utf8_lossy(body).chars().take(500).collect(),
        ),
    };
    json!({"err": err, "description": description, "http_status": status, "jti": jti}).to_string()
}

/// Sends one SET. `Ok` if the receiver accepted it.
async fn deliver(
    http: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
    jti: &str,
    jwt: String,
) -> Result<(), String> {
    let mut req = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/secevent+jwt")
        .header(header::ACCEPT, "application/json")
        .body(jwt);
    if let Some(a) = authorization {
        let mut v = HeaderValue::from_str(a).map_err(|_| {
            json!({"err": "configuration", "description": "the stored authorization header is not a valid header value", "jti": jti}).to_string()
        })?;
        v.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let description: String = e.to_string().chars().take(500).collect();
            return Err(
                json!({"err": "connection_failed", "description": description, "jti": jti})
                    .to_string(),
            );
        }
    };
    let status = resp.status().as_u16();
    if matches!(status, 200 | 202 | 204) {
        return Ok(());
    }
    let mut body = Vec::new();
    let mut resp = resp;
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    Err(refusal(status, &body, jti))
}

/// What the worker does next.
enum Step {
    /// The stream is gone or no longer pushed: end.
    Done,
    /// Nothing to send (or paused): wait for a wake-up.
    Idle,
    /// Delivered one SET.
    Sent,
    /// Failed; wait out the backoff.
    Failed,
}

async fn step(state: &AppState, id: &str, http: &reqwest::Client, failures: &mut u32) -> Step {
    let stream: SsfStream = match state.store.ssf_stream(id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Step::Done,
        Err(e) => {
            tracing::error!(error = %e, stream = %id, "push worker cannot read its stream");
            return Step::Failed;
        }
    };
    if stream.method != PUSH || !super::config::holds(&stream.status) {
        return Step::Done;
    }
    if stream.status != ENABLED {
        return Step::Idle;
    }
    let next = match state.store.ssf_outbox(id, 1).await {
        Ok(mut v) => v.pop(),
        Err(e) => {
            tracing::error!(error = %e, stream = %id, "push worker cannot read its outbox");
            return Step::Failed;
        }
    };
    let Some(q) = next else { return Step::Idle };
    let Some(url) = stream.endpoint_url.as_deref() else {
        return Step::Done;
    };
    let authorization = match &stream.authorization_header {
        Some(sealed) => match open_header(&state.master, id, sealed) {
            Some(h) => Some(h),
            None => {
                tracing::error!(stream = %id, "the stream's authorization header does not open");
                return Step::Failed;
            }
        },
        None => None,
    };
    let jwt = match set::sign(&state.keys.keys().current, &q.claims) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, stream = %id, "signing a SET failed");
            return Step::Failed;
        }
    };
    let now = state.clock.now();
    match deliver(http, url, authorization.as_deref(), &q.jti, jwt).await {
        Ok(()) => {
            *failures = 0;
            let mut ops = vec![Op::AckSsf {
                stream: id.to_owned(),
                jtis: vec![q.jti.clone()],
            }];
            if stream.last_error.is_some() {
                ops.push(Op::SetSsfError {
                    stream: id.to_owned(),
                    error: None,
                    at: now,
                });
            }
            if let Err(e) = state.store.commit(ops).await {
                // Delivered but not yet marked: it goes again (at least once).
                tracing::error!(error = %e, stream = %id, "recording a push failed");
                return Step::Failed;
            }
            Step::Sent
        }
        Err(err) => {
            *failures = failures.saturating_add(1);
            tracing::warn!(stream = %id, error = %err, attempt = *failures, "push delivery failed");
            let _ = state
                .store
                .commit(vec![Op::SetSsfError {
                    stream: id.to_owned(),
                    error: Some(err),
                    at: now,
                }])
                .await;
            Step::Failed
        }
    }
}

/// Runs the push worker of stream `id` until the stream is gone, no longer pushed, or the
/// server stops.
pub async fn run(state: Arc<AppState>, id: String, http: reqwest::Client) {
    let stop = state.ssf.watch_stopping();
    let mut failures = 0u32;
    loop {
        if state.ssf.is_stopping() {
            return;
        }
        let mut wake = state.ssf.watch_queue(&id);
        let mut changed = state.ssf.watch_streams();
        match step(&state, &id, &http, &mut failures).await {
            Step::Done => return,
            Step::Sent => {}
            Step::Idle => {
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = changed.changed() => {}
                    () = tokio::time::sleep(IDLE) => {}
                    () = super::stopped(stop.clone()) => return,
                }
            }
            Step::Failed => {
                // New SETs do not cut the backoff short; a changed configuration does.
                tokio::select! {
                    _ = changed.changed() => {}
                    () = tokio::time::sleep(backoff(failures.max(1))) => {}
                    () = super::stopped(stop.clone()) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(20), MAX_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn refusals_keep_the_receivers_words() {
        let v: Value = serde_json::from_str(&refusal(
            400,
            br#"{"err": "invalid_key", "description": "unknown kid"}"#,
            "j1",
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"err": "invalid_key", "description": "unknown kid", "http_status": 400, "jti": "j1"})
        );
        let v: Value = serde_json::from_str(&refusal(503, b"down", "j2")).unwrap();
        assert_eq!(v["err"], "http_error");
        assert_eq!(v["description"], "down");
        assert_eq!(v["http_status"], 503);
    }
}
