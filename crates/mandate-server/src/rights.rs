//! What a principal may do directly: `rights(U)` of SPEC §2, behind one interface.
//!
//! Today rights come from a group → scopes mapping in configuration ([`GroupRights`]); the Cedar
//! policy engine will implement [`RightsSource`] and replace it without touching the callers.

use std::collections::BTreeMap;

use mandate_core::ids::{AgentId, UserPrincipal};
use mandate_core::scope::PatternSet;

/// The source of users' and agents' own rights.
pub trait RightsSource: Send + Sync + 'static {
    /// What `user` may do directly.
    fn user_rights(&self, user: &UserPrincipal) -> PatternSet;
    /// What `agent` may do on its own behalf (client credentials), before its ceiling.
    fn agent_rights(&self, agent: &AgentId) -> PatternSet;
    /// The id recorded in audit events' `policy_ids` for decisions made with these rights.
    fn policy_id(&self) -> &str;
}

/// Rights from `[rights.groups]` and `[rights.agents]` in `mandate.toml`.
#[derive(Debug, Clone, Default)]
pub struct GroupRights {
    groups: BTreeMap<String, PatternSet>,
    agents: BTreeMap<String, PatternSet>,
}

impl GroupRights {
    /// Rights from the configured mappings.
    pub fn new(
        groups: BTreeMap<String, PatternSet>,
        agents: BTreeMap<String, PatternSet>,
    ) -> GroupRights {
        GroupRights { groups, agents }
    }
}

impl RightsSource for GroupRights {
    fn user_rights(&self, user: &UserPrincipal) -> PatternSet {
        let mut out = Vec::new();
        for g in &user.groups {
            if let Some(p) = self.groups.get(g) {
                out.extend(p.iter().cloned());
            }
        }
        PatternSet(out)
    }

    fn agent_rights(&self, agent: &AgentId) -> PatternSet {
        self.agents.get(agent.as_str()).cloned().unwrap_or_default()
    }

    fn policy_id(&self) -> &str {
        "config:rights"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_core::scope::Scope;

    #[test]
    fn a_user_has_the_union_of_their_groups() {
        let mut groups = BTreeMap::new();
        groups.insert("support".into(), PatternSet::parse(["tickets:*"]).unwrap());
        groups.insert(
            "finance".into(),
            PatternSet::parse(["billing.*:read"]).unwrap(),
        );
        let r = GroupRights::new(groups, BTreeMap::new());
        let u = UserPrincipal {
            issuer: "i".into(),
            subject: "alice".into(),
            groups: vec!["support".into(), "finance".into(), "unknown".into()],
        };
        let rights = r.user_rights(&u);
        assert!(rights.allows(&Scope::parse("tickets:create").unwrap()));
        assert!(rights.allows(&Scope::parse("billing.invoices:read").unwrap()));
        assert!(!rights.allows(&Scope::parse("email:send").unwrap()));
    }
}
