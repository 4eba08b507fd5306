//! The integration tests, one file per area; shared helpers in [`harness`].

mod admin;
mod approvals;
mod audit;
mod audit_export;
mod authzen;
mod ciba;
mod client_credentials;
mod exchange;
mod gateway;
mod gateway_api;
mod harness;
mod held_writes;
mod mcp_support;
mod policy;
mod refusals;
mod revocation;
mod robustness;
mod sample;
mod sample_mcp;
mod secrets;
mod ssf;
mod standalone_gateway;
mod tamper;
mod tasks;
mod verify;
