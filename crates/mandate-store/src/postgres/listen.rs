//! Hearing other nodes' changes: one `LISTEN mandate_changes` connection per process, whose
//! notifications become [`Change`]s on a broadcast channel.
//!
//! PostgreSQL delivers a notification to every listening session when the transaction that sent
//! it commits, in commit order. A notification sent while this process's listening connection
//! was down is lost, so after reconnecting the listener announces [`Change::Resync`]: whoever
//! keeps state reloads it from the store.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{Change, StoreError};

/// The channel every write transaction notifies.
pub(crate) const CHANNEL: &str = "mandate_changes";

/// How long to wait before listening again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Starts listening (the first `LISTEN` is done before this returns, so no change committed
/// after it is missed) and hands every change heard to `changes`.
pub(crate) async fn spawn(
    pool: PgPool,
    changes: broadcast::Sender<Change>,
) -> Result<JoinHandle<()>, StoreError> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(tokio::spawn(run(listener, changes)))
}

async fn run(mut listener: PgListener, changes: broadcast::Sender<Change>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match Change::parse(n.payload()) {
                // No subscriber is not an error.
                Some(change) => drop(changes.send(change)),
                None => tracing::debug!(payload = n.payload(), "unknown change ignored"),
            },
            // The connection was lost; the next call reconnects and listens again. What was
            // sent meanwhile is gone.
            Ok(None) => {
                tracing::warn!("lost the PostgreSQL change listener; reconnecting");
                drop(changes.send(Change::Resync));
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for changes failed; retrying");
                tokio::time::sleep(RETRY).await;
                drop(changes.send(Change::Resync));
            }
        }
    }
}
