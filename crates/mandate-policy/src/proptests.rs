//! Property tests of issuance with rights decided by Cedar: random policies (group permits and
//! forbids), random users, agents' ceilings and chains up to the depth limit. A derived token
//! never holds a scope, stage or lifetime that its parent, any earlier hop, or its user lacks.

use std::collections::{BTreeMap, BTreeSet};

use mandate_core::grant::{self, GrantRequest, Parent, Permits, ScopeMode, TtlPolicy};
use mandate_core::ids::UserPrincipal;
use mandate_core::scope::{ActionCatalog, PatternSet, Scope, ScopeSet};
use mandate_core::stage::Stage;
use proptest::prelude::*;

use crate::decide::{DecisionContext, Principal, Request, Subject};
use crate::load::{Engine, load_sources};

const SCOPES: &[&str] = &[
    "crm.customers:read",
    "crm.orders:read",
    "tickets:read",
    "tickets:create",
    "email:send",
    "billing.invoices:read",
];
const GROUPS: &[&str] = &["support", "finance", "admin"];

/// Rights of a user as Cedar, through [`Engine::decide`].
struct CedarRights<'a> {
    engine: &'a Engine,
    user: UserPrincipal,
}

impl Permits for CedarRights<'_> {
    fn permits(&self, scope: &Scope, stage: Stage) -> bool {
        let claims = BTreeMap::new();
        let context = DecisionContext {
            stage,
            task: "t".into(),
            purpose: String::new(),
            delegation_depth: 1,
            chain: vec![],
            now: 0,
            usage: Default::default(),
        };
        self.engine
            .decide(&Request {
                principal: Principal::User {
                    user: &self.user,
                    claims: &claims,
                },
                subject: Subject::Scope {
                    scope,
                    resource: "https://crm",
                    resource_tags: &claims,
                },
                context: &context,
            })
            .allowed
    }
}

fn scopes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..SCOPES.len(), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cedar_rights_are_never_amplified_along_a_chain(
        permits in proptest::collection::vec((0..GROUPS.len(), scopes()), 1..4),
        forbids in scopes(),
        user_groups in proptest::sample::subsequence(GROUPS, 0..=GROUPS.len()),
        hops in proptest::collection::vec((scopes(), scopes(), 0..3usize, proptest::option::of(1i64..4_000)), 1..=4),
    ) {
        // The policies, and the user's true rights computed directly from them.
        let mut text = String::new();
        let mut truth: BTreeSet<&str> = BTreeSet::new();
        for (i, (g, s)) in permits.iter().enumerate() {
            if s.is_empty() { continue; }
            let actions: Vec<String> = s.iter().map(|i| format!("Action::\"{}\"", SCOPES[*i])).collect();
            text.push_str(&format!("@id(\"p{i}\") permit(principal in Group::\"{}\", action in [{}], resource);\n", GROUPS[*g], actions.join(", ")));
            if user_groups.contains(&GROUPS[*g]) {
                truth.extend(s.iter().map(|i| SCOPES[*i]));
            }
        }
        for (i, f) in forbids.iter().enumerate() {
            text.push_str(&format!("@id(\"f{i}\") forbid(principal, action == Action::\"{}\", resource);\n", SCOPES[*f]));
            truth.remove(SCOPES[*f]);
        }
        if text.is_empty() { text.push_str("forbid(principal, action, resource);"); }
        let engine = load_sources(&[("p.cedar".into(), text)], &BTreeSet::new()).unwrap();
        let rights = CedarRights {
            engine: &engine,
            user: UserPrincipal {
                issuer: "i".into(),
                subject: "u".into(),
                groups: user_groups.iter().map(|g| (*g).to_owned()).collect(),
            },
        };
        let aud = vec!["https://crm".to_owned()];
        let mut earlier: Vec<Parent> = Vec::new();
        for (ceiling, requested, max_stage, ttl) in hops {
            let ceiling = PatternSet(ceiling.iter().map(|i| Scope::parse(SCOPES[*i]).unwrap().into()).collect());
            let requested: ScopeSet = requested.iter().map(|i| Scope::parse(SCOPES[*i]).unwrap()).collect();
            let max_stage = [Stage::Observe, Stage::Draft, Stage::Execute][max_stage];
            let parent = earlier.last().cloned();
            let parent_rights = parent.as_ref().map(|p| PatternSet(p.scope.iter().cloned().map(Into::into).collect()));
            let permits: &dyn Permits = match &parent_rights {
                Some(p) => p,
                None => &rights,
            };
            let req = GrantRequest {
                requested: &requested,
                aud: &aud,
                mode: ScopeMode::Intersect,
                rights: permits,
                ceiling: &ceiling,
                max_stage,
                parent: parent.as_ref(),
                stage: None,
                ttl,
                subject_exp: parent.as_ref().map_or(10_000, |p| p.exp),
                now: 1_000,
                ttl_policy: TtlPolicy::default(),
                catalog: &ActionCatalog::default(),
            };
            let Ok(g) = grant::decide(&req) else { break };
            prop_assert!(!g.scope.is_empty());
            for s in g.scope.iter() {
                prop_assert!(truth.contains(s.as_str()), "the user lacks {}", s);
                prop_assert!(ceiling.allows(s));
                for e in &earlier {
                    prop_assert!(e.scope.contains(s));
                }
            }
            for e in &earlier {
                prop_assert!(g.stage <= e.stage && g.exp <= e.exp);
            }
            earlier.push(Parent { scope: g.scope, stage: g.stage, exp: g.exp, aud: aud.clone() });
        }
    }
}
