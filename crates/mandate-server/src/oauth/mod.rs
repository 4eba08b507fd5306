//! The OAuth surface (SPEC §3): metadata, JWKS, token, introspection, revocation.

pub mod client_auth;
pub mod client_credentials;
pub mod exchange;
pub mod form;
pub mod introspect;
pub mod issue;
pub mod metadata;
pub mod request;
pub mod revoke;
pub mod token;
