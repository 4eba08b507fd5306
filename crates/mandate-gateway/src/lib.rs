//! Mandate's gateway (SPEC §6): the policy enforcement point in front of tool APIs and MCP
//! servers.
//!
//! Like linkerd2-proxy, the policy types and decisions are kept apart from transport, so each can
//! be tested without a socket; [`proxy`] wires them into a hyper service.
//!
//! * [`route`] — the route table: `GET /customers/{id}` → `crm.customers:read` on
//!   `customers/{id}`.
//! * [`mcp`] — MCP over JSON-RPC: `tools/call` → `mcp.<server>.<tool>:call`, tool annotations →
//!   action class, `tools/list` filtering.
//! * [`breaker`] — circuit breakers: per agent and action pattern, a count over a window that
//!   denies or suspends the agent once exceeded.
//! * [`txn`] — the Transaction Token forwarded upstream instead of the agent's token.
//! * [`forward`] — the request and answer rewriting: the agent's credentials out, the
//!   upstream's real credential and the Transaction Token in, hop-by-hop headers dropped.
//! * [`admit`] — scope and stage: may this token make this request at all, and must a write be
//!   held for approval (`draft` stage).
//! * [`hold`] — draft stage: the held request, the message its approver sees, what the agent
//!   polling it is told.
//! * [`authority`] — what the gateway asks of Mandate (verification, policy, secrets, audit),
//!   so the same proxy runs inside `mandate serve` or on its own.
//! * [`decide`] — the Cedar question for one request, shared by every authority.
//! * [`config`] — `[gateway]` in `mandate.toml`, checked into a [`Plan`].
//! * [`proxy`] — the reverse proxy itself; [`serve`] — its listener.
//! * [`standalone`] — `mandate gateway`: the proxy with a [`remote::Remote`] authority.
//! * [`remote`] — the standalone gateway's authority: Mandate over the network.
//! * [`challenge`] — RFC 9728 protected-resource metadata and the `WWW-Authenticate` challenges
//!   that point clients to it.

pub mod admit;
pub mod authority;
pub mod breaker;
pub mod challenge;
pub mod config;
pub mod decide;
pub mod forward;
pub mod hold;
pub mod mcp;
pub mod proxy;
pub mod remote;
pub mod route;
pub mod serve;
pub mod standalone;
pub mod txn;

pub use authority::Authority;
pub use config::{GatewayConfig, Plan};
pub use proxy::Gateway;
