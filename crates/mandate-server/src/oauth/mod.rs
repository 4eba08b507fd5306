//! The OAuth surface (SPEC §3): metadata, JWKS, token, introspection, revocation.

pub mod client_auth;
pub mod form;
pub mod introspect;
pub mod metadata;
pub mod revoke;
pub mod token;
