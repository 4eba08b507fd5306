//! The admin API under `/v1` (JSON; described at `/v1/openapi.json`). Every route needs an admin
//! credential; writes need the `admin` role.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod audit_export;
pub mod auth;
pub mod body;
pub mod compliance;
pub mod credentials;
pub mod dev;
pub mod events;
pub mod gateway_api;
pub mod gateway_holds;
pub mod keys;
pub mod openapi;
pub mod policies;
pub mod posture;
pub mod revocations;
pub mod secrets;
pub mod tasks;
