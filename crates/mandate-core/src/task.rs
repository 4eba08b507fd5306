//! Tasks: one unit of agent work, the root every token hangs from (SPEC §1).

use serde::{Deserialize, Serialize};

/// A task's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Tokens may be issued for it.
    Active,
    /// Finished; its tokens have ended.
    Completed,
    /// Revoked; its tokens have ended.
    Revoked,
}

impl TaskStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Active => "active",
            TaskStatus::Completed => "completed",
            TaskStatus::Revoked => "revoked",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        match s {
            "active" => Some(TaskStatus::Active),
            "completed" => Some(TaskStatus::Completed),
            "revoked" => Some(TaskStatus::Revoked),
            _ => None,
        }
    }
}

/// A task record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Caller-supplied or generated id.
    pub id: String,
    /// The agent that started it (the first agent of the chain).
    pub agent: String,
    /// The user it is for, or `None` for an agent's autonomous task.
    pub user: Option<String>,
    /// The issuer of the user's identity.
    pub user_issuer: Option<String>,
    /// Why the task exists.
    pub purpose: String,
    /// The triggering input, as the agent reported it.
    pub input: String,
    /// State.
    pub status: TaskStatus,
    /// Creation time, seconds since the epoch.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// An issued token, as recorded for revocation and lineage (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `jti`.
    pub jti: String,
    /// The `jti` of the Mandate token it was exchanged from, for hops.
    pub parent_jti: Option<String>,
    /// `task`.
    pub task: String,
    /// `sub`.
    pub sub: String,
    /// `sub_profile`: `user` or `agent`.
    pub sub_profile: String,
    /// The issuer of the user's identity, for user tokens.
    pub sub_iss: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The credential of each agent in the chain, in the same order.
    pub credentials: Vec<String>,
    /// Space-separated scopes.
    pub scope: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Stage.
    pub stage: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// When it was revoked, directly or through an ancestor or root.
    pub revoked_at: Option<i64>,
}
