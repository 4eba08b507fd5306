//! Asking the Cedar policy set about one gateway request: the principal is the token's user
//! (with the `groups` and `user_tags` the token carries) or, for an agent's own token, the agent;
//! the resource is the route's or tool's, with its tags. Shared by every [`Authority`] so the
//! in-process and the standalone gateway decide alike.
//!
//! [`Authority`]: crate::Authority

use mandate_core::agent::Agent;
use mandate_core::ids::UserPrincipal;
use mandate_policy::{
    DecisionContext, Engine, Principal as PolicyPrincipal, Request, Subject, Usage,
};

use crate::authority::{Ask, Verdict};

/// Decides `ask` with `engine` at `now` (seconds); `agent` is the registered agent of an
/// agent's own token (ignored for user tokens).
pub fn verdict(engine: &Engine, ask: &Ask<'_>, agent: Option<&Agent>, now: i64) -> Verdict {
    let p = ask.principal;
    let context = DecisionContext {
        stage: p.claims.stage,
        task: p.claims.task.clone(),
        purpose: String::new(),
        delegation_depth: i64::try_from(p.chain.depth()).unwrap_or(i64::MAX),
        chain: p.chain.agent_ids(),
        now,
        usage: Usage::default(),
    };
    let user: Option<UserPrincipal> = p.claims.user();
    let (principal, who) = match (&user, agent) {
        (Some(u), _) => (
            PolicyPrincipal::User {
                user: u,
                claims: &p.claims.user_tags,
            },
            format!("user `{}`", u.subject),
        ),
        (None, Some(a)) => (PolicyPrincipal::Agent(a), format!("agent `{}`", a.id)),
        (None, None) => {
            return Verdict {
                allowed: false,
                policies: Vec::new(),
                reason: "the token names no user and no registered agent".into(),
            };
        }
    };
    let d = engine.decide(&Request {
        principal,
        subject: Subject::Scope {
            scope: ask.action,
            resource: ask.resource,
            resource_tags: ask.resource_tags,
        },
        context: &context,
    });
    let quoted = d
        .policies
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let reason = if d.allowed {
        format!("permitted by {quoted}")
    } else if d.policies.is_empty() {
        format!(
            "no policy permits {who} `{}` on `{}`",
            ask.action, ask.resource
        )
    } else {
        format!(
            "{who} `{}` on `{}` is forbidden by {quoted}",
            ask.action, ask.resource
        )
    };
    Verdict {
        allowed: d.allowed,
        policies: d.policies,
        reason,
    }
}
