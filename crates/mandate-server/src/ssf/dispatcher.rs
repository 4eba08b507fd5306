//! The dispatcher: one task per server that follows the revocation feed from the lowest stream
//! cursor and, for every stream that has not yet considered an entry, queues the entry's SET
//! (if the stream holds SETs, delivers that event type and has not removed its subject) and
//! advances the stream's cursor, both in one unit. It also starts a push worker for each push
//! stream.
//!
//! It re-reads the streams before each batch, so changes (a new stream, a pause, a removed
//! subject) apply to the next revocation; a stream whose cursor is behind the follower (created
//! while the follower was ahead, or whose write failed) makes it start again from that cursor;
//! streams already past an entry skip it, so nothing is queued twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mandate_core::revocation::{RevocationEntry, RevocationKind};
use mandate_store::{Op, SsfSet, SsfStream, StoreError};
use tokio::task::JoinHandle;

use super::PUSH;
use super::config::{events_delivered, holds};
use super::set::{self, Context, Event};
use crate::feed::{Follower, Next};
use crate::state::AppState;

/// Pause after a failure before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the dispatcher. Stop it with [`AppState::ssf`]`.stop()` and await the handle.
pub fn spawn(state: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(run(state))
}

/// Whether `stream` wants `event`: it holds SETs, delivers the type, and has not removed the
/// subject.
pub fn wants(stream: &SsfStream, event: &Event) -> bool {
    holds(&stream.status)
        && events_delivered(stream.events_requested.as_deref())
            .iter()
            .any(|t| t == event.event_type)
        && !stream
            .removed_subjects
            .iter()
            .any(|r| set::subject_matches(r, &event.sub_id))
}

/// What the store and the directory say about a revocation's subject.
async fn context(state: &AppState, entry: &RevocationEntry) -> Context {
    let r = &entry.record;
    let mut ctx = Context::default();
    match r.kind {
        RevocationKind::User => {
            // The issuer of a token it ended names the user's IdP; with a single trusted IdP
            // there is no doubt either.
            for t in entry.tokens.iter().take(5) {
                if let Ok(Some(rec)) = state.store.token(&t.jti).await
                    && rec.sub == r.target
                    && let Some(iss) = rec.sub_iss
                {
                    ctx.user_issuer = Some(iss);
                    break;
                }
            }
            if ctx.user_issuer.is_none() {
                let mut issuers: Vec<&str> = state
                    .config
                    .issuers
                    .iter()
                    .map(|i| i.issuer.as_str())
                    .collect();
                if let Some(dev) = &state.dev {
                    issuers.push(dev.issuer.as_str());
                }
                if let [only] = issuers.as_slice() {
                    ctx.user_issuer = Some((*only).to_owned());
                }
            }
        }
        RevocationKind::Task => {
            if let Ok(Some(task)) = state.store.task(&r.target).await {
                ctx.task_user = task.user.map(|u| (u, task.user_issuer));
                ctx.task_agent = Some(task.agent);
            }
        }
        RevocationKind::Key => {
            ctx.key_owners = state
                .directory
                .all()
                .iter()
                .filter(|a| a.keys.iter().any(|k| k.kid == r.target))
                .map(|a| a.id.as_str().to_owned())
                .collect();
        }
        RevocationKind::Token | RevocationKind::Agent => {}
    }
    ctx
}

/// Queues `entries` on every stream not yet past them. Returns whether every write landed.
///
/// The streams are read again under the management lock, so a status, subject or delivery
/// change made meanwhile applies, and a stream disabled or deleted meanwhile gets nothing.
async fn process(state: &AppState, entries: &[Arc<RevocationEntry>]) -> bool {
    let _guard = state.ssf.manage().await;
    let streams = match state.store.ssf_streams().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the Shared Signals dispatcher cannot read its streams");
            return false;
        }
    };
    let streams = streams.as_slice();
    let now = state.clock.now();
    let mut batches: Vec<(Vec<SsfSet>, Option<i64>)> = vec![(Vec::new(), None); streams.len()];
    for entry in entries {
        if !streams.iter().any(|s| s.cursor < entry.seq) {
            continue;
        }
        let ctx = context(state, entry).await;
        let event = set::revocation_event(&state.issuer, entry, &ctx);
        for (s, (sets, cursor)) in streams.iter().zip(batches.iter_mut()) {
            if s.cursor >= entry.seq {
                continue;
            }
            if wants(s, &event) {
                let Ok(jti) = mandate_token::random_id::<16>() else {
                    return false;
                };
                let claims = set::claims(&state.issuer, &s.aud, &jti, now, &event).to_string();
                sets.push(SsfSet { jti, claims });
            }
            *cursor = Some(entry.seq);
        }
    }
    let mut ok = true;
    for (s, (sets, cursor)) in streams.iter().zip(batches) {
        let Some(cursor) = cursor else { continue };
        let any = !sets.is_empty();
        let op = Op::EnqueueSsf {
            stream: s.id.clone(),
            sets,
            cursor: Some(cursor),
            at: now,
        };
        match state.store.commit(vec![op]).await {
            Ok(_) => {
                if any {
                    state.ssf.queued(&s.id);
                }
            }
            // Deleted meanwhile: nothing to do.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, stream = %s.id, "queueing SETs failed; will retry");
                ok = false;
            }
        }
    }
    ok
}

/// Starts a push worker for each push stream that holds SETs and has none running.
fn supervise(
    state: &Arc<AppState>,
    streams: &[SsfStream],
    workers: &mut HashMap<String, JoinHandle<()>>,
    http: &reqwest::Client,
) {
    workers.retain(|_, h| !h.is_finished());
    for s in streams {
        if s.method == PUSH && holds(&s.status) && !workers.contains_key(&s.id) {
            let h = tokio::spawn(super::push::run(state.clone(), s.id.clone(), http.clone()));
            workers.insert(s.id.clone(), h);
        }
    }
}

async fn pause(state: &AppState) {
    tokio::select! {
        () = tokio::time::sleep(RETRY) => {}
        () = super::stopped(state.ssf.watch_stopping()) => {}
    }
}

async fn run(state: Arc<AppState>) {
    // One node delivers: each stream has one cursor and one outbox.
    let stop = state.ssf.watch_stopping();
    let _lease = loop {
        if state.ssf.is_stopping() {
            return;
        }
        match state.store.try_lock("ssf-dispatcher").await {
            Ok(Some(lease)) => break lease,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not ask to lead Shared Signals delivery"),
        }
        tokio::select! {
            () = tokio::time::sleep(crate::cluster::LEAD_RETRY) => {}
            () = super::stopped(stop.clone()) => return,
        }
    };
    let http = super::push::client();
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut follower: Option<Follower> = None;
    let mut changes = state.ssf.watch_streams();
    loop {
        if state.ssf.is_stopping() {
            break;
        }
        let _ = changes.borrow_and_update();
        let streams = match state.store.ssf_streams().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the Shared Signals dispatcher cannot read its streams");
                pause(&state).await;
                continue;
            }
        };
        supervise(&state, &streams, &mut workers, &http);
        let Some(min) = streams.iter().map(|s| s.cursor).min() else {
            follower = None;
            tokio::select! {
                _ = changes.changed() => {}
                () = super::stopped(stop.clone()) => break,
            }
            continue;
        };
        if follower.as_ref().is_none_or(|f| f.last() > min) {
            follower = Some(state.feed.follow(state.store.clone(), min));
        }
        let Some(f) = follower.as_mut() else { continue };
        let next = tokio::select! {
            n = f.next(state.clock.now()) => n,
            _ = changes.changed() => continue,
            () = super::stopped(stop.clone()) => break,
        };
        let ok = match next {
            None => break,
            Some(Err(e)) => {
                tracing::error!(error = %e, "the Shared Signals dispatcher cannot read the feed");
                false
            }
            Some(Ok(Next::CaughtUp)) => true,
            Some(Ok(Next::Backlog(page))) => process(&state, &page).await,
            Some(Ok(Next::Live(e))) => process(&state, &[e]).await,
        };
        if !ok {
            // Start again from the lowest cursor: what did not land is retried, what did is
            // skipped.
            follower = None;
            pause(&state).await;
        }
    }
    for (_, h) in workers {
        h.abort();
    }
}
