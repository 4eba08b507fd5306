//! The claims of an access token Mandate issues (RFC 9068, RFC 8693 §4.1, SPEC §3).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{ActError, DelegationChain};
use crate::scope::{ScopeError, ScopeSet};
use crate::stage::Stage;

/// `sub_profile`: whether `sub` names a human or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubProfile {
    /// `sub` is the user's subject at their IdP.
    User,
    /// `sub` is `agent:<id>`: an agent's autonomous token.
    Agent,
}

/// A JWT `aud`: one string or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }

    /// Builds the compact form: a string when there is one audience.
    pub fn from_vec(mut v: Vec<String>) -> Audience {
        if v.len() == 1 {
            Audience::One(v.remove(0))
        } else {
            Audience::Many(v)
        }
    }

    /// Whether `aud` is one of the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(v) => v.iter().any(|a| a == aud),
        }
    }
}

/// The claims of a Mandate access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Mandate's issuer URL.
    pub iss: String,
    /// The user's subject, or `agent:<id>` for autonomous tokens.
    pub sub: String,
    /// Whether `sub` is a user or an agent.
    pub sub_profile: SubProfile,
    /// The issuer of the user's identity, for user tokens (a user is (issuer, subject)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_iss: Option<String>,
    /// Audience(s): where the token may be used.
    pub aud: Audience,
    /// The agent that holds the token (the current actor).
    pub client_id: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// RFC 8693 actor claim; absent for autonomous tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// The task the token is bound to.
    pub task: String,
    /// The stage.
    pub stage: Stage,
    /// The credential that proved the current actor.
    pub credential: String,
    /// DPoP confirmation (RFC 9449), when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Value>,
}

/// Why a token's claims do not describe a well-formed Mandate token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Bad `act`.
    #[error(transparent)]
    Act(#[from] ActError),
    /// Bad `scope`.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// Claims contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
}

impl AccessClaims {
    /// The delegation chain: the agents in `act` for user tokens, or the agent itself for
    /// autonomous tokens.
    pub fn chain(&self) -> Result<DelegationChain, ClaimsError> {
        match (&self.act, self.sub_profile) {
            (Some(act), SubProfile::User) => Ok(DelegationChain::from_act_claim(act)?),
            (None, SubProfile::Agent) => {
                let agent = crate::ids::AgentId::from_subject(&self.sub).ok_or(
                    ClaimsError::Inconsistent("`sub` of an agent token is not an agent"),
                )?;
                Ok(DelegationChain::new(vec![crate::chain::Actor {
                    agent,
                    credential: self.credential.clone(),
                }]))
            }
            _ => Err(ClaimsError::Inconsistent(
                "`act` must be present exactly when `sub_profile` is `user`",
            )),
        }
    }

    /// The scopes.
    pub fn scopes(&self) -> Result<ScopeSet, ClaimsError> {
        Ok(ScopeSet::parse_oauth(&self.scope)?)
    }

    /// `user:<sub>` or `agent:<id>`, for audit lines.
    pub fn principal_label(&self) -> String {
        match self.sub_profile {
            SubProfile::User => format!("user:{}", self.sub),
            SubProfile::Agent => self.sub.clone(),
        }
    }
}
