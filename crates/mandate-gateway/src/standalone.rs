//! `mandate gateway`: the gateway as its own process, in front of its upstreams, following a
//! Mandate server over the network ([`crate::remote::Remote`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, GatewayConfig, Plan};
use crate::proxy::Gateway;
use crate::remote::{Remote, RemoteConfig, RemoteError};

/// Why the standalone gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Mandate could not be reached or answered wrongly.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Binding or building the client failed.
    #[error("gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// A running standalone gateway.
pub struct Standalone {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its public URL (the audience tokens need; the `iss` of its Transaction Tokens).
    pub url: String,
    /// Mandate, as this gateway reaches it.
    pub remote: Arc<Remote>,
    /// The proxy.
    pub gateway: Arc<Gateway<Remote>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

/// Binds `listen`, connects to Mandate at `mandate_url` with `credential` (role `gateway`), and
/// serves `config`.
pub async fn start(
    config: &GatewayConfig,
    listen: SocketAddr,
    mandate_url: &str,
    credential: String,
    leeway: i64,
) -> Result<Standalone, StartError> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let plan = Plan::new(config, &format!("http://{addr}"))?;
    let url = plan.public_url.clone();
    let remote = Remote::connect(RemoteConfig {
        mandate_url: mandate_url.to_owned(),
        issuer: config.mandate_issuer.clone(),
        credential,
        public_url: url.clone(),
        audiences: plan.audiences(),
        leeway,
    })
    .await?;
    let gateway = Arc::new(Gateway::new(plan, Arc::clone(&remote))?);
    let (tx, rx) = oneshot::channel::<()>();
    let serving = Arc::clone(&gateway);
    let task = tokio::spawn(async move {
        crate::serve::serve(serving, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    let dispatcher = crate::proxy::spawn_dispatcher(&gateway);
    tracing::info!(%addr, %url, mandate = %mandate_url, "standalone gateway is listening");
    Ok(Standalone {
        addr,
        url,
        remote,
        gateway,
        shutdown: Some(tx),
        task,
        dispatcher,
    })
}

impl Standalone {
    /// Stops accepting, lets requests in flight finish, sends the queued audit events.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.dispatcher.abort();
        self.remote.close(Duration::from_secs(10)).await;
    }
}
