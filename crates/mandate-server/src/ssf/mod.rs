//! The OpenID Shared Signals (SSF 1.0) transmitter: every revocation becomes a Security Event
//! Token (RFC 8417) with a CAEP event type, queued durably for each stream and delivered by
//! poll (RFC 8936) or push (RFC 8935). See `docs/shared-signals.md`.
//!
//! * [`config`] — `/.well-known/ssf-configuration` and the configuration endpoint
//!   (`/ssf/streams`);
//! * [`streams`] — status, verification and subjects endpoints;
//! * [`poll`] — the poll endpoint (`/ssf/poll/{stream_id}`);
//! * [`push`] — push delivery, one worker per push stream;
//! * [`dispatcher`] — follows the revocation feed and fills every stream's outbox;
//! * [`set`] — the pure mapping from a revocation to a SET, and signing.
//!
//! Each stream has a durable outbox and a cursor (the last feed sequence number it has
//! considered). The dispatcher writes a stream's new SETs and its new cursor in one unit, so a
//! restart resumes without gaps or duplicates; a SET leaves the outbox only when a push was
//! accepted or a poll acknowledged it.

pub mod config;
pub mod dispatcher;
pub mod poll;
pub mod push;
pub mod set;
pub mod streams;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use tokio::sync::watch;

/// Delivery method URI of push delivery (RFC 8935).
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// Delivery method URI of poll delivery (RFC 8936).
pub const POLL: &str = "urn:ietf:rfc:8936";
/// The SSF version implemented (`spec_version`).
pub const SPEC_VERSION: &str = "1_0";
/// Least seconds between two verification requests on one stream.
pub const MIN_VERIFICATION_INTERVAL: i64 = 5;
/// The most streams one server keeps.
pub const MAX_STREAMS: usize = 100;

/// Stream status `enabled`.
pub const ENABLED: &str = "enabled";
/// Stream status `paused`: SETs are held, not transmitted.
pub const PAUSED: &str = "paused";
/// Stream status `disabled`: nothing is transmitted or held.
pub const DISABLED: &str = "disabled";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the transmitter's parts share at run time: wake-ups (a stream's outbox grew, a stream's
/// configuration changed, the server is stopping), the time of each stream's last
/// verification, and a lock that serialises stream management.
pub struct Hub {
    streams: watch::Sender<u64>,
    stopping: watch::Sender<bool>,
    queues: Mutex<HashMap<String, watch::Sender<u64>>>,
    verified: Mutex<HashMap<String, i64>>,
    manage: tokio::sync::Mutex<()>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            streams: watch::channel(0).0,
            stopping: watch::channel(false).0,
            queues: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            manage: tokio::sync::Mutex::new(()),
        }
    }
}

impl Hub {
    /// Says that a stream was created, changed or deleted.
    pub fn streams_changed(&self) {
        self.streams.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on [`Hub::streams_changed`].
    pub fn watch_streams(&self) -> watch::Receiver<u64> {
        self.streams.subscribe()
    }

    /// Says that stream `id` has new SETs (or new delivery settings).
    pub fn queued(&self, id: &str) {
        let mut q = lock(&self.queues);
        q.entry(id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on [`Hub::queued`] for stream `id`. Subscribe before looking at the outbox, so a
    /// SET queued in between is not missed.
    pub fn watch_queue(&self, id: &str) -> watch::Receiver<u64> {
        let mut q = lock(&self.queues);
        q.entry(id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Forgets a deleted stream's wake-ups and verification time.
    pub fn forget(&self, id: &str) {
        lock(&self.queues).remove(id);
        lock(&self.verified).remove(id);
    }

    /// Tells every part to stop (server shutdown): long polls answer, workers end.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Wakes when the server starts stopping.
    pub fn watch_stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Records a verification request on stream `id` at `now` unless the previous one was less
    /// than [`MIN_VERIFICATION_INTERVAL`] seconds ago; then returns the seconds to wait.
    pub fn verification_allowed(&self, id: &str, now: i64) -> Result<(), i64> {
        let mut v = lock(&self.verified);
        if let Some(last) = v.get(id) {
            let wait = last + MIN_VERIFICATION_INTERVAL - now;
            if wait > 0 {
                return Err(wait);
            }
        }
        v.insert(id.to_owned(), now);
        Ok(())
    }

    /// Serialises read-modify-write changes of streams.
    pub async fn manage(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.manage.lock().await
    }
}

/// Waits until the server stops (resolves at once if it already is).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Adds `Cache-Control: no-store` (every SSF management answer carries it).
pub fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
