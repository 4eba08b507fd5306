//! The revocation feed: every durable revocation, in sequence order, for subscribers — the
//! server-sent-events stream of Mandate's verifiers and the Shared Signals streams.
//!
//! A revocation is published here after its commit. Publication order across concurrent
//! revocations is not sequence order, and a slow subscriber may miss broadcasts, so a subscriber
//! never trusts the broadcast alone: a [`Follower`] delivers strictly `last + 1, last + 2, …`,
//! and reads the store whenever the broadcast skips ahead or lags. The store is the truth; the
//! broadcast only wakes followers up quickly.

use std::sync::Arc;

use mandate_store::{RevocationEntry, Store, StoreError};
use tokio::sync::{broadcast, watch};

/// How many entries the broadcast buffers for a slow subscriber before it must re-read.
const CAPACITY: usize = 4096;

/// How many entries one store read returns.
const PAGE: u32 = 1000;

/// The publishing side, shared in the server state.
pub struct Feed {
    tx: broadcast::Sender<Arc<RevocationEntry>>,
    closed: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: broadcast::channel(CAPACITY).0,
            closed: watch::channel(false).0,
        }
    }
}

impl Feed {
    /// Announces a durable revocation to every current subscriber.
    pub fn publish(&self, entry: RevocationEntry) {
        // No subscriber is not an error: the entry is in the store for whoever comes later.
        let _ = self.tx.send(Arc::new(entry));
    }

    /// Ends every follower (their streams finish), for a graceful shutdown.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Becomes `true` at shutdown, for other long-lived streams (the console's) to end with it.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Starts following the feed after sequence number `after` (0 for the beginning).
    pub fn follow(&self, store: Arc<dyn Store>, after: i64) -> Follower {
        Follower {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            store,
            last: after.max(0),
            reread: true,
        }
    }
}

/// A subscriber that delivers every entry after its starting point exactly once, in order.
pub struct Follower {
    rx: broadcast::Receiver<Arc<RevocationEntry>>,
    closed: watch::Receiver<bool>,
    store: Arc<dyn Store>,
    last: i64,
    reread: bool,
}

/// What [`Follower::next`] found.
#[derive(Debug)]
pub enum Next {
    /// Entries read from the store (a catch-up), in order.
    Backlog(Vec<Arc<RevocationEntry>>),
    /// The follower has delivered everything that was durable when it last read the store.
    CaughtUp,
    /// One new entry, just published.
    Live(Arc<RevocationEntry>),
}

impl Follower {
    /// The last sequence number delivered.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// Waits for what comes next. Errors only if the store cannot be read; `None` once the
    /// server is shutting down.
    pub async fn next(&mut self, now: i64) -> Option<Result<Next, StoreError>> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if self.reread {
                let page = match self.store.revocation_feed(self.last, PAGE, now).await {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                if page.is_empty() {
                    self.reread = false;
                    return Some(Ok(Next::CaughtUp));
                }
                let page: Vec<Arc<RevocationEntry>> = page.into_iter().map(Arc::new).collect();
                if let Some(e) = page.last() {
                    self.last = e.seq;
                }
                return Some(Ok(Next::Backlog(page)));
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.closed.wait_for(|c| *c) => return None,
            };
            match received {
                Ok(e) if e.seq <= self.last => continue,
                Ok(e) if e.seq == self.last + 1 => {
                    self.last = e.seq;
                    return Some(Ok(Next::Live(e)));
                }
                // A gap: an earlier revocation committed but is not yet published. The store
                // has it.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.reread = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
