//! The Cedar schema Mandate's policies are validated against.

use std::collections::{BTreeSet, HashMap};
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
    let index = GroupIndex::new(groups);
    let mut out = String::from(BASE);
    for g in groups {
        let _ = writeln!(out, "action \"{}\";", quote(g.as_str()));
    }
    for s in scopes {
        let parents: Vec<String> = index
            .of(s)
            .into_iter()
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

/// The action groups (scope patterns) a concrete scope is in, found by looking up the patterns
/// that could match it (each segment of the scope as written or `*`) rather than testing every
/// pattern: the groups of n scopes among m patterns cost n lookups, not n × m matches.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupIndex {
    /// Sorted, without duplicates (the order of a `BTreeSet<ScopePattern>`).
    patterns: Vec<ScopePattern>,
    by_text: HashMap<String, usize>,
}

impl GroupIndex {
    /// Indexes `groups`.
    pub(crate) fn new<'a>(groups: impl IntoIterator<Item = &'a ScopePattern>) -> GroupIndex {
        let mut patterns: Vec<ScopePattern> = groups.into_iter().cloned().collect();
        patterns.sort();
        patterns.dedup();
        let by_text = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str().to_owned(), i))
            .collect();
        GroupIndex { patterns, by_text }
    }

    /// The groups `scope` is in, in pattern order: exactly those whose
    /// [`ScopePattern::matches`] holds.
    pub(crate) fn of(&self, scope: &Scope) -> Vec<&ScopePattern> {
        let words: Vec<&str> = scope.resource().split('.').collect();
        let slots = words.len() + 1;
        // A pattern matches when each of its segments is `*` or the scope's word, so it is one
        // of 2^slots texts; testing every pattern is cheaper when there are fewer of them.
        if slots >= 16 || (1usize << slots) > self.patterns.len() {
            return self.patterns.iter().filter(|g| g.matches(scope)).collect();
        }
        let mut found = Vec::new();
        let mut text = String::with_capacity(2 * scope.as_str().len() + 2);
        for mask in 0..(1usize << slots) {
            text.clear();
            for (i, w) in words.iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(if mask & (1 << i) == 0 { w } else { "*" });
            }
            text.push(':');
            text.push_str(if mask & (1 << words.len()) == 0 {
                scope.action()
            } else {
                "*"
            });
            if let Some(i) = self.by_text.get(text.as_str()) {
                found.push(*i);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .filter_map(|i| self.patterns.get(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_index_finds_exactly_the_matching_patterns() {
        let words = ["crm", "customers", "orders", "read", "write", "*"];
        let mut patterns = BTreeSet::new();
        let mut scopes = Vec::new();
        for a in words {
            for b in words {
                for c in words {
                    for text in [format!("{a}:{c}"), format!("{a}.{b}:{c}")] {
                        if let Ok(s) = Scope::parse(&text) {
                            scopes.push(s);
                        }
                        patterns.insert(ScopePattern::parse(&text).unwrap());
                    }
                }
            }
        }
        scopes.push(Scope::parse("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p:read").unwrap());
        patterns.insert(ScopePattern::parse("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.*:read").unwrap());
        // Many patterns (lookups) and few (every pattern tested).
        let few: BTreeSet<ScopePattern> = patterns.iter().take(5).cloned().collect();
        for groups in [&patterns, &few] {
            let index = GroupIndex::new(groups.iter());
            for s in &scopes {
                let expected: Vec<&ScopePattern> = groups.iter().filter(|g| g.matches(s)).collect();
                assert_eq!(index.of(s), expected, "{}", s.as_str());
            }
        }
    }
}
