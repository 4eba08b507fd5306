//! Registered agents: owned, non-human identities (SPEC §1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::AgentId;
use crate::scope::PatternSet;
use crate::stage::Stage;

/// An agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// May obtain tokens.
    Active,
    /// Temporarily refused; can be resumed.
    Suspended,
    /// Permanently refused.
    Retired,
}

impl AgentStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Retired => "retired",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<AgentStatus> {
        match s {
            "active" => Some(AgentStatus::Active),
            "suspended" => Some(AgentStatus::Suspended),
            "retired" => Some(AgentStatus::Retired),
            _ => None,
        }
    }
}

/// A public key registered for an agent's `private_key_jwt` client assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentKey {
    /// The key id (`kid` of the JWK and of the assertions it signs).
    pub kid: String,
    /// The public JWK.
    pub jwk: Value,
    /// When the key stops being accepted (seconds since the epoch), if ever.
    pub expires_at: Option<i64>,
    /// When it was registered.
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

impl AgentKey {
    /// Whether the key may prove the agent at `now`.
    pub fn usable_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Slug id.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// The accountable human (required).
    pub owner: String,
    /// What the agent is for.
    pub description: String,
    /// The most scopes it may ever hold.
    pub ceiling: PatternSet,
    /// Labels policies can test (`principal.tags.contains("pii")`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The highest stage it may act in without an approval.
    pub max_stage: Stage,
    /// Lifecycle state.
    pub status: AgentStatus,
    /// Registered public keys.
    pub keys: Vec<AgentKey>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

impl Agent {
    /// The key with `kid`, if registered and usable at `now`.
    pub fn usable_key(&self, kid: &str, now: i64) -> Option<&AgentKey> {
        self.keys.iter().find(|k| k.kid == kid && k.usable_at(now))
    }
}
