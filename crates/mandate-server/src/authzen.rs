//! The OpenID AuthZEN Authorization API (1.0): other enforcement points (Envoy, other gateways)
//! ask Mandate's policy decision point. `POST /access/v1/evaluation` decides one request;
//! `POST /access/v1/evaluations` decides several, with top-level `subject`, `action`, `resource`
//! and `context` as defaults for each item. Callers authenticate with an admin credential (any
//! role). Every decision is an audit event.
//!
//! Mapping: `subject.type` `user` (id = the user's subject; `properties.groups`, `issuer`, and
//! other string properties become the user's groups, issuer and tags) or `agent` (a registered
//! agent id); `action.name` is a scope or `delegate`; `resource.id` is the resource (for
//! `delegate`, the receiving agent's id) and its string `properties` are the resource's tags
//! (`resource.getTag("region")`); `context` may carry `stage`, `task`, `purpose`, `chain` and
//! `delegation_depth`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mandate_core::audit::{Decision as AuditDecision, NewEvent};
use mandate_core::ids::UserPrincipal;
use mandate_core::scope::Scope;
use mandate_core::stage::Stage;
use mandate_policy::{DecisionContext, Principal, Request, Subject};
use mandate_store::Op;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::admin::auth::Admin;
use crate::admin::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Most evaluations in one batch.
const MAX_BATCH: usize = 100;

/// An AuthZEN entity: `{type, id, properties}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AzEntity {
    /// The entity's type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// Further attributes.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// An AuthZEN action: `{name, properties}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AzAction {
    /// The action's name: a scope, or `delegate`.
    #[serde(default)]
    pub name: String,
    /// Further attributes.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// One evaluation (all parts optional in a batch item; defaults come from the top level).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AzEvaluation {
    /// Who.
    #[serde(default)]
    pub subject: Option<AzEntity>,
    /// What.
    #[serde(default)]
    pub action: Option<AzAction>,
    /// On what.
    #[serde(default)]
    pub resource: Option<AzEntity>,
    /// In what context.
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

/// A batch request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AzBatch {
    /// Defaults for each evaluation.
    #[serde(flatten)]
    pub defaults: AzEvaluation,
    /// The evaluations.
    #[serde(default)]
    pub evaluations: Vec<AzEvaluation>,
    /// `{"evaluations_semantic": "execute_all" | "deny_on_first_deny" | "permit_on_first_permit"}`.
    #[serde(default)]
    pub options: Map<String, Value>,
}

fn merge(item: &AzEvaluation, defaults: &AzEvaluation) -> AzEvaluation {
    AzEvaluation {
        subject: item.subject.clone().or_else(|| defaults.subject.clone()),
        action: item.action.clone().or_else(|| defaults.action.clone()),
        resource: item.resource.clone().or_else(|| defaults.resource.clone()),
        context: item.context.clone().or_else(|| defaults.context.clone()),
    }
}

fn text(ctx: &Map<String, Value>, key: &str) -> String {
    ctx.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Decides one evaluation: `(decision, policies, reason)`. Bad input is a denial that says why.
fn evaluate(state: &AppState, e: &AzEvaluation) -> (bool, Vec<String>, String) {
    let (Some(subject), Some(action), Some(resource)) = (&e.subject, &e.action, &e.resource) else {
        return (
            false,
            vec![],
            "`subject`, `action` and `resource` are required".into(),
        );
    };
    let ctx = e.context.clone().unwrap_or_default();
    let stage = match ctx.get("stage").and_then(Value::as_str) {
        None => Stage::Observe,
        Some(s) => match s.parse::<Stage>() {
            Ok(s) => s,
            Err(m) => return (false, vec![], m),
        },
    };
    let chain: Vec<String> = ctx
        .get("chain")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let context = DecisionContext {
        stage,
        task: text(&ctx, "task"),
        purpose: text(&ctx, "purpose"),
        delegation_depth: ctx
            .get("delegation_depth")
            .and_then(Value::as_i64)
            .unwrap_or(i64::try_from(chain.len()).unwrap_or(0)),
        chain,
        now: state.clock.now(),
        usage: mandate_policy::Usage {
            agent_last_hour: ctx
                .get("agent_last_hour")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            user_last_hour: ctx
                .get("user_last_hour")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        },
    };
    let user;
    let claims: BTreeMap<String, String>;
    let agent;
    let principal = match subject.kind.as_str() {
        "user" if !subject.id.is_empty() => {
            let props = &subject.properties;
            user = UserPrincipal {
                issuer: text(props, "issuer"),
                subject: subject.id.clone(),
                groups: props
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            claims = props
                .iter()
                .filter(|(k, _)| k.as_str() != "groups" && k.as_str() != "issuer")
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect();
            Principal::User {
                user: &user,
                claims: &claims,
            }
        }
        "agent" => match state.directory.get(&subject.id) {
            Some(a) => {
                agent = a;
                Principal::Agent(&agent)
            }
            None => {
                return (
                    false,
                    vec![],
                    format!("agent `{}` is not registered", subject.id),
                );
            }
        },
        other => {
            return (
                false,
                vec![],
                format!("subject type `{other}` is not `user` or `agent`"),
            );
        }
    };
    let engine = state.policy.engine();
    let decision = if action.name == "delegate" {
        let Some(to) = state.directory.get(&resource.id) else {
            return (
                false,
                vec![],
                format!("agent `{}` is not registered", resource.id),
            );
        };
        engine.decide(&Request {
            principal,
            subject: Subject::Delegate { to: &to },
            context: &context,
        })
    } else {
        let scope = match Scope::parse(&action.name) {
            Ok(s) => s,
            Err(e) => return (false, vec![], e.to_string()),
        };
        let resource_tags = crate::policy::resource_tags(&resource.properties);
        engine.decide(&Request {
            principal,
            subject: Subject::Scope {
                scope: &scope,
                resource: &resource.id,
                resource_tags: &resource_tags,
            },
            context: &context,
        })
    };
    let reason = match (decision.allowed, decision.policies.is_empty()) {
        (true, _) => format!("permitted by {}", decision.policies.join(", ")),
        (false, true) => "no policy permits it".to_owned(),
        (false, false) => format!("forbidden by {}", decision.policies.join(", ")),
    };
    (decision.allowed, decision.policies, reason)
}

fn event(e: &AzEvaluation, allowed: bool, policies: &[String], reason: &str, by: &str) -> NewEvent {
    let subject = e.subject.as_ref();
    NewEvent {
        kind: "authzen.evaluation".into(),
        user: subject.filter(|s| s.kind == "user").map(|s| s.id.clone()),
        chain: subject
            .filter(|s| s.kind == "agent")
            .map(|s| vec![s.id.clone()])
            .unwrap_or_default(),
        action: e
            .action
            .as_ref()
            .map(|a| a.name.chars().take(200).collect()),
        resource: e
            .resource
            .as_ref()
            .map(|r| r.id.chars().take(500).collect()),
        decision: Some(if allowed {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        }),
        reason: reason.to_owned(),
        policy_ids: policies.to_vec(),
        detail: json!({ "caller": by }).to_string(),
        ..Default::default()
    }
}

fn answer(allowed: bool, policies: &[String], reason: &str) -> Value {
    json!({
        "decision": allowed,
        "context": { "policies": policies, "reason_admin": { "en": reason } },
    })
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(e): JsonBody<AzEvaluation>,
) -> Result<Response, ApiError> {
    let (allowed, policies, reason) = evaluate(&state, &e);
    state
        .store
        .commit(vec![Op::Audit(event(
            &e,
            allowed,
            &policies,
            &reason,
            &admin.label(),
        ))])
        .await?;
    Ok(Json(answer(allowed, &policies, &reason)).into_response())
}

/// `POST /access/v1/evaluations`.
pub async fn evaluations(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(batch): JsonBody<AzBatch>,
) -> Result<Response, ApiError> {
    if batch.evaluations.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BATCH} evaluations per request"
        )));
    }
    let semantic = batch
        .options
        .get("evaluations_semantic")
        .and_then(Value::as_str)
        .unwrap_or("execute_all");
    if !matches!(
        semantic,
        "execute_all" | "deny_on_first_deny" | "permit_on_first_permit"
    ) {
        return Err(ApiError::bad_request(format!(
            "`evaluations_semantic` `{}` is not `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`",
            semantic.chars().take(40).collect::<String>()
        )));
    }
    let items: Vec<AzEvaluation> = if batch.evaluations.is_empty() {
        vec![batch.defaults.clone()]
    } else {
        batch
            .evaluations
            .iter()
            .map(|i| merge(i, &batch.defaults))
            .collect()
    };
    let mut results = Vec::new();
    let mut ops = Vec::new();
    for item in &items {
        let (allowed, policies, reason) = evaluate(&state, item);
        ops.push(Op::Audit(event(
            item,
            allowed,
            &policies,
            &reason,
            &admin.label(),
        )));
        results.push(answer(allowed, &policies, &reason));
        if (semantic == "deny_on_first_deny" && !allowed)
            || (semantic == "permit_on_first_permit" && allowed)
        {
            break;
        }
    }
    state.store.commit(ops).await?;
    Ok(Json(json!({ "evaluations": results })).into_response())
}

/// `GET /.well-known/authzen-configuration`.
pub async fn configuration(State(state): State<Arc<AppState>>) -> Json<Value> {
    let i = &state.issuer;
    Json(json!({
        "policy_decision_point": i,
        "access_evaluation_endpoint": format!("{i}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{i}/access/v1/evaluations"),
    }))
}
