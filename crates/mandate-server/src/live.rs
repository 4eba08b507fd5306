//! Is this Mandate token alive? The one check behind introspection, RFC 7009 revocation and
//! token-exchange hops. It is `mandate-verify`'s verification — the same code the gateway and
//! every resource server run — over the server's own keys and revocation index, plus the one
//! thing only the server knows: whether every agent of the chain is still active.

use mandate_core::agent::AgentStatus;
use std::sync::Arc;

use mandate_verify::check::{Expect, Principal, revoked};

pub use mandate_verify::Refusal as NotAlive;

use crate::state::AppState;

/// A live token's claims, chain and scopes.
pub type Live = Principal;

/// Checks that `token` is a live Mandate access token at `now`.
pub fn check(state: &AppState, token: &str, now: i64) -> Result<Live, NotAlive> {
    check_for(state, token, now, &[], 0)
}

/// [`check`], also requiring one of `audiences` (none: any), with `leeway` seconds of clock skew.
pub fn check_for(
    state: &AppState,
    token: &str,
    now: i64,
    audiences: &[String],
    leeway: i64,
) -> Result<Live, NotAlive> {
    let keys = state.keys.keys();
    let expect = Expect {
        issuer: &state.issuer,
        audiences,
        now,
        leeway,
        max_chain_depth: state.config.tokens.max_chain_depth,
    };
    let keys_id = Arc::as_ptr(&keys) as usize;
    let live = state
        .verified
        .verify_claims(token, &keys.verify, keys_id, &expect)?;
    if let Some(r) = state.revocations.with(|idx| revoked(idx, &live)) {
        return Err(NotAlive::Revoked(r));
    }
    for a in live.chain.actors() {
        let status = state.directory.get(a.agent.as_str()).map(|a| a.status);
        if status != Some(AgentStatus::Active) {
            return Err(NotAlive::AgentInactive(a.agent.as_str().to_owned()));
        }
    }
    Ok(live)
}
