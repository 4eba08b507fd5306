//! Identifiers of the domain: agents, tasks, users.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An agent id must be a slug.
    #[error(
        "agent id `{0}` must be 1–64 characters of `a-z`, `0-9`, `-`, `_` or `.`, starting with a letter or digit"
    )]
    Agent(String),
    /// A task id must be printable and short.
    #[error("task id `{0}` must be 1–128 characters of letters, digits, `-`, `_`, `.` or `:`")]
    Task(String),
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A registered agent's id: a slug such as `support-v2`. Named `agent:<id>` in tokens and audit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// Parses a slug.
    pub fn parse(s: &str) -> Result<AgentId, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(AgentId(s.to_owned()))
        } else {
            Err(IdError::Agent(truncated(s)))
        }
    }

    /// Parses `agent:<id>` as found in `sub` and `act.sub`.
    pub fn from_subject(s: &str) -> Option<AgentId> {
        s.strip_prefix("agent:")
            .and_then(|id| AgentId::parse(id).ok())
    }

    /// `agent:<id>`.
    pub fn subject(&self) -> String {
        format!("agent:{}", self.0)
    }

    /// The bare id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AgentId::parse(&s)
    }
}

impl From<AgentId> for String {
    fn from(a: AgentId) -> String {
        a.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id: caller-supplied (`ticket-12847`) or generated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Parses a task id.
    pub fn parse(s: &str) -> Result<TaskId, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(TaskId(s.to_owned()))
        } else {
            Err(IdError::Task(truncated(s)))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaskId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TaskId::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(t: TaskId) -> String {
        t.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human, as a trusted identity provider named them: (issuer, subject), plus their groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrincipal {
    /// The `iss` of the IdP that authenticated the user.
    pub issuer: String,
    /// The user's subject at that IdP (the configured user claim).
    pub subject: String,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_slugs() {
        assert!(AgentId::parse("support-v2").is_ok());
        assert!(AgentId::parse("analytics_v1.eu").is_ok());
        for bad in ["", "Support", "-x", "a b", "a/../b", &"a".repeat(65)] {
            assert!(AgentId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AgentId::from_subject("agent:support-v2").map(|a| a.subject()),
            Some("agent:support-v2".to_owned())
        );
        assert!(AgentId::from_subject("user:alice").is_none());
    }

    #[test]
    fn task_ids() {
        assert!(TaskId::parse("ticket-12847").is_ok());
        assert!(TaskId::parse("").is_err());
        assert!(TaskId::parse("a b").is_err());
    }
}
