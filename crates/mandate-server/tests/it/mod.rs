//! The integration tests, one file per area; shared helpers in [`harness`].

mod admin;
mod audit;
mod audit_export;
mod authzen;
mod client_credentials;
mod exchange;
mod gateway;
mod harness;
mod mcp_support;
mod policy;
mod refusals;
mod revocation;
mod robustness;
mod sample;
mod sample_mcp;
mod secrets;
mod ssf;
mod tamper;
mod tasks;
mod verify;
