//! What the gateway asks of Mandate: verify a token, decide with policy, open a secret, sign a
//! Transaction Token, record an audit event, suspend an agent, alert a webhook.
//!
//! The proxy is written against this trait, so the same proxy runs inside `mandate serve`
//! (answering from the server's own memory: keys, revocation index, policy set, secret store)
//! and as a standalone process ([`crate::remote`]: the verifier library following the
//! revocation stream, a local copy of the policy set, secrets and audit over the server's API).
//! On the request path `verify`, `decide` and `sign_txn` answer from memory; `verify` is a
//! future only because a verifier that lost the revocation stream may introspect.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use mandate_core::audit::NewEvent;
use mandate_core::claims::AccessClaims;
use mandate_core::scope::Scope;
use mandate_verify::{Principal, Refusal};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::hold::{Delivered, HeldRequest, Proposal};
use crate::txn::TxnClaims;

/// A policy question about one request.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Who: the verified token.
    pub principal: &'a Principal,
    /// The action (a scope).
    pub action: &'a Scope,
    /// The resource, e.g. `customers/9821`.
    pub resource: &'a str,
    /// The resource's attributes: route captures, or an MCP tool's scalar arguments.
    pub resource_tags: &'a BTreeMap<String, String>,
}

/// A policy answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed.
    pub allowed: bool,
    /// The policies that decided.
    pub policies: Vec<String>,
    /// Why, in words (for the client and audit).
    pub reason: String,
}

/// Why a secret could not be had. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// The approval opened for a held write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The approval's id (the proposal id the agent polls).
    pub id: String,
    /// When it expires undecided, seconds since the epoch.
    pub expires_at: i64,
}

/// A future the gateway can hold across its own awaits (owned, sendable).
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the gateway needs from Mandate.
pub trait Authority: Send + Sync + 'static {
    /// Mandate's issuer URL (the authorization server named in protected-resource metadata).
    fn issuer(&self) -> &str;

    /// Now, milliseconds since the epoch (the injected clock).
    fn now_ms(&self) -> i64;

    /// Verifies an access token for one of `audiences`: signature, claims, revocation state,
    /// agents active.
    fn verify(&self, token: &str, audiences: &[String]) -> Pending<Result<Principal, Refusal>>;

    /// Decides with the policy set. From memory.
    fn decide(&self, ask: &Ask<'_>) -> Verdict;

    /// Signs a Transaction Token (with Mandate's current key in-process; a standalone gateway
    /// signs with its own key, published by [`Authority::jwks`]).
    fn sign_txn(&self, claims: &TxnClaims) -> Result<String, String>;

    /// The `iss` of the Transaction Tokens this gateway signs (default: Mandate's issuer).
    fn txn_issuer(&self) -> &str {
        self.issuer()
    }

    /// The JWKS that verifies this gateway's Transaction Tokens, when it is not Mandate's own
    /// (served at `/.well-known/jwks.json` on the gateway).
    fn jwks(&self) -> Option<Value> {
        None
    }

    /// Opens the secret `name` (an upstream's real credential).
    fn secret(&self, name: &str) -> Pending<Result<Zeroizing<String>, SecretError>>;

    /// Records an audit event (durably, but the answer to the client does not wait for it).
    fn record(&self, event: NewEvent);

    /// Suspends `agent` (revoking its tokens) because a breaker tripped; `reason` says which.
    fn suspend(&self, agent: &str, reason: &str) -> Pending<Result<(), String>>;

    /// Posts `payload` to a breaker's webhook (best effort, in the background).
    fn alert(&self, url: &str, payload: Value);

    // Draft stage: held writes (see [`crate::hold`]).

    /// Opens an approval for a held write (durably, before the agent is answered).
    fn hold(&self, held: HeldRequest, binding_message: String) -> Pending<Result<Receipt, String>>;

    /// A held write by its approval id; `None` if there is none (or it is not a held write).
    fn proposal(&self, id: &str) -> Pending<Result<Option<Proposal>, String>>;

    /// Claims an approved held write for sending: `true` for exactly one caller, ever.
    fn claim(&self, id: &str) -> Pending<Result<bool, String>>;

    /// Stores what came of a claimed held write, for the agent to fetch.
    fn deliver(&self, id: &str, delivered: Delivered) -> Pending<Result<(), String>>;

    /// The ids of approved held writes nobody has claimed yet.
    fn approved_holds(&self) -> Pending<Result<Vec<String>, String>>;

    /// Approval ids as they are decided, when the authority can tell at once (in-process);
    /// otherwise the gateway asks [`Authority::approved_holds`] every few seconds.
    fn decisions(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// Why a revocation reaches the token these claims come from, if one does (checked again
    /// before a held write is sent).
    fn revoked(&self, claims: &AccessClaims) -> Option<String>;
}
