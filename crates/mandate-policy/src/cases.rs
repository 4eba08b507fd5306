//! Policy test files: requests with the decisions their authors expect, for `mandate policy test`
//! in a policy repository's own CI.
//!
//! A file is a JSON array of cases:
//!
//! ```json
//! [
//!   {"name": "support reads customers",
//!    "principal": {"user": "alice@example.com", "groups": ["support"], "claims": {"tier": "gold"}},
//!    "action": "crm.customers:read", "resource": "https://crm.example.com",
//!    "context": {"stage": "observe"}, "expect": "allow"},
//!   {"name": "emea users read emea customers",
//!    "principal": {"user": "alice@example.com", "claims": {"region": "emea"}},
//!    "action": "crm.customers:read", "resource": "customers/9821",
//!    "resource_tags": {"region": "emea"}, "expect": "allow"},
//!   {"name": "support-v2 may hand off to analytics-v1",
//!    "principal": {"agent": "support-v2"}, "action": "delegate", "resource": "analytics-v1",
//!    "expect": "allow"}
//! ]
//! ```

use std::collections::BTreeMap;

use mandate_core::agent::{Agent, AgentStatus};
use mandate_core::ids::{AgentId, UserPrincipal};
use mandate_core::scope::{PatternSet, Scope};
use mandate_core::stage::Stage;
use serde::Deserialize;

use crate::decide::{DecisionContext, Principal, Request, Subject};
use crate::load::Engine;

/// Who a case asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePrincipal {
    /// A user's subject.
    #[serde(default)]
    pub user: Option<String>,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The user token's string claims.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// An agent id (instead of a user).
    #[serde(default)]
    pub agent: Option<String>,
    /// The agent's owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// The agent's max stage.
    #[serde(default)]
    pub max_stage: Option<Stage>,
    /// The agent's tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The context of a case (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseContext {
    /// Stage.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// Task id.
    #[serde(default)]
    pub task: String,
    /// Purpose.
    #[serde(default)]
    pub purpose: String,
    /// Agent ids, earliest first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Delegation depth (default: the chain's length).
    #[serde(default)]
    pub delegation_depth: Option<i64>,
    /// Now, seconds since the epoch (default 0).
    #[serde(default)]
    pub now: i64,
    /// Tokens holding this scope issued to the agent in the last hour.
    #[serde(default)]
    pub agent_last_hour: i64,
    /// Tokens holding this scope issued for the user in the last hour.
    #[serde(default)]
    pub user_last_hour: i64,
}

/// One case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What it checks.
    pub name: String,
    /// Who.
    pub principal: CasePrincipal,
    /// A scope, or `delegate`.
    pub action: String,
    /// The resource (for `delegate`, the receiving agent's id).
    pub resource: String,
    /// The resource's attributes, as Cedar tags (`resource.getTag("region")`).
    #[serde(default)]
    pub resource_tags: BTreeMap<String, String>,
    /// The context.
    #[serde(default)]
    pub context: CaseContext,
    /// `allow` or `deny`.
    pub expect: String,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether the decision was the expected one.
    pub passed: bool,
    /// What was decided, and by which policies (or why the case could not run).
    pub detail: String,
}

fn agent(
    id: &str,
    owner: Option<&str>,
    max_stage: Option<Stage>,
    tags: &[String],
) -> Result<Agent, String> {
    Ok(Agent {
        id: AgentId::parse(id).map_err(|e| e.to_string())?,
        name: id.to_owned(),
        owner: owner.unwrap_or("unknown").to_owned(),
        description: String::new(),
        ceiling: PatternSet::default(),
        tags: tags.to_vec(),
        max_stage: max_stage.unwrap_or(Stage::Observe),
        status: AgentStatus::Active,
        keys: Vec::new(),
        workloads: Vec::new(),
        require_dpop: false,
        created_at: 0,
        updated_at: 0,
    })
}

fn run_one(engine: &Engine, c: &Case) -> Result<(bool, Vec<String>), String> {
    let expect_allow = match c.expect.as_str() {
        "allow" => true,
        "deny" => false,
        other => return Err(format!("`expect` must be `allow` or `deny`, not `{other}`")),
    };
    let context = DecisionContext {
        stage: c.context.stage.unwrap_or(Stage::Observe),
        task: c.context.task.clone(),
        purpose: c.context.purpose.clone(),
        delegation_depth: c
            .context
            .delegation_depth
            .unwrap_or(i64::try_from(c.context.chain.len()).unwrap_or(0)),
        chain: c.context.chain.clone(),
        now: c.context.now,
        usage: crate::decide::Usage {
            agent_last_hour: c.context.agent_last_hour,
            user_last_hour: c.context.user_last_hour,
        },
    };
    let p = &c.principal;
    let user;
    let principal_agent;
    let principal = match (&p.user, &p.agent) {
        (Some(sub), None) => {
            user = UserPrincipal {
                issuer: String::new(),
                subject: sub.clone(),
                groups: p.groups.clone(),
            };
            Principal::User {
                user: &user,
                claims: &p.claims,
            }
        }
        (None, Some(id)) => {
            principal_agent = agent(id, p.owner.as_deref(), p.max_stage, &p.tags)?;
            Principal::Agent(&principal_agent)
        }
        _ => return Err("`principal` needs exactly one of `user` and `agent`".into()),
    };
    let decision = if c.action == "delegate" {
        let to = agent(&c.resource, None, None, &[])?;
        engine.decide(&Request {
            principal,
            subject: Subject::Delegate { to: &to },
            context: &context,
        })
    } else {
        let scope = Scope::parse(&c.action).map_err(|e| e.to_string())?;
        engine.decide(&Request {
            principal,
            subject: Subject::Scope {
                scope: &scope,
                resource: &c.resource,
                resource_tags: &c.resource_tags,
            },
            context: &context,
        })
    };
    Ok((decision.allowed == expect_allow, {
        let mut v = vec![if decision.allowed {
            "allow".to_owned()
        } else {
            "deny".to_owned()
        }];
        v.extend(decision.policies);
        v
    }))
}

/// Parses a case file.
pub fn parse(text: &str) -> Result<Vec<Case>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a list of cases: {e}"))
}

/// Runs every case against `engine`.
pub fn run(engine: &Engine, cases: &[Case]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|c| match run_one(engine, c) {
            Ok((passed, decided)) => {
                let (decision, policies) = decided
                    .split_first()
                    .map_or(("deny", &[][..]), |(d, p)| (d.as_str(), p));
                let by = if policies.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", policies.join(", "))
                };
                CaseResult {
                    name: c.name.clone(),
                    passed,
                    detail: format!("expected {}, decided {decision}{by}", c.expect),
                }
            }
            Err(why) => CaseResult {
                name: c.name.clone(),
                passed: false,
                detail: why,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_sources;
    use std::collections::BTreeSet;

    #[test]
    fn cases_pass_and_fail_with_reasons() {
        let engine = load_sources(
            &[(
                "p.cedar".into(),
                "@id(\"s\") permit(principal in Group::\"support\", action == Action::\"tickets:read\", resource);\n@id(\"d\") permit(principal == Agent::\"a\", action == Action::\"delegate\", resource == Agent::\"b\");".into(),
            )],
            &BTreeSet::new(),
        )
        .unwrap();
        let cases = parse(
            r#"[
            {"name": "support reads tickets", "principal": {"user": "alice", "groups": ["support"]},
             "action": "tickets:read", "resource": "https://t", "expect": "allow"},
            {"name": "wrong expectation", "principal": {"user": "bob"},
             "action": "tickets:read", "resource": "https://t", "expect": "allow"},
            {"name": "a hands to b", "principal": {"agent": "a"}, "action": "delegate", "resource": "b", "expect": "allow"},
            {"name": "bad", "principal": {"user": "x", "agent": "y"}, "action": "tickets:read", "resource": "r", "expect": "deny"}
        ]"#,
        )
        .unwrap();
        let r = run(&engine, &cases);
        assert!(r[0].passed, "{:?}", r[0]);
        assert_eq!(r[0].detail, "expected allow, decided allow by s");
        assert!(!r[1].passed);
        assert_eq!(r[1].detail, "expected allow, decided deny");
        assert!(r[2].passed);
        assert!(!r[3].passed && r[3].detail.contains("exactly one"));
        assert!(parse("{").is_err());
    }

    #[test]
    fn cases_may_give_resource_tags() {
        let engine = load_sources(
            &[(
                "p.cedar".into(),
                "@id(\"r\") permit(principal is User, action == Action::\"crm.customers:read\", resource) when { principal.hasTag(\"region\") && resource.hasTag(\"region\") && principal.getTag(\"region\") == resource.getTag(\"region\") };".into(),
            )],
            &BTreeSet::new(),
        )
        .unwrap();
        let cases = parse(
            r#"[
            {"name": "same region", "principal": {"user": "alice", "claims": {"region": "emea"}},
             "action": "crm.customers:read", "resource": "customers/1",
             "resource_tags": {"region": "emea"}, "expect": "allow"},
            {"name": "other region", "principal": {"user": "alice", "claims": {"region": "emea"}},
             "action": "crm.customers:read", "resource": "customers/2",
             "resource_tags": {"region": "amer"}, "expect": "deny"},
            {"name": "untagged", "principal": {"user": "alice", "claims": {"region": "emea"}},
             "action": "crm.customers:read", "resource": "customers/3", "expect": "deny"}
        ]"#,
        )
        .unwrap();
        let r = run(&engine, &cases);
        assert!(r.iter().all(|c| c.passed), "{r:?}");
        assert_eq!(r[0].detail, "expected allow, decided allow by r");
    }
}
