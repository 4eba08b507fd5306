//! What a Rust resource server needs to accept Mandate tokens.
//!
//! * [`Verifier`] — verifies access tokens locally (signature with the issuer's JWKS, refreshed
//!   on an unknown `kid`; issuer, audience, lifetime; the delegation chain) and refuses revoked
//!   ones the moment the revocation is published, by following Mandate's revocation stream
//!   (server-sent events, resumed without loss after a disconnect). While it is not current it
//!   introspects or refuses, as configured: never "allow because unknown".
//! * [`VerifyLayer`] — a tower layer: requests without a live token never reach the service;
//!   the verified [`Principal`] (user, agent chain, task, scopes, stage) is in the request's
//!   extensions.
//! * [`check`] — the verification itself, pure, shared with Mandate's own server and gateway.
//! * [`cache`] — tokens already verified, so a repeated token costs a hash, not a signature
//!   check (lifetime, audience and revocations are still checked on every use).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mandate_verify::{Verifier, VerifyLayer, WhenNotCurrent};
//! let verifier = Verifier::builder("https://mandate.example.com")
//!     .credential("mnd_admin_…") // a credential with the `verifier` role
//!     .audience("https://crm.example.com")
//!     .when_not_current(WhenNotCurrent::Refuse)
//!     .start()
//!     .await?;
//! let layer = VerifyLayer::new(verifier.clone());
//! # let _ = layer; Ok(()) }
//! ```

pub mod cache;
pub mod check;
pub mod layer;
pub mod sse;
pub mod verifier;

pub use cache::VerifiedCache;
pub use check::{Expect, Principal, Refusal};
pub use layer::VerifyLayer;
pub use verifier::{Builder, Presented, Status, Verifier, WhenNotCurrent};
