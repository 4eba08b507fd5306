//! The one verification of a Mandate access token, shared by the server's introspection, the
//! gateway and every verifier: signature against the issuer's keys (algorithm pinned to the key),
//! `typ: at+jwt`, issuer, audience, lifetime, the claims' shape, the delegation chain, and the
//! revocation index. Pure: the caller brings the keys, the index and the time.

use mandate_core::chain::DelegationChain;
use mandate_core::claims::{AccessClaims, SubProfile};
use mandate_core::revocation::{RevocationIndex, Revoked, TokenFacts};
use mandate_core::scope::ScopeSet;
use mandate_token::VerifyError;
use mandate_token::verify::{AudCheck, ClaimChecks, KeySet, verify};

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Mandate's issuer URL (`iss`).
    pub issuer: &'a str,
    /// Acceptable audiences; empty accepts any.
    pub audiences: &'a [String],
    /// Now, seconds since the epoch.
    pub now: i64,
    /// Clock skew tolerated, seconds.
    pub leeway: i64,
    /// The longest delegation chain accepted.
    pub max_chain_depth: usize,
}

/// Why a token is refused. The messages are safe to show the caller: they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Signature, type, issuer, audience or lifetime.
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    /// The claims are not a Mandate access token's, or its chain is not acceptable.
    #[error("token is not a valid Mandate access token: {0}")]
    Malformed(String),
    /// A revocation reaches it.
    #[error("token has been revoked ({} `{}`)", .0.kind.as_str(), .0.id)]
    Revoked(Revoked),
    /// The authorization server answered that the token is not active.
    #[error("token is not active (the authorization server says so)")]
    Inactive,
    /// An agent of its chain is not active at the authorization server.
    #[error("agent `{0}` in the token's chain is not active")]
    AgentInactive(String),
    /// The token came with the wrong scheme for its binding (`Bearer` for a DPoP-bound token).
    #[error("{0}")]
    Scheme(&'static str),
    /// The token is DPoP-bound and its proof is missing or bad.
    #[error("{0}")]
    Dpop(mandate_token::dpop::ProofError),
    /// The verifier cannot tell whether the token was revoked, and is set to fail closed.
    #[error("revocation state is unavailable: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// Whether retrying later could succeed (the verifier was not current).
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::Unavailable(_))
    }
}

/// A verified token: who acts for whom, in which task, with which rights.
#[derive(Debug, Clone)]
pub struct Principal {
    /// All claims.
    pub claims: AccessClaims,
    /// The agents, earliest first, each with the credential that proved it.
    pub chain: DelegationChain,
    /// The granted scopes.
    pub scopes: ScopeSet,
}

impl Principal {
    /// The user's subject, for tokens on a user's behalf.
    pub fn user(&self) -> Option<&str> {
        (self.claims.sub_profile == SubProfile::User).then_some(self.claims.sub.as_str())
    }

    /// The agent making the call (the last of the chain).
    pub fn agent(&self) -> Option<&str> {
        self.chain.current().map(|a| a.agent.as_str())
    }

    /// The task the token is bound to.
    pub fn task(&self) -> &str {
        &self.claims.task
    }

    /// `user:alice via agent:support-v2 > agent:analytics-v1`, for logs.
    pub fn describe(&self) -> String {
        let agents: Vec<String> = self
            .chain
            .agent_ids()
            .into_iter()
            .map(|a| format!("agent:{a}"))
            .collect();
        match self.user() {
            Some(u) => format!("user:{u} via {}", agents.join(" > ")),
            None => agents.join(" > "),
        }
    }
}

/// Verifies a token's signature and claims, without consulting revocations.
pub fn verify_claims(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
) -> Result<Principal, Refusal> {
    let checks = ClaimChecks {
        now: expect.now,
        leeway: expect.leeway,
        issuer: Some(expect.issuer),
        audience: if expect.audiences.is_empty() {
            AudCheck::Any
        } else {
            AudCheck::OneOf(expect.audiences)
        },
        typ: Some("at+jwt"),
        max_lifetime: None,
        require_iat: true,
    };
    let verified = verify(token, keys, &checks)?;
    let claims: AccessClaims =
        serde_json::from_value(verified.claims).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let chain = claims
        .chain()
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    check_chain(&claims, &chain, expect.max_chain_depth)?;
    let scopes = claims
        .scopes()
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok(Principal {
        claims,
        chain,
        scopes,
    })
}

/// The chain's own rules: not empty, not deeper than allowed, no agent twice, and the client is
/// the last agent.
fn check_chain(
    claims: &AccessClaims,
    chain: &DelegationChain,
    max_depth: usize,
) -> Result<(), Refusal> {
    let Some(current) = chain.current() else {
        return Err(Refusal::Malformed("the delegation chain is empty".into()));
    };
    if chain.depth() > max_depth {
        return Err(Refusal::Malformed(format!(
            "the delegation chain has {} agents; at most {max_depth} are accepted",
            chain.depth()
        )));
    }
    let ids = chain.agent_ids();
    for (i, a) in ids.iter().enumerate() {
        if ids[..i].contains(a) {
            return Err(Refusal::Malformed(format!(
                "agent `{a}` appears twice in the delegation chain"
            )));
        }
    }
    if claims.client_id != current.agent.as_str() {
        return Err(Refusal::Malformed(
            "`client_id` is not the last agent of the delegation chain".into(),
        ));
    }
    Ok(())
}

/// Why `principal` is dead according to `index`, if it is.
pub fn revoked(index: &RevocationIndex, principal: &Principal) -> Option<Revoked> {
    let c = &principal.claims;
    index.check(&TokenFacts {
        jti: &c.jti,
        task: &c.task,
        user: principal.user(),
        chain: &principal.chain,
        iat: c.iat,
    })
}

/// [`verify_claims`], then the revocation index.
pub fn verify_token(
    token: &str,
    keys: &KeySet,
    index: &RevocationIndex,
    expect: &Expect<'_>,
) -> Result<Principal, Refusal> {
    let principal = verify_claims(token, keys, expect)?;
    match revoked(index, &principal) {
        Some(r) => Err(Refusal::Revoked(r)),
        None => Ok(principal),
    }
}
