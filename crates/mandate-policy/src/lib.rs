//! Mandate's policy decision point, in Cedar (SPEC §4).
//!
//! * [`schema`] — the Cedar schema: `User` (in `Group`s, with the user token's string claims as
//!   tags), `Agent` (owner, tags, max stage), `Resource` (with the resource's attributes as
//!   tags), the request context, and one action per
//!   scope (`Action::"crm.customers:read"`) plus `Action::"delegate"`. Wildcard scopes written in
//!   policies (`Action::"crm.*:read"`) become action groups that every matching scope is in.
//! * [`load`] — reading `policies/*.cedar`, validating them against the schema, and reporting a
//!   bad policy with its file, line and reason. A set that fails to load is never half-used.
//! * [`decide`] — one decision: a small per-request entity slice (the principal, its groups, the
//!   agents involved, the action with its groups), the Cedar authorizer, and a [`Decision`] that
//!   names the policies that decided. Forbid wins.
//!
//! No IO but reading policy files; no HTTP; no SQL.

pub mod cases;
pub mod decide;
pub mod load;
pub mod schema;

#[cfg(test)]
mod proptests;

pub use decide::{Decision, DecisionContext, Principal, Request, Subject, Usage};
pub use load::{Engine, PolicyError, load_dir, load_sources};
