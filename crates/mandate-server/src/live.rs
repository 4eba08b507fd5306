//! Is this Mandate token alive? The one check behind introspection, RFC 7009 revocation and
//! token-exchange hops: signature against the JWKS, `typ`, `iss`, `exp`, then revocation (token,
//! ancestors, task, user, agents, keys) and the status of every agent in the chain.

use mandate_core::agent::AgentStatus;
use mandate_core::chain::DelegationChain;
use mandate_core::claims::{AccessClaims, SubProfile};
use mandate_core::revocation::{Revoked, TokenFacts};
use mandate_token::VerifyError;
use mandate_token::verify::{AudCheck, ClaimChecks, verify};

use crate::state::AppState;

/// Why a Mandate token is not alive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAlive {
    /// It does not verify (signature, type, issuer, expiry).
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    /// Its claims are not a Mandate access token's.
    #[error("token is not a Mandate access token: {0}")]
    Malformed(String),
    /// A revocation reaches it.
    #[error("token has been revoked ({} `{}`)", .0.kind.as_str(), .0.id)]
    Revoked(Revoked),
    /// An agent of its chain is suspended, retired or gone.
    #[error("agent `{0}` in the token's chain is not active")]
    AgentInactive(String),
}

/// A live token's claims and chain.
#[derive(Debug, Clone)]
pub struct Live {
    /// The claims.
    pub claims: AccessClaims,
    /// The delegation chain.
    pub chain: DelegationChain,
}

/// Checks that `token` is a live Mandate access token at `now`.
pub fn check(state: &AppState, token: &str, now: i64) -> Result<Live, NotAlive> {
    let checks = ClaimChecks {
        now,
        leeway: 0,
        issuer: Some(&state.issuer),
        audience: AudCheck::Any,
        typ: Some("at+jwt"),
        max_lifetime: None,
        require_iat: true,
    };
    let verified = verify(token, &state.keys.keys().verify, &checks)?;
    let claims: AccessClaims =
        serde_json::from_value(verified.claims).map_err(|e| NotAlive::Malformed(e.to_string()))?;
    let chain = claims
        .chain()
        .map_err(|e| NotAlive::Malformed(e.to_string()))?;
    let facts = TokenFacts {
        jti: &claims.jti,
        task: &claims.task,
        user: (claims.sub_profile == SubProfile::User).then_some(claims.sub.as_str()),
        chain: &chain,
        iat: claims.iat,
    };
    if let Some(r) = state.revocations.with(|idx| idx.check(&facts)) {
        return Err(NotAlive::Revoked(r));
    }
    for a in chain.actors() {
        let status = state.directory.get(a.agent.as_str()).map(|a| a.status);
        if status != Some(AgentStatus::Active) {
            return Err(NotAlive::AgentInactive(a.agent.as_str().to_owned()));
        }
    }
    Ok(Live { claims, chain })
}
