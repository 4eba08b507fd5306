//! Asking the Cedar policy set about one gateway request: the principal is the token's user
//! (with the `groups` and `user_tags` the token carries) or, for an agent's own token, the agent;
//! the resource is the route's or tool's, with its tags. Shared by every [`Authority`] so the
//! in-process and the standalone gateway decide alike.
//!
//! [`Authority`]: crate::Authority

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use mandate_core::agent::Agent;
use mandate_core::claims::SubProfile;
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

/// Most verdicts a [`DecisionCache`] holds (all for the same second); beyond it, it starts over.
pub const DECISION_CACHE: usize = 4096;

/// Verdicts already reached, so that the same question asked again within the same second, of
/// the same policy set, costs a lookup instead of a Cedar evaluation.
///
/// Exact by construction: the key is everything [`verdict`] reads — the principal's claims that
/// feed the Cedar principal (profile, subject, its issuer, groups, user tags) and, for an agent's
/// own token, the registered agent as it is now (every field); the stage, task and chain of the
/// context; the action, the resource and its tags — and the cache holds verdicts of one policy
/// set (the [`Engine`] it is given, compared by identity; a reload brings a new one and empties
/// the cache) and one `now` (a new second empties it), since policies may test `context.now`.
/// Revocation, expiry and the token's audience are checked before any decision, on every
/// request, and are not part of it.
#[derive(Debug)]
pub struct DecisionCache {
    inner: Mutex<Cached>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Cached {
    /// The policy set the verdicts came from, held so that its address cannot be reused by
    /// another while it is compared against.
    engine: Option<Arc<Engine>>,
    /// The second they were reached at.
    now: i64,
    map: HashMap<Vec<u8>, Verdict>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache::new(DECISION_CACHE)
    }
}

impl DecisionCache {
    /// A cache of at most `capacity` verdicts (0: none kept, every call decides).
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            inner: Mutex::new(Cached::default()),
            capacity,
        }
    }

    /// [`verdict`], answered from the cache when the same question was decided by the same
    /// `engine` at the same `now`.
    pub fn verdict(
        &self,
        engine: &Arc<Engine>,
        ask: &Ask<'_>,
        agent: Option<&Agent>,
        now: i64,
    ) -> Verdict {
        if self.capacity == 0 {
            return verdict(engine, ask, agent, now);
        }
        let Some(key) = key(ask, agent) else {
            return verdict(engine, ask, agent, now);
        };
        {
            let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let same_set = c.engine.as_ref().is_some_and(|e| Arc::ptr_eq(e, engine));
            if !same_set || c.now != now {
                c.map.clear();
                c.engine = Some(Arc::clone(engine));
                c.now = now;
            }
            if let Some(v) = c.map.get(&key) {
                return v.clone();
            }
        }
        let v = verdict(engine, ask, agent, now);
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let same_set = c.engine.as_ref().is_some_and(|e| Arc::ptr_eq(e, engine));
        if same_set && c.now == now {
            if c.map.len() >= self.capacity {
                c.map.clear();
            }
            c.map.insert(key, v.clone());
        }
        v
    }

    /// How many verdicts are held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `bytes`, length first, so that the encoding of a sequence of fields is unambiguous.
fn field(key: &mut Vec<u8>, bytes: &[u8]) {
    key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    key.extend_from_slice(bytes);
}

/// Everything [`verdict`] reads from `ask` and `agent` (not `now`, which the cache keeps apart),
/// encoded without ambiguity; `None` if the agent cannot be encoded (then nothing is cached).
fn key(ask: &Ask<'_>, agent: Option<&Agent>) -> Option<Vec<u8>> {
    let p = ask.principal;
    let c = &p.claims;
    let mut k = Vec::with_capacity(256);
    match c.sub_profile {
        SubProfile::User => {
            k.push(b'u');
            field(&mut k, c.sub.as_bytes());
            match &c.sub_iss {
                Some(i) => {
                    k.push(1);
                    field(&mut k, i.as_bytes());
                }
                None => k.push(0),
            }
            k.extend_from_slice(&(c.groups.len() as u64).to_le_bytes());
            for g in &c.groups {
                field(&mut k, g.as_bytes());
            }
            k.extend_from_slice(&(c.user_tags.len() as u64).to_le_bytes());
            for (name, value) in &c.user_tags {
                field(&mut k, name.as_bytes());
                field(&mut k, value.as_bytes());
            }
        }
        SubProfile::Agent => match agent {
            // The registered agent as it is now: all of it, so any change is another key.
            Some(a) => {
                k.push(b'a');
                field(&mut k, &serde_json::to_vec(a).ok()?);
            }
            None => k.push(b'n'),
        },
    }
    field(&mut k, c.stage.as_str().as_bytes());
    field(&mut k, c.task.as_bytes());
    k.extend_from_slice(&(p.chain.depth() as u64).to_le_bytes());
    for a in p.chain.actors() {
        field(&mut k, a.agent.as_str().as_bytes());
    }
    field(&mut k, ask.action.as_str().as_bytes());
    field(&mut k, ask.resource.as_bytes());
    k.extend_from_slice(&(ask.resource_tags.len() as u64).to_le_bytes());
    for (name, value) in ask.resource_tags {
        field(&mut k, name.as_bytes());
        field(&mut k, value.as_bytes());
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::{BTreeMap, BTreeSet};

    use mandate_core::agent::AgentStatus;
    use mandate_core::claims::AccessClaims;
    use mandate_core::ids::AgentId;
    use mandate_core::scope::{PatternSet, Scope};
    use mandate_core::stage::Stage;
    use mandate_verify::Principal;
    use serde_json::json;

    use super::*;

    fn engine(policies: &str) -> Arc<Engine> {
        let files = vec![("test.cedar".to_owned(), policies.to_owned())];
        Arc::new(mandate_policy::load_sources(&files, &BTreeSet::new()).unwrap())
    }

    /// A user token (alice, region `emea`) or an agent's own token (`support-v2`).
    fn principal(user: bool) -> Principal {
        let claims: AccessClaims = serde_json::from_value(if user {
            json!({
                "iss": "https://mandate.example", "sub": "alice@example.com", "sub_profile": "user",
                "sub_iss": "https://idp.example", "aud": "https://gw.example", "client_id": "support-v2",
                "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_300, "jti": "j-1",
                "scope": "crm.customers:read", "task": "ticket-1", "stage": "observe",
                "credential": "kid:support-v2-k1", "user_tags": {"region": "emea"},
                "act": {"sub": "agent:support-v2", "sub_profile": "agent", "credential": "kid:support-v2-k1"},
            })
        } else {
            json!({
                "iss": "https://mandate.example", "sub": "agent:support-v2", "sub_profile": "agent",
                "aud": "https://gw.example", "client_id": "support-v2",
                "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_300, "jti": "j-2",
                "scope": "crm.customers:read", "task": "ticket-1", "stage": "observe",
                "credential": "kid:support-v2-k1",
            })
        })
        .unwrap();
        let chain = claims.chain().unwrap();
        let scopes = claims.scopes().unwrap();
        Principal {
            claims,
            chain,
            scopes,
        }
    }

    fn agent(tags: &[&str]) -> Agent {
        Agent {
            id: AgentId::parse("support-v2").unwrap(),
            name: "support".into(),
            owner: "carol".into(),
            description: String::new(),
            ceiling: PatternSet::default(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            max_stage: Stage::Execute,
            status: AgentStatus::Active,
            keys: vec![],
            workloads: Vec::new(),
            require_dpop: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    const READ: &str =
        r#"@id("read") permit(principal, action == Action::"crm.customers:read", resource);"#;

    fn ask<'a>(
        p: &'a Principal,
        action: &'a Scope,
        resource: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> Ask<'a> {
        Ask {
            principal: p,
            action,
            resource,
            resource_tags: tags,
        }
    }

    #[test]
    fn a_repeated_question_is_answered_from_the_cache_with_the_same_verdict() {
        let e = engine(READ);
        let cache = DecisionCache::default();
        let p = principal(true);
        let action = Scope::parse("crm.customers:read").unwrap();
        let tags = BTreeMap::new();
        let a = ask(&p, &action, "customers/9821", &tags);
        let first = cache.verdict(&e, &a, None, 100);
        assert!(first.allowed, "{first:?}");
        assert_eq!(first, verdict(&e, &a, None, 100));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.verdict(&e, &a, None, 100), first);
        assert_eq!(cache.len(), 1);
        // Off, it decides every time, alike.
        assert_eq!(DecisionCache::new(0).verdict(&e, &a, None, 100), first);
    }

    #[test]
    fn a_reloaded_policy_set_is_never_answered_from_the_old_ones_verdicts() {
        let cache = DecisionCache::default();
        let p = principal(true);
        let action = Scope::parse("crm.customers:read").unwrap();
        let tags = BTreeMap::new();
        let a = ask(&p, &action, "customers/9821", &tags);
        let before = engine(READ);
        assert!(cache.verdict(&before, &a, None, 100).allowed);
        // The reload: a new set that forbids it, decided in the same second.
        let after = engine(&format!(
            r#"{READ} @id("frozen") forbid(principal, action, resource);"#
        ));
        let v = cache.verdict(&after, &a, None, 100);
        assert!(!v.allowed, "{v:?}");
        assert_eq!(v.policies, ["frozen"]);
        assert_eq!(cache.len(), 1);
        // Back to the first set (a new engine again): allowed again.
        assert!(cache.verdict(&engine(READ), &a, None, 100).allowed);
    }

    #[test]
    fn a_new_second_is_decided_again() {
        let e = engine(
            r#"@id("until") permit(principal, action == Action::"crm.customers:read", resource) when { context.now < 1000 };"#,
        );
        let cache = DecisionCache::default();
        let p = principal(true);
        let action = Scope::parse("crm.customers:read").unwrap();
        let tags = BTreeMap::new();
        let a = ask(&p, &action, "customers/9821", &tags);
        assert!(cache.verdict(&e, &a, None, 999).allowed);
        assert!(!cache.verdict(&e, &a, None, 1000).allowed);
        assert!(cache.verdict(&e, &a, None, 999).allowed);
    }

    #[test]
    fn the_resource_its_tags_the_users_tags_and_the_agent_are_all_in_the_key() {
        let e = engine(&format!(
            r#"{READ}
            @id("own-region") forbid(principal is User, action, resource)
              when {{ resource.hasTag("region") && !(principal.hasTag("region") && principal.getTag("region") == resource.getTag("region")) }};
            @id("no-4410") forbid(principal, action, resource == Resource::"customers/4410");
            @id("pii-agents") forbid(principal is Agent, action, resource) unless {{ principal.tags.contains("crm") }};"#
        ));
        let cache = DecisionCache::default();
        let action = Scope::parse("crm.customers:read").unwrap();
        let user = principal(true);
        let none = BTreeMap::new();
        let emea = BTreeMap::from([("region".to_owned(), "emea".to_owned())]);
        let amer = BTreeMap::from([("region".to_owned(), "amer".to_owned())]);
        let (crm, pii) = (agent(&["crm"]), agent(&["pii"]));
        let at = |p: &Principal, resource: &str, tags: &BTreeMap<String, String>, agent| {
            cache
                .verdict(&e, &ask(p, &action, resource, tags), agent, 100)
                .allowed
        };
        assert!(at(&user, "customers/9821", &none, None));
        assert!(!at(&user, "customers/4410", &none, None));
        assert!(at(&user, "customers/9821", &emea, None));
        assert!(!at(&user, "customers/9821", &amer, None));
        // The same token but another user tag (another token): decided again.
        let mut moved = principal(true);
        moved
            .claims
            .user_tags
            .insert("region".into(), "amer".into());
        assert!(at(&moved, "customers/9821", &amer, None));
        assert!(!at(&moved, "customers/9821", &emea, None));
        // An agent's own token: the registered agent as it is now decides.
        let own = principal(false);
        assert!(at(&own, "customers/9821", &none, Some(&crm)));
        assert!(!at(&own, "customers/9821", &none, Some(&pii)));
        assert!(at(&own, "customers/9821", &none, Some(&crm)));
        let v = cache.verdict(&e, &ask(&own, &action, "customers/9821", &none), None, 100);
        assert!(!v.allowed);
        assert_eq!(v.reason, "the token names no user and no registered agent");
    }
}
