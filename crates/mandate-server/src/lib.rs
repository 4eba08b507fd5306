//! Mandate's authorization server: the OAuth endpoints (SPEC §3), the admin API under `/v1`,
//! configuration and wiring.
//!
//! Handlers are thin: they parse input into domain types (`mandate-core`), call pure decisions
//! (`mandate_core::grant`), verify tokens through the one path in `mandate-token`, and write
//! through the store's group-commit writer before answering.
//!
//! * [`config`] — `mandate.toml` and `MANDATE_*` overrides;
//! * [`server`] — start and stop;
//! * [`app`] — the router and its layers;
//! * [`oauth`] — metadata, JWKS, token, introspection, revocation;
//! * [`admin`] — agents, revocations, audit, keys, credentials, dev tokens, OpenAPI;
//! * [`archive`] — audit retention: archived segment files that still verify;
//! * [`live`] — is a Mandate token still alive;
//! * [`revocation`] — making a revocation;
//! * [`policy`] — the Cedar policy decision point, reloaded on change;
//! * [`authzen`] — the OpenID AuthZEN Authorization API over that decision point;
//! * [`gateway`] — the gateway (`mandate-gateway`) run inside the server, asking it directly;
//! * [`ssf`] — the OpenID Shared Signals transmitter: revocations as Security Event Tokens;
//! * [`compliance`] — the compliance report (SOC 2, HIPAA, OWASP LLM06, EU AI Act Art. 12) from
//!   this deployment's own configuration and audit log;
//! * [`posture`] — posture (inventory, findings with fixes, blast radius) and access reviews;
//! * [`sample`] — the built-in sample upstream (a CRM REST API and MCP server) for `--dev` and tests;
//! * [`state`], [`keyring`], [`idp`], [`clock`], [`dev`] — what handlers share.

pub mod admin;
pub mod app;
pub mod approvals;
pub mod archive;
pub mod authzen;
pub mod clock;
pub mod cluster;
pub mod compliance;
pub mod config;
pub mod console;
pub mod dev;
pub mod dev_oidc;
pub mod error;
pub mod feed;
pub mod files;
pub mod gateway;
pub mod held;
pub mod idp;
pub mod keyring;
pub mod live;
pub mod oauth;
pub mod policy;
pub mod posture;
pub mod ratelimit;
pub mod revocation;
pub mod sample;
pub mod server;
pub mod ssf;
pub mod state;
pub mod tls;
pub mod usage;

pub use config::Config;
pub use server::{Options, Running, start};
