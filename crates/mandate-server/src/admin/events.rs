//! `GET /v1/revocations/events`: the revocation feed as server-sent events, for Mandate's own
//! verifiers (`mandate-verify`).
//!
//! Each revocation is one `revocation` event whose `id` is its feed sequence number and whose
//! data is the [`RevocationEntry`](mandate_core::revocation::RevocationEntry) as JSON. A client
//! that reconnects with `Last-Event-ID: N` (or `?after=N`) is sent every revocation after `N`,
//! then the live ones: nothing is lost across a disconnect. After the backlog, one `ready` event
//! (data `{"seq": N}`, no id) says the client is now current. A comment is sent every 10 s so
//! that a silent connection can be told from a dead one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::admin::auth::StreamReader;
use crate::error::ApiError;
use crate::feed::Next;
use crate::state::AppState;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Query of `GET /v1/revocations/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// Start after this sequence number (instead of `Last-Event-ID`).
    pub after: Option<i64>,
}

/// `GET /v1/revocations/events`.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    _reader: StreamReader,
    headers: HeaderMap,
    Query(q): Query<After>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad_request("`Last-Event-ID` must be a sequence number"))
        })
        .transpose()?;
    let after = match (q.after, header) {
        (Some(n), _) if n < 0 => return Err(ApiError::bad_request("`after` must be ≥ 0")),
        (Some(n), _) => n,
        (None, Some(n)) => n,
        (None, None) => 0,
    };
    let follower = state.feed.follow(state.store.clone(), after);
    let events = futures_util::stream::unfold(
        (state, follower, VecDeque::<Event>::new()),
        |(state, mut follower, mut queued)| async move {
            loop {
                if let Some(e) = queued.pop_front() {
                    return Some((Ok(e), (state, follower, queued)));
                }
                match follower.next(state.clock.now()).await? {
                    Ok(Next::Backlog(page)) => queued.extend(page.iter().map(|e| event(e))),
                    Ok(Next::Live(e)) => queued.push_back(event(&e)),
                    Ok(Next::CaughtUp) => queued.push_back(
                        Event::default()
                            .event("ready")
                            .data(json!({"seq": follower.last()}).to_string()),
                    ),
                    Err(e) => {
                        // The client reconnects with its last id and loses nothing.
                        tracing::error!(error = %e, "revocation stream could not read the feed");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn event(e: &mandate_core::revocation::RevocationEntry) -> Event {
    Event::default()
        .event("revocation")
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}
