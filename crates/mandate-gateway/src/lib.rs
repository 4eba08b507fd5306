//! Mandate's gateway (SPEC §6): the policy enforcement point in front of tool APIs and MCP
//! servers.
//!
//! This crate is built from the inside out, like linkerd2-proxy: the policy types and decisions
//! come first and are kept apart from transport, so each can be tested without a socket.
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
//! * [`challenge`] — RFC 9728 protected-resource metadata and the `WWW-Authenticate` challenges
//!   that point clients to it.

pub mod breaker;
pub mod challenge;
pub mod forward;
pub mod mcp;
pub mod route;
pub mod txn;
