//! One decision: build the request's small entity slice, ask Cedar, say which policies decided.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request as CedarRequest, RestrictedExpression,
};
use mandate_core::agent::Agent;
use mandate_core::ids::UserPrincipal;
use mandate_core::scope::Scope;
use mandate_core::stage::Stage;

use crate::load::{Engine, Slice};
use crate::schema::DELEGATE;

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub enum Principal<'a> {
    /// A user, with their groups and the user token's string claims (as Cedar tags).
    User {
        /// The user.
        user: &'a UserPrincipal,
        /// String claims of the user token, e.g. `tier`.
        claims: &'a BTreeMap<String, String>,
    },
    /// An agent on its own behalf, or the delegating agent of a hop.
    Agent(&'a Agent),
}

/// What is asked.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// May the principal hold `scope` for `resource` (an audience)?
    Scope {
        /// The scope (the Cedar action).
        scope: &'a Scope,
        /// The audience or resource.
        resource: &'a str,
        /// The resource's attributes, as Cedar tags (`resource.getTag("region")`); empty for
        /// issuance, where the resource is an audience.
        resource_tags: &'a BTreeMap<String, String>,
    },
    /// May the principal (an agent) hand the delegation on to `to`?
    Delegate {
        /// The receiving agent.
        to: &'a Agent,
    },
}

/// The request context (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionContext {
    /// Stage of the token being decided.
    pub stage: Stage,
    /// Task id.
    pub task: String,
    /// The task's purpose.
    pub purpose: String,
    /// Agents in the chain so far (1 for a first hop).
    pub delegation_depth: i64,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// Now, seconds since the epoch.
    pub now: i64,
    /// Windowed usage counts of the action being decided.
    pub usage: Usage,
}

/// How often the action being decided was used recently (tokens issued holding the scope), so
/// "too much too fast" rules are policies: `context.usage.agent_last_hour < 100`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// By the agent (the current actor), in the last hour.
    pub agent_last_hour: i64,
    /// For the user, in the last hour.
    pub user_last_hour: i64,
}

/// A decision request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub principal: Principal<'a>,
    /// What.
    pub subject: Subject<'a>,
    /// In what context.
    pub context: &'a DecisionContext,
}

/// The answer, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed: some permit applies and no forbid does.
    pub allowed: bool,
    /// The policies that decided: the permits that allowed, or the forbids that denied (empty
    /// when nothing permitted).
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that failed to evaluate is skipped; denial stays the default).
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(error: String) -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(ty).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(|s| string(s)))
}

fn agent_entity(a: &Agent) -> Result<Entity, String> {
    Entity::new(
        uid("Agent", a.id.as_str())?,
        [
            ("owner".to_owned(), string(&a.owner)),
            ("tags".to_owned(), strings(&a.tags)),
            ("max_stage".to_owned(), string(a.max_stage.as_str())),
        ]
        .into_iter()
        .collect(),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())
}

impl Engine {
    fn entities(
        &self,
        req: &Request<'_>,
        slice: &Slice,
    ) -> Result<(EntityUid, EntityUid, EntityUid, Vec<Entity>), String> {
        let mut entities = Vec::new();
        let principal = match req.principal {
            Principal::User { user, claims } => {
                let id = uid("User", &user.subject)?;
                let mut parents = Vec::new();
                for g in &user.groups {
                    let gid = uid("Group", g)?;
                    entities.push(Entity::new_no_attrs(gid.clone(), HashSet::new()));
                    parents.push(gid);
                }
                let attrs = [
                    ("issuer".to_owned(), string(&user.issuer)),
                    ("groups".to_owned(), strings(&user.groups)),
                ];
                let tags = claims.iter().map(|(k, v)| (k.clone(), string(v)));
                entities.push(
                    Entity::new_with_tags(id.clone(), attrs, parents, tags)
                        .map_err(|e| e.to_string())?,
                );
                id
            }
            Principal::Agent(a) => {
                entities.push(agent_entity(a)?);
                uid("Agent", a.id.as_str())?
            }
        };
        let (action, resource) = match req.subject {
            Subject::Scope {
                scope,
                resource,
                resource_tags,
            } => {
                let mut parents = Vec::new();
                for g in &slice.groups {
                    let gid = uid("Action", g)?;
                    entities.push(Entity::new_no_attrs(gid.clone(), HashSet::new()));
                    parents.push(gid);
                }
                let action = uid("Action", scope.as_str())?;
                entities.push(Entity::new_no_attrs(
                    action.clone(),
                    parents.into_iter().collect(),
                ));
                let resource = uid("Resource", resource)?;
                let tags = resource_tags.iter().map(|(k, v)| (k.clone(), string(v)));
                entities.push(
                    Entity::new_with_tags(resource.clone(), [], [], tags)
                        .map_err(|e| e.to_string())?,
                );
                (action, resource)
            }
            Subject::Delegate { to } => {
                let action = uid("Action", DELEGATE)?;
                entities.push(Entity::new_no_attrs(action.clone(), HashSet::new()));
                if !matches!(req.principal, Principal::Agent(a) if a.id == to.id) {
                    entities.push(agent_entity(to)?);
                }
                (action, uid("Agent", to.id.as_str())?)
            }
        };
        Ok((principal, action, resource, entities))
    }

    /// Decides `req`. Fails closed: any error building the request is a denial that says why.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let slice = match req.subject {
            Subject::Scope { scope, .. } => self.slice(scope.as_str(), Some(scope)),
            Subject::Delegate { .. } => self.slice(DELEGATE, None),
        };
        let (principal, action, resource, entities) = match self.entities(req, &slice) {
            Ok(s) => s,
            Err(e) => return Decision::deny(format!("request cannot be built: {e}")),
        };
        let c = req.context;
        let context = Context::from_pairs([
            ("stage".to_owned(), string(c.stage.as_str())),
            ("task".to_owned(), string(&c.task)),
            ("purpose".to_owned(), string(&c.purpose)),
            (
                "delegation_depth".to_owned(),
                RestrictedExpression::new_long(c.delegation_depth),
            ),
            ("chain".to_owned(), strings(&c.chain)),
            ("now".to_owned(), RestrictedExpression::new_long(c.now)),
            (
                "usage".to_owned(),
                RestrictedExpression::new_record([
                    (
                        "agent_last_hour".to_owned(),
                        RestrictedExpression::new_long(c.usage.agent_last_hour),
                    ),
                    (
                        "user_last_hour".to_owned(),
                        RestrictedExpression::new_long(c.usage.user_last_hour),
                    ),
                ])
                .unwrap_or_else(|_| RestrictedExpression::new_long(0)),
            ),
        ]);
        let context = match context {
            Ok(c) => c,
            Err(e) => return Decision::deny(format!("context cannot be built: {e}")),
        };
        let request = match CedarRequest::new(principal, action, resource, context, None) {
            Ok(r) => r,
            Err(e) => return Decision::deny(format!("request cannot be built: {e}")),
        };
        let entities = match Entities::from_entities(entities, None) {
            Ok(e) => e,
            Err(e) => return Decision::deny(format!("entities cannot be built: {e}")),
        };
        let answer = Authorizer::new().is_authorized(&request, &slice.policies, &entities);
        let diag = answer.diagnostics();
        Decision {
            allowed: answer.decision() == CedarDecision::Allow,
            policies: diag.reason().map(ToString::to_string).collect(),
            errors: diag.errors().map(ToString::to_string).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_sources;
    use mandate_core::agent::AgentStatus;
    use mandate_core::ids::AgentId;
    use mandate_core::scope::PatternSet;
    use std::collections::BTreeSet;

    const POLICIES: &str = r#"
@id("support-reads")
permit(principal in Group::"support", action in [Action::"crm.customers:read", Action::"tickets:*"], resource);

@id("gold-billing")
permit(principal in Group::"finance", action in Action::"billing.*:read", resource)
  when { principal.hasTag("tier") && principal.getTag("tier") == "gold" };

@id("no-writes-before-launch")
forbid(principal, action == Action::"tickets:create", resource)
  when { context.now < 10000 };

@id("no-pii-agents-in-billing")
forbid(principal is Agent, action in Action::"billing.*:read", resource) when { principal.tags.contains("pii") };

@id("agents-read-billing")
permit(principal is Agent, action in Action::"billing.*:read", resource);

@id("support-to-analytics")
permit(principal == Agent::"support-v2", action == Action::"delegate", resource == Agent::"analytics-v1")
  when { context.delegation_depth < 3 };
"#;

    fn engine() -> Engine {
        load_sources(&[("team.cedar".into(), POLICIES.into())], &BTreeSet::new()).unwrap()
    }

    fn user(groups: &[&str]) -> UserPrincipal {
        UserPrincipal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn agent(id: &str) -> Agent {
        Agent {
            id: AgentId::parse(id).unwrap(),
            name: id.into(),
            owner: "carol".into(),
            description: String::new(),
            ceiling: PatternSet::default(),
            tags: vec!["pii".into()],
            max_stage: Stage::Draft,
            status: AgentStatus::Active,
            keys: vec![],
            workloads: Vec::new(),
            require_dpop: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn ctx(now: i64, depth: i64) -> DecisionContext {
        DecisionContext {
            stage: Stage::Observe,
            task: "t".into(),
            purpose: String::new(),
            delegation_depth: depth,
            chain: vec![],
            now,
            usage: Usage::default(),
        }
    }

    static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();

    fn scope_req<'a>(p: Principal<'a>, s: &'a Scope, c: &'a DecisionContext) -> Request<'a> {
        Request {
            principal: p,
            subject: Subject::Scope {
                scope: s,
                resource: "https://crm.example.com",
                resource_tags: &NO_TAGS,
            },
            context: c,
        }
    }

    #[test]
    fn group_membership_and_wildcard_actions_permit() {
        let e = engine();
        let u = user(&["support"]);
        let claims = BTreeMap::new();
        let c = ctx(50_000, 1);
        let p = Principal::User {
            user: &u,
            claims: &claims,
        };
        let read = Scope::parse("crm.customers:read").unwrap();
        let d = e.decide(&scope_req(p, &read, &c));
        assert!(d.allowed);
        assert_eq!(d.policies, vec!["support-reads"]);
        let tickets = Scope::parse("tickets:list").unwrap();
        assert!(
            e.decide(&scope_req(p, &tickets, &c)).allowed,
            "tickets:* covers a scope no policy names"
        );
        let email = Scope::parse("email:send").unwrap();
        let d = e.decide(&scope_req(p, &email, &c));
        assert!(!d.allowed && d.policies.is_empty());
    }

    #[test]
    fn forbid_wins_and_names_itself() {
        let e = engine();
        let u = user(&["support"]);
        let claims = BTreeMap::new();
        let create = Scope::parse("tickets:create").unwrap();
        let day = ctx(50_000, 1);
        let night = ctx(3_600, 1);
        let p = Principal::User {
            user: &u,
            claims: &claims,
        };
        assert!(e.decide(&scope_req(p, &create, &day)).allowed);
        let d = e.decide(&scope_req(p, &create, &night));
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["no-writes-before-launch"]);
    }

    #[test]
    fn policies_without_an_action_constraint_still_apply() {
        let e = load_sources(
            &[(
                "p.cedar".into(),
                "@id(\"read\") permit(principal, action in Action::\"crm.*:read\", resource);\n@id(\"freeze\") forbid(principal, action, resource) when { context.stage == \"execute\" };".into(),
            )],
            &BTreeSet::new(),
        )
        .unwrap();
        let u = user(&[]);
        let claims = BTreeMap::new();
        let p = Principal::User {
            user: &u,
            claims: &claims,
        };
        let read = Scope::parse("crm.customers:read").unwrap();
        assert!(e.decide(&scope_req(p, &read, &ctx(1, 1))).allowed);
        let mut c = ctx(1, 1);
        c.stage = Stage::Execute;
        let d = e.decide(&scope_req(p, &read, &c));
        assert_eq!((d.allowed, d.policies), (false, vec!["freeze".to_owned()]));
    }

    #[test]
    fn agent_tags_are_readable() {
        let e = engine();
        let c = ctx(50_000, 1);
        let invoices = Scope::parse("billing.invoices:read").unwrap();
        let tagged = agent("tagged");
        let mut plain = agent("plain");
        plain.tags.clear();
        let d = e.decide(&scope_req(Principal::Agent(&tagged), &invoices, &c));
        assert_eq!(
            (d.allowed, d.policies),
            (false, vec!["no-pii-agents-in-billing".to_owned()])
        );
        assert!(
            e.decide(&scope_req(Principal::Agent(&plain), &invoices, &c))
                .allowed
        );
    }

    #[test]
    fn usage_counts_are_in_the_context() {
        let e = load_sources(
            &[("p.cedar".into(), "permit(principal, action == Action::\"email:send\", resource) when { context.usage.user_last_hour < 3 };".into())],
            &BTreeSet::new(),
        )
        .unwrap();
        let u = user(&[]);
        let claims = BTreeMap::new();
        let send = Scope::parse("email:send").unwrap();
        let mut c = ctx(1, 1);
        c.usage.user_last_hour = 2;
        assert!(
            e.decide(&scope_req(
                Principal::User {
                    user: &u,
                    claims: &claims
                },
                &send,
                &c
            ))
            .allowed
        );
        c.usage.user_last_hour = 3;
        assert!(
            !e.decide(&scope_req(
                Principal::User {
                    user: &u,
                    claims: &claims
                },
                &send,
                &c
            ))
            .allowed
        );
    }

    #[test]
    fn token_claims_are_tags() {
        let e = engine();
        let u = user(&["finance"]);
        let c = ctx(50_000, 1);
        let invoices = Scope::parse("billing.invoices:read").unwrap();
        let none = BTreeMap::new();
        let gold: BTreeMap<String, String> = [("tier".to_owned(), "gold".to_owned())].into();
        assert!(
            !e.decide(&scope_req(
                Principal::User {
                    user: &u,
                    claims: &none
                },
                &invoices,
                &c
            ))
            .allowed
        );
        assert!(
            e.decide(&scope_req(
                Principal::User {
                    user: &u,
                    claims: &gold
                },
                &invoices,
                &c
            ))
            .allowed
        );
    }

    const SAME_REGION: &str = r#"
@id("same-region-reads")
permit(principal is User, action == Action::"crm.customers:read", resource)
  when {
    principal.hasTag("region") && resource.hasTag("region") &&
    resource.getTag("region") == principal.getTag("region")
  };
"#;

    #[test]
    fn resource_tags_decide_record_level_access() {
        let e = load_sources(
            &[("region.cedar".into(), SAME_REGION.into())],
            &BTreeSet::new(),
        )
        .unwrap();
        let u = user(&["support"]);
        let emea: BTreeMap<String, String> = [("region".to_owned(), "emea".to_owned())].into();
        let amer: BTreeMap<String, String> = [("region".to_owned(), "amer".to_owned())].into();
        let untagged = BTreeMap::new();
        let read = Scope::parse("crm.customers:read").unwrap();
        let c = ctx(50_000, 1);
        let ask = |claims: &BTreeMap<String, String>, tags: &BTreeMap<String, String>| {
            e.decide(&Request {
                principal: Principal::User { user: &u, claims },
                subject: Subject::Scope {
                    scope: &read,
                    resource: "customers/9821",
                    resource_tags: tags,
                },
                context: &c,
            })
        };
        let d = ask(&emea, &emea);
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.policies, vec!["same-region-reads"]);
        let d = ask(&emea, &amer);
        assert!(!d.allowed && d.policies.is_empty(), "{d:?}");
        let d = ask(&emea, &untagged);
        assert!(
            !d.allowed && d.policies.is_empty() && d.errors.is_empty(),
            "{d:?}"
        );
        let d = ask(&untagged, &emea);
        assert!(!d.allowed && d.errors.is_empty(), "{d:?}");
    }

    #[test]
    fn resource_tags_are_in_the_schema_and_unguarded_reads_are_refused() {
        // `getTag` on the resource validates against the schema (guarded by `hasTag`)…
        assert!(
            load_sources(
                &[("region.cedar".into(), SAME_REGION.into())],
                &BTreeSet::new()
            )
            .is_ok()
        );
        // …and a read without the guard is refused at load, not an error at decision time.
        let unguarded = r#"permit(principal is User, action == Action::"crm.customers:read", resource)
  when { principal.hasTag("region") && resource.getTag("region") == principal.getTag("region") };"#;
        let errors =
            load_sources(&[("bad.cedar".into(), unguarded.into())], &BTreeSet::new()).unwrap_err();
        assert_eq!(errors[0].file, "bad.cedar", "{errors:?}");
    }

    #[test]
    fn delegation_is_a_policy_decision() {
        let e = engine();
        let (s, a, x) = (agent("support-v2"), agent("analytics-v1"), agent("other"));
        let c = ctx(50_000, 1);
        let ask = |from: &Agent, to: &Agent, c: &DecisionContext| {
            e.decide(&Request {
                principal: Principal::Agent(from),
                subject: Subject::Delegate { to },
                context: c,
            })
        };
        assert!(ask(&s, &a, &c).allowed);
        assert!(!ask(&a, &s, &c).allowed, "not the other way round");
        assert!(!ask(&s, &x, &c).allowed);
        assert!(
            !ask(&s, &a, &ctx(50_000, 3)).allowed,
            "conditions on depth hold"
        );
    }
}
