//! The server's state, built once at start and handed explicitly to every handler.
//!
//! Hot-path state lives in memory — keys, the agent directory, the revocation index, admin
//! credentials — so a token request never waits on a database read to decide. Writes go through
//! the store's group-commit writer, and the in-memory copies are updated after they are durable.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mandate_core::agent::Agent;
use mandate_core::revocation::RevocationIndex;
use mandate_store::{AdminCredential, Store, StoreError};
use mandate_token::MasterKey;

use crate::clock::Clock;
use crate::config::Config;
use crate::dev::DevIdp;
use crate::idp::Idps;
use crate::keyring::KeyRing;
use crate::policy::PolicyPoint;

fn read<T: Clone>(l: &RwLock<T>) -> T {
    match l.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T, R>(l: &RwLock<T>, f: impl FnOnce(&mut T) -> R) -> R {
    match l.write() {
        Ok(mut g) => f(&mut g),
        Err(p) => f(&mut p.into_inner()),
    }
}

/// Registered agents, in memory.
#[derive(Default)]
pub struct Directory {
    agents: RwLock<HashMap<String, Arc<Agent>>>,
    /// Counts this node's own refreshes, so that a whole reload read before one of them never
    /// overwrites what it brought in (see [`Directory::reload`]).
    refreshes: std::sync::atomic::AtomicU64,
}

impl Directory {
    /// Loads every agent from the store.
    pub async fn load(store: &dyn Store) -> Result<Directory, StoreError> {
        let agents = store
            .agents()
            .await?
            .into_iter()
            .map(|a| (a.id.as_str().to_owned(), Arc::new(a)))
            .collect();
        Ok(Directory {
            agents: RwLock::new(agents),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Re-reads every agent (another node changed one). A snapshot read while this node
    /// refreshed an agent of its own may predate that change, so it is read again rather than
    /// put over it.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        loop {
            let before = self.refreshes.load(Ordering::SeqCst);
            let fresh = Directory::load(store).await?;
            let agents = match fresh.agents.into_inner() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            let applied = write(&self.agents, |m| {
                if self.refreshes.load(Ordering::SeqCst) != before {
                    return false;
                }
                *m = agents;
                true
            });
            if applied {
                return Ok(());
            }
        }
    }

    /// One agent.
    pub fn get(&self, id: &str) -> Option<Arc<Agent>> {
        match self.agents.read() {
            Ok(g) => g.get(id).cloned(),
            Err(p) => p.into_inner().get(id).cloned(),
        }
    }

    /// Re-reads one agent after a change.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Arc<Agent>>, StoreError> {
        let agent = store.agent(id).await?.map(Arc::new);
        write(&self.agents, |m| {
            self.refreshes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match &agent {
                Some(a) => {
                    m.insert(id.to_owned(), a.clone());
                }
                None => {
                    m.remove(id);
                }
            }
        });
        Ok(agent)
    }

    /// Every agent, ordered by id.
    pub fn all(&self) -> Vec<Arc<Agent>> {
        let mut v: Vec<_> = read(&self.agents).into_values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// The revocation index, shared.
#[derive(Default)]
pub struct Revocations {
    index: RwLock<RevocationIndex>,
}

impl Revocations {
    /// Builds the index from the store: every revocation root and every revoked live token.
    pub async fn load(store: &dyn Store, now: i64) -> Result<Revocations, StoreError> {
        let mut index = RevocationIndex::default();
        let mut after = 0;
        loop {
            let page = store.revocation_feed(after, 10_000, now).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                index.apply(entry);
            }
        }
        // Tokens revoked before the feed recorded what each revocation ended.
        store
            .revoked_tokens(now, &mut |t| {
                index.insert(
                    mandate_core::revocation::RevocationKind::Token,
                    &t.jti,
                    t.exp,
                );
            })
            .await?;
        Ok(Revocations {
            index: RwLock::new(index),
        })
    }

    /// Reads the index.
    pub fn with<R>(&self, f: impl FnOnce(&RevocationIndex) -> R) -> R {
        match self.index.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    /// Changes the index.
    pub fn update<R>(&self, f: impl FnOnce(&mut RevocationIndex) -> R) -> R {
        write(&self.index, f)
    }
}

/// Admin credentials by the SHA-256 of their secret.
#[derive(Default)]
pub struct Admins {
    by_hash: RwLock<HashMap<String, AdminCredential>>,
    /// Counts this node's own inserts (see [`Admins::reload`]).
    inserts: std::sync::atomic::AtomicU64,
}

impl Admins {
    /// Loads every enabled credential.
    pub async fn load(store: &dyn Store) -> Result<Admins, StoreError> {
        let by_hash = store
            .admin_credentials()
            .await?
            .into_iter()
            .filter(|c| c.disabled_at.is_none())
            .map(|c| (c.secret_hash.clone(), c))
            .collect();
        Ok(Admins {
            by_hash: RwLock::new(by_hash),
            inserts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Re-reads every enabled credential (another node added one). A snapshot read while this
    /// node added one of its own is read again rather than put over it.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        loop {
            let before = self.inserts.load(Ordering::SeqCst);
            let fresh = Admins::load(store).await?;
            let by_hash = match fresh.by_hash.into_inner() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            let applied = write(&self.by_hash, |m| {
                if self.inserts.load(Ordering::SeqCst) != before {
                    return false;
                }
                *m = by_hash;
                true
            });
            if applied {
                return Ok(());
            }
        }
    }

    /// The credential whose secret hashes to `hash`.
    pub fn find(&self, hash: &str) -> Option<AdminCredential> {
        match self.by_hash.read() {
            Ok(g) => g.get(hash).cloned(),
            Err(p) => p.into_inner().get(hash).cloned(),
        }
    }

    /// Adds a credential after it is stored.
    pub fn insert(&self, c: AdminCredential) {
        write(&self.by_hash, |m| {
            self.inserts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            m.insert(c.secret_hash.clone(), c)
        });
    }

    /// Number of credentials.
    pub fn len(&self) -> usize {
        match self.by_hash.read() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a handler may need.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Mandate's issuer URL.
    pub issuer: String,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The master key that seals private keys.
    pub master: MasterKey,
    /// Signing keys.
    pub keys: KeyRing,
    /// Trusted identity providers.
    pub idps: Idps,
    /// Trusted SPIFFE trust domains and OIDC workload issuers (agents' workload identity).
    pub workloads: crate::oauth::workload::Workloads,
    /// Agents.
    pub directory: Directory,
    /// Revocations.
    pub revocations: Revocations,
    /// The revocation feed, for verifiers and Shared Signals streams.
    pub feed: crate::feed::Feed,
    /// The Shared Signals transmitter's wake-ups and stop signal.
    pub ssf: crate::ssf::Hub,
    /// Admin credentials.
    pub admins: Admins,
    /// The policy decision point.
    pub policy: PolicyPoint,
    /// Recent use of scopes, for policies' `context.usage`.
    pub usage: crate::usage::UsageCounter,
    /// Issuance rate limit per user.
    pub user_limit: crate::ratelimit::RateLimiter,
    /// Issuance rate limit per agent.
    pub agent_limit: crate::ratelimit::RateLimiter,
    /// The built-in test IdP, in `--dev` only.
    pub dev: Option<DevIdp>,
    /// Access tokens whose signature and claims already verified (see `live::check`).
    pub verified: mandate_verify::VerifiedCache,
    /// Approval decisions as they land, for whoever carries them out (the gateway).
    pub approvals: crate::approvals::Hub,
    /// The console's sign-ins: the `--dev` one-time link, the identity provider client.
    pub console: crate::console::signin::Logins,
}

impl AppState {
    /// The token endpoint's URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer)
    }
}
