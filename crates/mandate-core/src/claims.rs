//! The claims of an access token Mandate issues (RFC 9068, RFC 8693 §4.1, SPEC §3).

use std::collections::BTreeMap;

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
    /// The user's groups at their identity provider (RFC 9068 §2.2.3.1), for user tokens: set
    /// at the first hop from the user's token and copied unchanged by every later hop. Absent
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The user's identity-provider claims that policies may read (`principal.getTag(..)`):
    /// only the string claims named by `tokens.carry_claims`, set at the first hop and copied
    /// unchanged by every later hop. Absent when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_tags: BTreeMap<String, String>,
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

    /// The user the token acts for — (`sub_iss`, `sub`) and `groups` — as policies see them;
    /// `None` for an agent's own token.
    pub fn user(&self) -> Option<crate::ids::UserPrincipal> {
        (self.sub_profile == SubProfile::User).then(|| crate::ids::UserPrincipal {
            issuer: self.sub_iss.clone().unwrap_or_default(),
            subject: self.sub.clone(),
            groups: self.groups.clone(),
        })
    }

    /// `user:<sub>` or `agent:<id>`, for audit lines.
    pub fn principal_label(&self) -> String {
        match self.sub_profile {
            SubProfile::User => format!("user:{}", self.sub),
            SubProfile::Agent => self.sub.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn old_token() -> Value {
        json!({
            "iss": "https://mandate.example", "sub": "alice@example.com", "sub_profile": "user",
            "sub_iss": "https://idp.example", "aud": "https://crm.example", "client_id": "support-v2",
            "iat": 1, "nbf": 1, "exp": 301, "jti": "j-1", "scope": "crm.customers:read",
            "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:support-v2-k1"},
            "task": "t-1", "stage": "observe", "credential": "kid:support-v2-k1",
        })
    }

    #[test]
    fn tokens_without_groups_or_user_tags_parse_and_round_trip_without_them() {
        let c: AccessClaims = serde_json::from_value(old_token()).unwrap();
        assert!(c.groups.is_empty() && c.user_tags.is_empty());
        let back = serde_json::to_value(&c).unwrap();
        assert!(back.get("groups").is_none(), "{back}");
        assert!(back.get("user_tags").is_none(), "{back}");
        assert_eq!(back, old_token());
    }

    #[test]
    fn groups_and_user_tags_round_trip() {
        let mut v = old_token();
        v["groups"] = json!(["support", "approver"]);
        v["user_tags"] = json!({"region": "emea"});
        let c: AccessClaims = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c.groups, ["support", "approver"]);
        assert_eq!(c.user_tags.get("region").map(String::as_str), Some("emea"));
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        let u = c.user().unwrap();
        assert_eq!(
            (u.issuer.as_str(), u.subject.as_str(), u.groups.len()),
            ("https://idp.example", "alice@example.com", 2)
        );
    }
}
