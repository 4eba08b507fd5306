//! `GET /console/events`: what changed, for the open console pages, as server-sent events.
//!
//! Every second the stream looks for audit events it has not seen (one indexed read). When
//! there are some it sends `audit`; when one of them concerns an approval (a new request or a
//! decision) it also sends `approvals`. Pages refresh the parts that listen
//! (`hx-trigger="sse:audit"`, `"sse:approvals"`). Reading the store rather than an in-process
//! signal means a change made on another node shows up too. The stream ends at shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use mandate_core::audit::AuditEvent;
use mandate_store::AuditFilter;

use super::Failure;
use super::session::Person;
use crate::state::AppState;

/// How often the stream looks for news.
const TICK: Duration = Duration::from_secs(1);
/// How many new events one look reads (enough to tell whether an approval changed).
const PEEK: u32 = 200;

/// The named events a batch of new audit events calls for.
pub fn signals(new: &[AuditEvent]) -> Vec<&'static str> {
    if new.is_empty() {
        return Vec::new();
    }
    let mut out = vec!["audit"];
    if new.iter().any(|e| e.kind.starts_with("approval")) {
        out.push("approvals");
    }
    out
}

/// `GET /console/events`.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    _person: Person,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Failure> {
    let head = state
        .store
        .audit(&AuditFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await?
        .first()
        .map_or(0, |e| e.seq);
    let closing = state.feed.closing();
    let events = futures_util::stream::unfold(
        (state, head, closing, Vec::<&'static str>::new()),
        |(state, mut last, mut closing, mut queued)| async move {
            loop {
                if let Some(name) = queued.pop() {
                    let e = Event::default().event(name).data(last.to_string());
                    return Some((Ok(e), (state, last, closing, queued)));
                }
                if *closing.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = closing.changed() => return None,
                }
                let filter = AuditFilter {
                    after_seq: Some(last),
                    limit: Some(PEEK),
                    ..Default::default()
                };
                match state.store.audit(&filter).await {
                    Ok(new) => {
                        if let Some(max) = new.iter().map(|e| e.seq).max() {
                            last = max;
                        }
                        queued = signals(&new);
                    }
                    // The page keeps what it shows; the browser reconnects.
                    Err(e) => {
                        tracing::warn!(error = %e, "console stream could not read the audit log");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> AuditEvent {
        AuditEvent {
            seq: 1,
            time: String::new(),
            kind: kind.into(),
            user: None,
            chain: Vec::new(),
            task: None,
            action: None,
            resource: None,
            decision: mandate_core::audit::Decision::Info,
            reason: String::new(),
            policy_ids: Vec::new(),
            request_id: None,
            credential: None,
            jti: None,
            detail: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn approvals_refresh_only_when_an_approval_changed() {
        assert!(signals(&[]).is_empty());
        assert_eq!(signals(&[event("token.exchange")]), ["audit"]);
        assert_eq!(
            signals(&[event("token.exchange"), event("approval.approved")]),
            ["audit", "approvals"]
        );
    }
}
