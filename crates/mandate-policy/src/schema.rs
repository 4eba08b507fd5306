//! The Cedar schema Mandate's policies are validated against.

use std::collections::BTreeSet;
use std::fmt::Write;

use mandate_core::scope::{Scope, ScopePattern};

/// Entity types, attributes and context, without the actions (they depend on the policies).
pub const BASE: &str = r#"
// A human, named by their IdP; in each of their groups; string claims of the user token as tags.
entity Group;
entity User in [Group] = {
  "issuer": String,
  "groups": Set<String>,
} tags String;

// A registered agent.
entity Agent = {
  "owner": String,
  "tags": Set<String>,
  "max_stage": String,
};

// What a token is for: its audience (an API, an MCP server), or a route's resource; its tags
// are the resource's attributes where the caller knows them (AuthZEN `resource.properties`, the
// gateway's route captures and tool arguments), e.g. `resource.getTag("region")`.
entity Resource tags String;

type RequestContext = {
  "stage": String,
  "task": String,
  "purpose": String,
  "delegation_depth": Long,
  "chain": Set<String>,
  "now": Long,
  "usage": {
    "agent_last_hour": Long,
    "user_last_hour": Long,
  },
};

// Who may hand a user's delegation on to whom: principal delegates, resource receives.
action "delegate" appliesTo {
  principal: [Agent],
  resource: [Agent],
  context: RequestContext,
};
"#;

/// The action id of the delegation decision.
pub const DELEGATE: &str = "delegate";

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The full schema: [`BASE`] plus one action per concrete scope in `scopes`, each `in` every
/// pattern of `groups` that matches it, and one action group per pattern.
pub fn with_actions(scopes: &BTreeSet<Scope>, groups: &BTreeSet<ScopePattern>) -> String {
    let mut out = String::from(BASE);
    for g in groups {
        let _ = writeln!(out, "action \"{}\";", quote(g.as_str()));
    }
    for s in scopes {
        let parents: Vec<String> = groups
            .iter()
            .filter(|g| g.matches(s))
            .map(|g| format!("Action::\"{}\"", quote(g.as_str())))
            .collect();
        let member = if parents.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", parents.join(", "))
        };
        let _ = writeln!(
            out,
            "action \"{}\"{member} appliesTo {{ principal: [User, Agent], resource: [Resource], context: RequestContext }};",
            quote(s.as_str())
        );
    }
    out
}
