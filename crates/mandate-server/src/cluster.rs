//! Several nodes on one database: keeping this node's in-memory state in step with what the
//! other nodes commit.
//!
//! Hot-path state lives in memory (the revocation index, the agent directory, the signing keys,
//! the admin credentials). A node updates its own copy after its own writes; what another node
//! writes reaches it as a [`Change`] from [`mandate_store::Store::changes`] (PostgreSQL
//! `LISTEN/NOTIFY`), and [`follow`] applies it here:
//!
//! * a revocation: the feed is read from where this node last was, each entry goes into the
//!   index and onto this node's feed (its verifiers' event stream and Shared Signals streams), so
//!   a gateway subscribed to this node refuses the token within milliseconds;
//! * agents, signing keys, admin credentials: reloaded from the store;
//! * an approval decided elsewhere: announced to this node's gateway dispatcher;
//! * [`Change::Resync`] (notifications may have been lost): all of the above.
//!
//! Applying a change twice is harmless (the index and the feed's followers ignore what they
//! have), so a node hears its own changes too and does not tell them apart.

use std::sync::{Arc, Weak};

use mandate_core::approval::Dispatch;
use mandate_store::{Change, StoreError};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Feed entries read per page when catching up.
const PAGE: u32 = 1000;

/// How often a node that hears nothing re-reads the revocation feed anyway (a safety net for a
/// listener that lost its connection without noticing).
const QUIET_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Where this node is in the revocation feed: every entry up to `seq` is in its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last feed sequence number applied here.
    pub seq: i64,
}

/// Applies `changes` to `state` until the state is dropped or the store stops announcing.
/// `cursor` is the revocation feed head the state was loaded at.
pub fn follow(
    state: Weak<AppState>,
    mut changes: broadcast::Receiver<Change>,
    mut cursor: Cursor,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let received = tokio::time::timeout(QUIET_RECHECK, changes.recv()).await;
            let Some(state) = state.upgrade() else { break };
            let change = match received {
                Ok(Ok(c)) => c,
                // Missed some: reload everything.
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(missed = n, "fell behind other nodes' changes; reloading");
                    Change::Resync
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => break,
                Err(_quiet) => Change::Revocation(i64::MAX),
            };
            if let Err(e) = apply(&state, &change, &mut cursor).await {
                tracing::error!(error = %e, change = %change.to_text(), "another node's change could not be applied; retrying on the next one");
            }
        }
    })
}

/// Applies one change.
pub async fn apply(
    state: &Arc<AppState>,
    change: &Change,
    cursor: &mut Cursor,
) -> Result<(), StoreError> {
    match change {
        Change::Revocation(seq) if *seq <= cursor.seq => Ok(()),
        Change::Revocation(_) => catch_up(state, cursor).await,
        Change::Agents => state.directory.reload(state.store.as_ref()).await,
        Change::SigningKeys => reload_keys(state).await,
        Change::AdminCredentials => state.admins.reload(state.store.as_ref()).await,
        Change::Approval(id) => announce_decision(state, id).await,
        // The in-process gateway re-reads secrets within its cache time.
        Change::Secrets => Ok(()),
        Change::Resync => {
            catch_up(state, cursor).await?;
            state.directory.reload(state.store.as_ref()).await?;
            reload_keys(state).await?;
            state.admins.reload(state.store.as_ref()).await
        }
    }
}

/// Reads the revocation feed after `cursor` and applies every entry.
async fn catch_up(state: &AppState, cursor: &mut Cursor) -> Result<(), StoreError> {
    loop {
        let now = state.clock.now();
        let page = state.store.revocation_feed(cursor.seq, PAGE, now).await?;
        let Some(last) = page.last().map(|e| e.seq) else {
            return Ok(());
        };
        for entry in page {
            crate::revocation::apply(state, &entry);
            state.feed.publish(entry);
        }
        cursor.seq = last;
    }
}

async fn reload_keys(state: &AppState) -> Result<(), StoreError> {
    state
        .keys
        .reload(state.store.as_ref(), &state.master, state.clock.now())
        .await
        .map_err(|e| StoreError::Database(format!("signing keys: {e}")))
}

/// Tells this node's gateway dispatcher about an approval decided on another node, when it has
/// something to carry out.
async fn announce_decision(state: &AppState, id: &str) -> Result<(), StoreError> {
    if let Some(a) = state.store.approval(id).await?
        && a.approval.decided.is_some()
        && a.dispatch == Dispatch::NotSent
    {
        state.approvals.announce(id);
    }
    Ok(())
}

/// How often a node that does not lead a job asks again.
pub const LEAD_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until this node leads `job` — holds the store-wide lock of that name — for jobs that
/// must run on one node at a time (audit checkpoints and retention, Shared Signals delivery).
/// With SQLite it is granted at once. Keep the lease for as long as the job runs; a node that
/// stops or dies releases it and another takes over within [`LEAD_RETRY`]. `None` once the
/// state is gone (the server stopped).
pub async fn lead(state: &Weak<AppState>, job: &str) -> Option<mandate_store::Lease> {
    loop {
        let store = state.upgrade()?.store.clone();
        match store.try_lock(job).await {
            Ok(Some(lease)) => {
                tracing::debug!(job, "this node leads the job");
                return Some(lease);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job, error = %e, "could not ask to lead the job"),
        }
        drop(store);
        tokio::time::sleep(LEAD_RETRY).await;
    }
}
