//! The scenarios: what is prepared before the clock starts, and the one request each worker sends
//! over and over.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde_json::Value;

use crate::peer::{self, Peer};
use crate::server::{RESOURCE, Server, USER};

/// How many distinct users `exchange-fresh-user` cycles through.
pub const USER_POOL: usize = 1000;
/// How many tokens `introspect` cycles through.
pub const INTROSPECT_POOL: usize = 100;

/// A kind of request to put under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `support-v2` exchanges one user token (alice's) again and again: the hot path of an agent
    /// starting work for a user. Each worker keeps its own task.
    Exchange,
    /// Like `exchange`, but cycling through 1000 distinct users' tokens (one task per user).
    ExchangeFreshUser,
    /// `support-v2` asks for a token of its own (`client_credentials`, `tickets:read`).
    ClientCredentials,
    /// The admin introspects one of 100 live tokens.
    Introspect,
    /// `support-v2` asks the peer at `--peer` (node oidc-provider, `bench/peer/`) for a token
    /// of its own, as `client-credentials` asks Mandate; see [`crate::peer`].
    PeerClientCredentials,
}

impl Scenario {
    /// The scenario's name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Exchange => "exchange",
            Scenario::ExchangeFreshUser => "exchange-fresh-user",
            Scenario::ClientCredentials => "client-credentials",
            Scenario::Introspect => "introspect",
            Scenario::PeerClientCredentials => "peer-client-credentials",
        }
    }
}

/// A scenario with what it prepared.
pub enum Workload {
    /// One user token, exchanged by every worker.
    Exchange {
        /// Alice's token.
        subject: String,
    },
    /// A pool of user tokens of distinct users.
    FreshUser {
        /// The tokens; entry `i` belongs to user `i`, whose task is `bench-u<i>`.
        pool: Vec<String>,
        /// The next entry to use.
        next: AtomicUsize,
    },
    /// Nothing to prepare.
    ClientCredentials,
    /// A pool of live access tokens.
    Introspect {
        /// The tokens.
        pool: Vec<String>,
        /// The next entry to use.
        next: AtomicUsize,
    },
    /// The peer authorization server, checked once.
    Peer(Box<Peer>),
}

/// Mints `count` user tokens for distinct users in the `support` group, one after another (a
/// second or so against a local server; not measured).
async fn user_pool(server: &Server, count: usize) -> Result<Vec<String>> {
    let mut pool = Vec::with_capacity(count);
    for i in 0..count {
        let sub = format!("bench-user-{i:04}@example.com");
        pool.push(server.user_token(&sub, Some(&["support"])).await?);
    }
    Ok(pool)
}

impl Workload {
    /// Prepares `scenario` against `server` (not measured).
    pub async fn prepare(scenario: Scenario, server: &Server) -> Result<Workload> {
        Ok(match scenario {
            Scenario::Exchange => Workload::Exchange {
                subject: server.user_token(USER, None).await?,
            },
            Scenario::ExchangeFreshUser => Workload::FreshUser {
                pool: user_pool(server, USER_POOL).await?,
                next: AtomicUsize::new(0),
            },
            Scenario::ClientCredentials => Workload::ClientCredentials,
            Scenario::Introspect => {
                let subject = server.user_token(USER, None).await?;
                let mut pool = Vec::with_capacity(INTROSPECT_POOL);
                for _ in 0..INTROSPECT_POOL {
                    pool.push(server.exchange(&subject, "bench-introspect").await?);
                }
                Workload::Introspect {
                    pool,
                    next: AtomicUsize::new(0),
                }
            }
            Scenario::PeerClientCredentials => {
                bail!("`peer-client-credentials` needs `--peer <loopback url>`")
            }
        })
    }

    /// The next request for `worker`, ready to send. Signing the client assertion happens here,
    /// before the latency clock starts.
    pub fn request(&self, server: &Server, worker: usize) -> Result<reqwest::RequestBuilder> {
        let token_url = format!("{}/oauth2/token", server.url);
        Ok(match self {
            Workload::Exchange { subject } => {
                let form = server.exchange_form(subject, &format!("bench-{worker}"))?;
                server.http.post(token_url).form(&form)
            }
            Workload::FreshUser { pool, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len().max(1);
                let Some(subject) = pool.get(i) else {
                    bail!("the user pool is empty");
                };
                let form = server.exchange_form(subject, &format!("bench-u{i}"))?;
                server.http.post(token_url).form(&form)
            }
            Workload::ClientCredentials => {
                let mut form: Vec<(&str, String)> = server.client_auth()?.into();
                form.extend([
                    ("grant_type", "client_credentials".to_owned()),
                    ("scope", "tickets:read".to_owned()),
                    ("resource", RESOURCE.to_owned()),
                    ("task", format!("bench-cc-{worker}")),
                ]);
                server.http.post(token_url).form(&form)
            }
            Workload::Introspect { pool, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % pool.len().max(1);
                let Some(token) = pool.get(i) else {
                    bail!("the token pool is empty");
                };
                server
                    .http
                    .post(format!("{}/oauth2/introspect", server.url))
                    .bearer_auth(&server.admin_token)
                    .form(&[("token", token.as_str())])
            }
            Workload::Peer(peer) => peer.request()?,
        })
    }

    /// Whether a 200 answer's body is a success for this scenario: introspection must say the
    /// token is active (a 200 `{"active": false}` is an error here).
    pub fn accepts(&self, body: &[u8]) -> bool {
        match self {
            Workload::Introspect { .. } => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("active").and_then(Value::as_bool))
                .unwrap_or(false),
            Workload::Peer(_) => peer::accepts(body),
            _ => true,
        }
    }
}
