//! DPoP at the token endpoint (RFC 9449 §5): a request with a `DPoP` header proves possession
//! of a key, and the token it gets is bound to that key (`cnf.jkt`, `token_type: DPoP`). An agent
//! registered with `require_dpop` gets no token without a proof. The proof's `jti` is burned in
//! the request's own commit, so a replayed proof loses even on another node.

use axum::http::HeaderMap;
use mandate_core::agent::Agent;
use mandate_store::Op;
use mandate_token::dpop::{self, Nonces, ProofCheck, ProofError, VerifiedProof};
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::state::AppState;

/// How long one server nonce stays fresh (it is accepted for two such slots).
const NONCE_SLOT_SECS: i64 = 300;

/// The server nonces, when `tokens.dpop_nonce` is on. Derived from the master key, so every
/// node of a deployment accepts every other node's nonces.
pub fn nonces(state: &AppState) -> Option<Nonces> {
    state.config.tokens.dpop_nonce.then(|| {
        let mut h = Sha256::new();
        h.update(b"mandate dpop nonce v1\0");
        h.update(state.master.to_base64().as_bytes());
        Nonces::new(&h.finalize(), NONCE_SLOT_SECS)
    })
}

/// Checks the `DPoP` header of a token request by `agent`: `Ok(None)` when there is none and
/// the agent does not require one.
pub fn check_token_request(
    state: &AppState,
    headers: &HeaderMap,
    agent: &Agent,
    now: i64,
) -> Result<Option<VerifiedProof>, OAuthError> {
    let mut values = headers.get_all("dpop").iter();
    let (first, second) = (values.next(), values.next());
    let Some(value) = first else {
        if agent.require_dpop {
            return Err(OAuthError::invalid_dpop_proof(format!(
                "agent `{}` must prove possession of its key: send a `DPoP` proof",
                agent.id
            )));
        }
        return Ok(None);
    };
    if second.is_some() {
        return Err(OAuthError::invalid_dpop_proof(
            "send exactly one `DPoP` header",
        ));
    }
    let proof = value
        .to_str()
        .map_err(|_| OAuthError::invalid_dpop_proof("the `DPoP` header is not text"))?;
    let nonces = nonces(state);
    let endpoint = state.token_endpoint();
    let check = ProofCheck {
        method: "POST",
        url: &endpoint,
        now,
        max_age: state.config.tokens.dpop_proof_max_age,
        leeway: state.config.tokens.leeway,
        access_token: None,
        nonces: nonces.as_ref(),
    };
    dpop::check_proof(proof, &check)
        .map(Some)
        .map_err(|e| match (&e, &nonces) {
            (ProofError::UseNonce, Some(n)) => {
                OAuthError::use_dpop_nonce(e.to_string(), n.current(now))
            }
            _ => OAuthError::invalid_dpop_proof(e.to_string()),
        })
}

/// The op that burns the proof's `jti`, in the same commit as the answer.
pub fn use_once(proof: &VerifiedProof) -> Op {
    Op::UseOnce {
        key: replay_key(proof),
        exp: proof.expires,
    }
}

/// The store key of a proof's `jti`.
pub fn replay_key(proof: &VerifiedProof) -> String {
    format!("dpop|{}|{}", proof.jkt, proof.jti)
}
