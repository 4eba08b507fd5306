//! Mandate's domain, in pure code: no IO, no async, no HTTP, no SQL.
//!
//! Everything a request carries is parsed into these types at the edge (see `mandate-server`),
//! and every decision the authorization server makes is a function of these values:
//!
//! * [`scope`] — `<resource>:<action>` scopes, wildcard patterns, action classes;
//! * [`stage`] — `observe` / `draft` / `execute`;
//! * [`ids`] — agent ids, task ids, user principals;
//! * [`chain`] — the delegation chain and its RFC 8693 `act` encoding;
//! * [`claims`] — the claims of an issued access token (RFC 9068);
//! * [`agent`] — registered agents and their keys;
//! * [`approval`] — human approval gates: what is asked, separation of duties, held writes
//!   sent once, OpenID CIBA poll answers;
//! * [`grant`] — the issuance decision: effective rights, stage, lifetime;
//! * [`posture`] — the inventory of agents, findings with their fixes, blast radius, access
//!   reviews (SPEC §8);
//! * [`revocation`] — what was revoked and whether a token is still alive;
//! * [`task`] — tasks and issued-token records;
//! * [`time`] — RFC 3339 formatting;
//! * [`audit`] — audit events and their hash chain;
//! * [`compliance`] — the compliance controls (SOC 2, HIPAA, OWASP LLM06, EU AI Act Art. 12),
//!   a deployment's evidence for them, and their assessment.

pub mod agent;
pub mod approval;
pub mod audit;
pub mod chain;
pub mod checkpoint;
pub mod claims;
pub mod compliance;
pub mod grant;
pub mod ids;
pub mod posture;
pub mod revocation;
pub mod scope;
pub mod stage;
pub mod task;
pub mod time;

pub use agent::{Agent, AgentKey, AgentStatus};
pub use chain::{Actor, DelegationChain};
pub use ids::{AgentId, TaskId, UserPrincipal};
pub use scope::{ActionClass, Scope, ScopePattern, ScopeSet};
pub use stage::Stage;
