//! The OAuth surface (SPEC §3, §6): metadata, JWKS, token (with CIBA polls for escalations),
//! introspection, revocation.

pub mod ciba;
pub mod client_auth;
pub mod client_credentials;
pub mod dpop;
pub mod exchange;
pub mod form;
pub mod introspect;
pub mod issue;
pub mod metadata;
pub mod request;
pub mod revoke;
pub mod token;
pub mod workload;
