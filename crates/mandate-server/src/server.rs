//! Starting and stopping a Mandate server: data directory, master key, store, keys, admin
//! bootstrap, dev world, listener, graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mandate_store::{PostgresStore, SqliteStore, Store};
use mandate_token::{Alg, MasterKey};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::auth::Role;
use crate::admin::credentials;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dev::{DevIdp, seed_agents, seed_policies};
use crate::files::{create_private_dir, write_private};
use crate::idp::{Idps, TrustedIssuer};
use crate::keyring::KeyRing;
use crate::policy::{PolicyPoint, PolicySource, rights_as_cedar};
use crate::state::{Admins, AppState, Directory, Revocations};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or the listener failed.
    #[error("{0}")]
    Io(String),
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// Storage failed.
    #[error("database: {0}")]
    Store(#[from] mandate_store::StoreError),
    /// Keys failed.
    #[error("signing keys: {0}")]
    Keys(#[from] crate::keyring::KeyRingError),
    /// An identity provider is misconfigured.
    #[error("{0}")]
    Issuer(#[from] crate::idp::JwksError),
    /// The policies do not load.
    #[error("policies refused:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Policies(Vec<mandate_policy::PolicyError>),
}

/// How to start.
pub struct Options {
    /// Configuration.
    pub config: Config,
    /// `--dev`: test IdP, demo world, admin credential written to `admin.token`.
    pub dev: bool,
    /// The master key's text (from `MANDATE_MASTER_KEY`); `None` uses `<data>/master.key`.
    pub master_key: Option<String>,
    /// The clock (tests inject one).
    pub clock: Arc<dyn Clock>,
    /// `--gateway-listen`: run the gateway on this address (overrides `gateway.listen`).
    pub gateway_listen: Option<SocketAddr>,
}

impl Options {
    /// Options with the system clock and no master key override.
    pub fn new(config: Config, dev: bool) -> Options {
        Options {
            config,
            dev,
            master_key: None,
            clock: Arc::new(SystemClock),
            gateway_listen: None,
        }
    }
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Mandate's issuer URL.
    pub url: String,
    /// The admin credential to show: the bootstrap credential on first start; in `--dev`, the
    /// one in `admin.token` on every start.
    pub admin_token: Option<String>,
    /// Whether the credential was created by this start.
    pub admin_token_is_new: bool,
    /// In `--dev` with the console on, its one-time sign-in link (a new one each start).
    pub console_link: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The state, for in-process callers (demo, tests).
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    store: Arc<dyn Store>,
    /// Applies other nodes' changes (several nodes on PostgreSQL).
    cluster: Option<JoinHandle<()>>,
    /// Background jobs that lead (hold a store-wide lock): audit checkpoints and retention.
    jobs: Vec<JoinHandle<()>>,
    /// The Shared Signals dispatcher, stopped before the store closes.
    ssf: Option<JoinHandle<()>>,
    /// The gateway, when it runs in this process.
    pub gateway: Option<crate::gateway::RunningGateway>,
    /// In `--dev`, the sample CRM behind the gateway.
    pub sample: Option<crate::sample::SampleHandle>,
}

fn master_key(dir: &Path, given: Option<&str>) -> Result<MasterKey, StartError> {
    if let Some(text) = given {
        return MasterKey::parse(text)
            .map_err(|e| StartError::MasterKey(format!("`MANDATE_MASTER_KEY`: {e}")));
    }
    let path = dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StartError::MasterKey(format!("`{}`: {e}", path.display())))?;
        return MasterKey::parse(&text)
            .map_err(|e| StartError::MasterKey(format!("`{}`: {e}", path.display())));
    }
    let key = MasterKey::generate().map_err(|e| StartError::MasterKey(e.to_string()))?;
    write_private(&path, key.to_base64().as_bytes())
        .map_err(|e| StartError::MasterKey(format!("`{}`: {e}", path.display())))?;
    Ok(key)
}

/// Opens the store the configuration names: PostgreSQL at `database_url`, else SQLite at
/// `<data_dir>/mandate.db`.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &config.database_url {
        Some(url) => {
            let store = PostgresStore::connect(url.expose()).await?;
            tracing::info!(database = %url.display_safe(), "using PostgreSQL");
            Arc::new(store)
        }
        None => Arc::new(SqliteStore::open(&config.data_dir.join("mandate.db")).await?),
    })
}

/// Starts a server and returns once it is accepting connections.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    let Options {
        mut config,
        dev,
        master_key: master_text,
        clock,
        gateway_listen,
    } = opts;
    if dev && config.tokens.carry_claims.is_empty() {
        // The demo users' region reaches the gateway's record-level decisions.
        config.tokens.carry_claims = crate::dev::DEV_CARRY_CLAIMS
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
    }
    if dev && config.approvals.approver_groups.is_empty() {
        // carol@example.com is in `approver` (SPEC §10).
        config.approvals.approver_groups = vec!["approver".to_owned()];
    }
    if config.approvals.agent_changes.is_none() {
        config.approvals.agent_changes = Some(!dev);
    }
    let dir = config.data_dir.clone();
    create_private_dir(&dir)
        .map_err(|e| StartError::Io(format!("data directory `{}`: {e}", dir.display())))?;
    let master = master_key(&dir, master_text.as_deref())?;
    let store = open_store(&config).await?;
    let dyn_store = store.clone();
    // Other nodes' changes from now on; what they did before is in what is loaded below.
    let changes = store.changes();
    // Nodes starting together on an empty database make one first key and one bootstrap
    // credential: the first start does, the others find them.
    let startup = store.lock("startup").await?;
    let now = clock.now();
    let alg = Alg::parse(&config.signing_alg).map_err(|e| StartError::Io(e.to_string()))?;
    let keys = KeyRing::load_or_create(dyn_store.as_ref(), &master, alg, now).await?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Io(format!("cannot listen on `{}`: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let issuer = config.issuer_url(addr);

    // Admin credentials: a bootstrap credential on first start, shown once.
    let admins = Admins::load(dyn_store.as_ref()).await?;
    let token_file = dir.join("admin.token");
    let (admin_token, admin_token_is_new) = if admins.is_empty() {
        let made =
            credentials::make(dyn_store.as_ref(), "bootstrap", Role::Admin, "system", now).await?;
        admins.insert(made.record);
        if dev {
            write_private(&token_file, made.secret.as_bytes())
                .map_err(|e| StartError::Io(format!("`{}`: {e}", token_file.display())))?;
        }
        (Some(made.secret), true)
    } else if dev {
        (
            std::fs::read_to_string(&token_file)
                .ok()
                .map(|s| s.trim().to_owned()),
            false,
        )
    } else {
        (None, false)
    };

    let mut issuers = Vec::new();
    for c in &config.issuers {
        issuers.push(Arc::new(TrustedIssuer::from_config(c.clone())?));
    }
    let mut policies_dir = config.policies_dir.clone();
    let dev_idp = if dev {
        let idp = DevIdp::load_or_create(&dir, &master, &issuer).map_err(StartError::Io)?;
        let (cfg, set) = idp.trusted_issuer();
        issuers.push(Arc::new(TrustedIssuer::with_keys(cfg, set)));
        seed_agents(dyn_store.as_ref(), &dir, now)
            .await
            .map_err(StartError::Io)?;
        let pdir = policies_dir
            .get_or_insert_with(|| dir.join("policies"))
            .clone();
        seed_policies(&pdir).map_err(StartError::Io)?;
        Some(idp)
    } else {
        None
    };
    let policy = PolicyPoint::load(PolicySource {
        dir: policies_dir,
        rights: rights_as_cedar(&config.rights),
    })
    .map_err(StartError::Policies)?;
    if policy.engine().policy_count() == 0 {
        tracing::warn!("no policy is configured: every scope will be refused");
    }
    let idps = Idps::new(issuers);
    for e in idps.refresh_all().await {
        tracing::warn!(error = %e, "identity provider keys not loaded yet; will retry on first use");
    }
    let workloads = crate::oauth::workload::Workloads::new(&config.workload);
    for e in workloads.load().await.map_err(StartError::Io)? {
        tracing::warn!(error = %e, "workload identity keys not loaded yet; will retry on first use");
    }
    let cursor = crate::cluster::Cursor {
        seq: dyn_store.revocation_head().await?,
    };
    let directory = Directory::load(dyn_store.as_ref()).await?;
    let revocations = Revocations::load(dyn_store.as_ref(), now).await?;
    drop(startup);
    let state = Arc::new(AppState {
        policy,
        usage: crate::usage::UsageCounter::default(),
        user_limit: crate::ratelimit::RateLimiter::new(config.limits.issuance_per_user_per_minute),
        agent_limit: crate::ratelimit::RateLimiter::new(
            config.limits.issuance_per_agent_per_minute,
        ),
        config,
        issuer: issuer.clone(),
        store: dyn_store,
        clock,
        master,
        keys,
        idps,
        workloads,
        directory,
        revocations,
        feed: crate::feed::Feed::default(),
        ssf: crate::ssf::Hub::default(),
        admins,
        dev: dev_idp,
        verified: mandate_verify::VerifiedCache::default(),
        approvals: crate::approvals::Hub::default(),
        console: crate::console::signin::Logins::default(),
    });
    let cluster = changes.map(|rx| crate::cluster::follow(Arc::downgrade(&state), rx, cursor));
    spawn_housekeeping(Arc::downgrade(&state));
    // Jobs that hold a store-wide lock while they run; stopped at shutdown so another node
    // takes over at once.
    let jobs: Vec<JoinHandle<()>> = [
        spawn_checkpoints(Arc::downgrade(&state)).await,
        crate::archive::spawn_retention(Arc::downgrade(&state)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ssf = crate::ssf::dispatcher::spawn(state.clone());
    spawn_policy_watch(Arc::downgrade(&state));
    let app = crate::app::router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let limits = mandate_gateway::serve::Limits {
        max_header_bytes: state.config.limits.header_bytes,
        ..mandate_gateway::serve::Limits::new(
            Some(state.config.limits.header_timeout_secs),
            Some(state.config.limits.max_connections),
        )
        .map_err(|e| StartError::Io(format!("limits: {e}")))?
    };
    let tls = match &state.config.tls {
        None => None,
        Some(t) => Some(mandate_gateway::serve::TlsAcceptor::from(
            crate::tls::server_config(t, &state.config.workload.spiffe).map_err(StartError::Io)?,
        )),
    };
    let task = tokio::spawn(async move {
        mandate_gateway::serve::listen(
            listener,
            limits,
            tls,
            async {
                let _ = rx.await;
            },
            "mandate",
            move |_| mandate_gateway::serve::TowerToHyperService::new(app.clone()),
        )
        .await;
    });
    tracing::info!(%addr, %issuer, dev, "mandate is listening");
    let (gateway, sample) = match gateway_listen.or(state.config.gateway.listen) {
        None => (None, None),
        Some(listen) => {
            let (sample, config) = if dev && state.config.gateway.upstreams.is_empty() {
                let (sample, mut config) = crate::gateway::start_dev_upstream(&state)
                    .await
                    .map_err(|e| StartError::Io(e.to_string()))?;
                config.public_url = state.config.gateway.public_url.clone();
                config.breakers = state.config.gateway.breakers.clone();
                config.header_timeout_secs = state.config.gateway.header_timeout_secs;
                config.max_connections = state.config.gateway.max_connections;
                config.body_timeout_secs = state.config.gateway.body_timeout_secs;
                (Some(sample), config)
            } else {
                (None, state.config.gateway.clone())
            };
            let gw = crate::gateway::start(state.clone(), &config, listen)
                .await
                .map_err(|e| StartError::Io(e.to_string()))?;
            (Some(gw), sample)
        }
    };
    let console_link = if state.dev.is_some() && state.config.console.enabled {
        state.console.issue_dev_link(&issuer).ok()
    } else {
        None
    };
    Ok(Running {
        gateway,
        sample,
        addr,
        url: issuer,
        admin_token,
        admin_token_is_new,
        console_link,
        data_dir: dir,
        state,
        shutdown: Some(tx),
        task,
        store,
        cluster,
        jobs,
        ssf: Some(ssf),
    })
}

/// Forgets revoked tokens once they have expired anyway, every minute, while the server lives.
fn spawn_housekeeping(state: std::sync::Weak<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { break };
            let now = state.clock.now();
            state.revocations.update(|idx| idx.prune(now));
        }
    });
}

/// The `seq` of the latest stored checkpoint.
async fn last_checkpointed(state: &AppState) -> Option<i64> {
    match state.store.checkpoints().await {
        Ok(cps) => cps.last().map(|c| c.seq),
        Err(e) => {
            tracing::warn!(error = %e, "audit checkpoints could not be read");
            None
        }
    }
}

/// Signs a checkpoint of the audit chain's head every `audit_checkpoint_secs`, when it moved.
async fn spawn_checkpoints(weak: std::sync::Weak<AppState>) -> Option<JoinHandle<()>> {
    let state = weak.upgrade()?;
    let secs = state.config.audit_checkpoint_secs;
    if secs == 0 {
        return None;
    }
    drop(state);
    Some(tokio::spawn(async move {
        // One node writes the periodic checkpoints.
        let Some(_lease) = crate::cluster::lead(&weak, "audit-checkpoints").await else {
            return;
        };
        let Some(state) = weak.upgrade() else { return };
        let mut last = last_checkpointed(&state).await;
        drop(state);
        let period = std::time::Duration::from_secs(secs);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            match crate::admin::audit::write_checkpoint(&state, last).await {
                Ok(Some(cp)) => last = Some(cp.seq),
                Ok(None) => {}
                Err(e) => tracing::error!(error = ?e, "audit checkpoint could not be written"),
            }
        }
    }))
}

/// Reloads the policies when a file in the policy directory changes (checked every 2 s).
fn spawn_policy_watch(state: std::sync::Weak<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { break };
            // Parsing and validating a large set takes a while: keep it off the async workers.
            let checker = state.clone();
            let changed = tokio::task::spawn_blocking(move || checker.policy.reload_if_changed())
                .await
                .ok()
                .flatten();
            if let Some(outcome) = changed {
                // reload_if_changed already swapped (or kept) the set; record it.
                let event = crate::admin::policies::audit_event(&outcome, "a file change");
                if let Err(e) = state
                    .store
                    .commit(vec![mandate_store::Op::Audit(event)])
                    .await
                {
                    tracing::error!(error = %e, "policy reload audit event could not be written");
                }
                match outcome {
                    Ok(n) => tracing::info!(policies = n, "policies reloaded after a file change"),
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(%e, "policy change refused; previous policies stay in force");
                        }
                    }
                }
            }
        }
    });
}

impl Running {
    /// Stops accepting connections, finishes in-flight requests, flushes the store.
    pub async fn shutdown(mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
        if let Some(sample) = self.sample.take() {
            sample.shutdown().await;
        }
        // Revocation streams end, so their connections do not hold the graceful shutdown.
        self.state.feed.close();
        // Shared Signals first: long polls answer, push workers and the dispatcher end.
        self.state.ssf.stop();
        if let Some(d) = self.ssf.take() {
            let _ = d.await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        for job in self.jobs.drain(..) {
            job.abort();
            let _ = job.await;
        }
        // A last checkpoint of the chain head, so that a tail cut while the server is stopped
        // is detected.
        let last = last_checkpointed(&self.state).await;
        if let Err(e) = crate::admin::audit::write_checkpoint(&self.state, last).await {
            tracing::error!(error = ?e, "audit checkpoint at shutdown could not be written");
        }
        if let Some(c) = self.cluster.take() {
            c.abort();
        }
        self.store.close().await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}
