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
    /// How the task ended, in the agent's words, once it is completed.
    #[serde(default)]
    pub outcome: Option<String>,
    /// When it was completed.
    #[serde(default)]
    pub completed_at: Option<i64>,
}

/// The tool call a step says the agent is about to make (its intention, not the call itself:
/// the call, if it happens, is the gateway's audit event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The action, a scope such as `crm.customers:read`.
    pub action: String,
    /// What it acts on, e.g. `customers/9821`.
    pub resource: String,
    /// The call's arguments as the agent means to send them, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
}

/// One step of a task, as the agent recorded it: what it decided and why (SPEC §7: the agent's
/// own record of the work, joined to the audit events by task id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStep {
    /// The task.
    pub task: String,
    /// Its number within the task, from 1, assigned when it is stored.
    pub seq: i64,
    /// When it was recorded: RFC 3339 UTC with milliseconds, like audit event times.
    pub time: String,
    /// Who recorded it: `agent:<id>` or `admin:<id>`.
    pub by: String,
    /// What the agent decided, in a few words.
    pub decision: String,
    /// Why: the agent's own account of its reasoning.
    pub summary: String,
    /// The tool call it intends to make, if any.
    #[serde(default)]
    pub tool_call: Option<ToolCall>,
    /// Anything the agent itself flagged as anomalous at this step.
    #[serde(default)]
    pub anomaly: Option<String>,
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
