//! Compliance (SPEC §8): the controls Mandate speaks to, the evidence a deployment gives for
//! them, and an honest assessment of each.
//!
//! The catalogue ([`CONTROLS`]) says, for SOC 2 CC6.1–CC6.3, HIPAA §164.312(a)(1), (a)(2)(i),
//! (b), (d), OWASP LLM06:2025 and EU AI Act Art. 12, what the control asks (in our own words),
//! what Mandate does about it, and which evidence items the assessment relies on. The server
//! gathers an [`Evidence`] value from its configuration, store and audit log; [`assess`] turns it
//! into one [`ControlResult`] per control — `met`, `partial` or `gap`, with the evidence lines
//! and each gap's fix. Everything here is pure: the same evidence always gives the same report.
//!
//! Values that come from outside (agent ids and names, owners, key ids, scope patterns, users)
//! are written between backticks in the lines, with any backtick or line break inside them
//! replaced, so a renderer can show them as code and nothing in them is read as markup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, AgentStatus};
use crate::scope::{ActionCatalog, ActionClass, Scope, ScopePattern};
use crate::stage::Stage;

/// The window a report covers when none is asked for, days.
pub const DEFAULT_WINDOW_DAYS: u32 = 30;
/// The longest window a report may cover, days (ten years).
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// The least time audit events must be kept: six months (EU AI Act Art. 19 and 26(6)).
pub const MIN_RETENTION_DAYS: u64 = 183;
/// Token lifetimes above this many seconds make CC6.1 `partial`.
pub const LONG_TOKEN_SECS: i64 = 3600;
/// The audit event kinds that issue a token.
pub const ISSUANCE_KINDS: &[&str] = &["token.exchange", "token.client_credentials", "token.ciba"];
/// The audit event kind of a gateway decision on a request.
pub const GATEWAY_KIND: &str = "gateway.request";
/// The audit event kind of a circuit breaker trip.
pub const BREAKER_KIND: &str = "gateway.breaker";
/// At most this many names are listed in one line; the rest are counted.
const LIST_LIMIT: usize = 10;

// ---- the catalogue ----

/// A compliance framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    /// AICPA SOC 2 Trust Services Criteria (2017, revised 2022).
    Soc2,
    /// HIPAA Security Rule, 45 CFR §164.312 (technical safeguards).
    Hipaa,
    /// OWASP Top 10 for LLM Applications 2025.
    OwaspLlm,
    /// EU Artificial Intelligence Act, Regulation (EU) 2024/1689.
    EuAiAct,
}

impl Framework {
    /// The framework's name, as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Framework::Soc2 => "SOC 2",
            Framework::Hipaa => "HIPAA",
            Framework::OwaspLlm => "OWASP LLM Top 10",
            Framework::EuAiAct => "EU AI Act",
        }
    }
}

/// One control of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Control {
    /// Stable machine id, e.g. `soc2-cc6.1`.
    pub id: &'static str,
    /// The framework.
    pub framework: Framework,
    /// The framework's own reference, e.g. `CC6.1` or `§164.312(b)`.
    pub reference: &'static str,
    /// Its title.
    pub title: &'static str,
    /// What the control asks, in short.
    pub asks: &'static str,
    /// What Mandate does about it.
    pub mandate_does: &'static str,
    /// The evidence items the assessment relies on (field paths of [`Evidence`]).
    pub relies_on: &'static [&'static str],
}

/// Every control Mandate reports on, in report order.
pub const CONTROLS: &[Control] = &[
    Control {
        id: "soc2-cc6.1",
        framework: Framework::Soc2,
        reference: "CC6.1",
        title: "Logical access security",
        asks: "Logical access to information assets is restricted by software and architecture: \
               people and programs are identified and authenticated, access is granted by rule, \
               and credentials and keys are protected.",
        mandate_does: "Every agent is a registered identity that proves itself with a signed, \
               single-use client assertion from its own key (no static secrets); every user is \
               proven by a trusted identity provider's token. Each action runs on a short-lived \
               token bound to one task, issued only when Cedar policy, the agent's ceiling and \
               the stage allow it, and checked again by the gateway on every request. Signing \
               keys and upstream secrets are sealed under the master key; agents never hold the \
               real downstream credentials.",
        relies_on: &[
            "config.policy_count",
            "config.policy_reload_failed",
            "config.trusted_idps",
            "dev",
            "config.tokens",
            "activity.tokens_issued",
            "activity.token_denials",
            "agents",
            "config.gateway",
        ],
    },
    Control {
        id: "soc2-cc6.2",
        framework: Framework::Soc2,
        reference: "CC6.2",
        title: "Registration and authorization of new identities",
        asks: "Before credentials are issued, new users and system identities are registered and \
               their access authorized by someone accountable; access is removed when it is no \
               longer authorized.",
        mandate_does: "An agent obtains nothing until an admin registers it with an accountable \
               owner, a description, a ceiling and a maximum stage; registration and every \
               change are audit events. Widening an agent's ceiling or raising its stage can be \
               held for a human's approval. Suspending or retiring an agent, revoking a key or \
               off-boarding a user ends every token derived from them at once, and verifiers are \
               told through the revocation stream and Shared Signals.",
        relies_on: &[
            "agents",
            "agents.without_owner",
            "config.approvals.agent_changes",
            "activity.by_kind",
            "activity.approvals",
            "activity.revocations",
            "activity.revocations_total",
            "config.ssf_streams",
        ],
    },
    Control {
        id: "soc2-cc6.3",
        framework: Framework::Soc2,
        reference: "CC6.3",
        title: "Least privilege, role-based access and its removal",
        asks: "Access is granted, changed and removed according to roles and responsibilities, \
               with least privilege and segregation of duties.",
        mandate_does: "A token holds only what was asked for and what the user's rights, the \
               agent's ceiling, the stage and every parent token all allow: delegation narrows, \
               never amplifies. Tokens are bound to one task and end with it. Approvals are \
               decided by the agent's owner or an approver group member, never by the user the \
               request is for, and never with an admin credential.",
        relies_on: &[
            "agents.broad_ceilings",
            "agents.wildcard_actions",
            "config.max_chain_depth",
            "activity.denials",
            "activity.denials_by_code",
            "activity.approvals",
        ],
    },
    Control {
        id: "hipaa-164.312-a-1",
        framework: Framework::Hipaa,
        reference: "§164.312(a)(1)",
        title: "Access control",
        asks: "Systems that hold electronic protected health information let only the persons \
               or software programs that were granted access rights reach it.",
        mandate_does: "Software programs (agents) reach data only with a token naming the user, \
               the agent chain and the task, issued under policy. The gateway checks each \
               request against the route's action and resource, the token's scope and stage, \
               and Cedar policy, and injects the upstream credential itself so agents never \
               hold it. Tokens are short-lived and revocation takes effect at once.",
        relies_on: &[
            "config.policy_count",
            "config.gateway",
            "activity.gateway_allowed",
            "activity.gateway_denied",
            "activity.tokens_issued",
            "activity.revocations",
            "config.tokens",
        ],
    },
    Control {
        id: "hipaa-164.312-a-2-i",
        framework: Framework::Hipaa,
        reference: "§164.312(a)(2)(i)",
        title: "Unique user identification",
        asks: "Every user is given a unique name or number so that their identity can be \
               identified and tracked.",
        mandate_does: "Every token names the user (`sub`, from the identity provider) and every \
               agent of the delegation chain (`act`), plus the credential that proved the agent; \
               every audit line carries them. There are no shared agent secrets: each agent \
               proves itself with its own registered key.",
        relies_on: &[
            "activity.decisions",
            "activity.decisions_without_principal",
            "activity.distinct_users",
            "activity.distinct_agents",
            "agents.shared_keys",
            "samples",
        ],
    },
    Control {
        id: "hipaa-164.312-b",
        framework: Framework::Hipaa,
        reference: "§164.312(b)",
        title: "Audit controls",
        asks: "Mechanisms record and let you examine activity in the systems that hold or use \
               electronic protected health information.",
        mandate_does: "Every issuance, refusal, revocation, gateway decision, approval, breaker \
               trip and agent or policy change is an append-only, hash-chained audit event, \
               durable before the answer leaves. Signed checkpoints of the chain head reveal a \
               cut or rewritten tail. The log is queryable (`mandate audit who`), verifiable \
               offline (`mandate audit verify --data`) and exportable as JSON lines or OCSF.",
        relies_on: &[
            "integrity.verification",
            "integrity.checkpoints",
            "integrity.latest_checkpoint",
            "config.audit_checkpoint_secs",
            "activity.events",
            "activity.by_kind",
        ],
    },
    Control {
        id: "hipaa-164.312-d",
        framework: Framework::Hipaa,
        reference: "§164.312(d)",
        title: "Person or entity authentication",
        asks: "Whoever seeks access, a person or an entity, is verified to be the one claimed.",
        mandate_does: "Users are authenticated by a signed token from a trusted identity provider \
               (issuer, audience, keys from its JWKS). Agents are authenticated by a private_key_jwt \
               client assertion signed with a registered key, single-use and short-lived (or a \
               SPIFFE or workload identity); a replayed assertion is refused. Failures are \
               audited.",
        relies_on: &[
            "config.trusted_idps",
            "dev",
            "agents.usable_keys",
            "agents.keys_without_expiry",
            "activity.client_auth_failures",
        ],
    },
    Control {
        id: "owasp-llm06-2025",
        framework: Framework::OwaspLlm,
        reference: "LLM06:2025",
        title: "Excessive Agency",
        asks: "An LLM agent has no more functionality, permissions or autonomy than its task \
               needs, so a mistaken or manipulated model cannot do damaging things.",
        mandate_does: "Functionality and permissions: the agent's ceiling bounds every token, \
               intersected with the user's own rights, for one task and a few minutes. Autonomy: \
               in `observe` an agent only reads, in `draft` every write is held at the gateway \
               for a human's approval, in `execute` it writes within scope; going above its \
               `max_stage` needs an approval. Circuit breakers and issuance rate limits stop an \
               agent that acts too much too fast, and can suspend it. The gateway mediates every \
               call: the model decides nothing about access.",
        relies_on: &[
            "agents.broad_ceilings",
            "agents.execute_writers",
            "agents.by_max_stage",
            "config.gateway.breakers",
            "config.approvals.scopes",
            "config.issuance_per_user_per_minute",
            "config.issuance_per_agent_per_minute",
            "activity.approvals",
            "activity.breaker_trips",
        ],
    },
    Control {
        id: "eu-ai-act-art-12",
        framework: Framework::EuAiAct,
        reference: "Art. 12",
        title: "Record-keeping",
        asks: "A high-risk AI system records events (logs) automatically over its lifetime, \
               with enough traceability to spot risks, support post-market monitoring and \
               monitor its operation; deployers keep the logs at least six months (Art. 19, \
               26(6)).",
        mandate_does: "Logging is automatic and cannot be turned off: each decision is recorded \
               with time, user, agent chain, task, action, resource, decision, reason, deciding \
               policies and request id, in a hash chain. Tasks join the agent's own record \
               (triggering input, decision steps, flagged anomalies, outcome) to those events by \
               task id. Nothing is pruned unless a retention period is configured.",
        relies_on: &[
            "activity.events",
            "activity.first_event_time",
            "activity.decisions",
            "activity.decisions_without_task",
            "activity.by_kind",
            "integrity.verification",
            "config.audit_retention_days",
        ],
    },
];

// ---- evidence ----

/// Everything the assessment looks at, gathered from one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// When it was gathered (RFC 3339 UTC).
    pub generated_at: String,
    /// The issuer URL of the deployment.
    pub issuer: String,
    /// How many days the activity covers.
    pub window_days: u32,
    /// The start of the window (RFC 3339 UTC).
    pub since: String,
    /// A `--dev` deployment (built-in test IdP, demo world).
    pub dev: bool,
    /// Configuration.
    pub config: ConfigFacts,
    /// Registered agents.
    pub agents: AgentFacts,
    /// What the audit log shows over the window.
    pub activity: ActivityFacts,
    /// The audit log's integrity.
    pub integrity: IntegrityFacts,
    /// Recent audit lines (allowed and refused), in their one-line form.
    pub samples: Vec<String>,
}

/// Configuration facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFacts {
    /// Token lifetimes.
    pub tokens: TokenLifetimes,
    /// Most agents in a delegation chain.
    pub max_chain_depth: u64,
    /// Tokens per user per minute (0: no limit).
    pub issuance_per_user_per_minute: u32,
    /// Tokens per agent per minute (0: no limit).
    pub issuance_per_agent_per_minute: u32,
    /// Trusted identity providers configured (the `--dev` test IdP not counted).
    pub trusted_idps: u64,
    /// Cedar policies in force.
    pub policy_count: u64,
    /// Whether the last policy reload was refused (the previous set stays in force).
    pub policy_reload_failed: bool,
    /// Seconds between periodic audit checkpoints (0: off).
    pub audit_checkpoint_secs: u64,
    /// Days audit events are kept, if a retention period is configured (`None`: never pruned).
    pub audit_retention_days: Option<u64>,
    /// Human approvals.
    pub approvals: ApprovalConfigFacts,
    /// The gateway.
    pub gateway: GatewayFacts,
    /// Shared Signals streams (receivers told of revocations).
    pub ssf_streams: u64,
}

/// Token lifetimes, seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLifetimes {
    /// When none is requested.
    pub default_ttl: i64,
    /// Longest of any token.
    pub max_ttl: i64,
    /// Of `execute`-stage tokens holding a write scope.
    pub execute_write_ttl: i64,
    /// Longest at `observe`.
    pub observe_max_ttl: i64,
    /// Longest at `draft`.
    pub draft_max_ttl: i64,
    /// Longest at `execute`.
    pub execute_max_ttl: i64,
}

impl TokenLifetimes {
    /// The longest lifetime any token can have: the smaller of the global maximum and the
    /// largest stage maximum.
    pub fn longest(&self) -> i64 {
        let stage = self
            .observe_max_ttl
            .max(self.draft_max_ttl)
            .max(self.execute_max_ttl);
        self.max_ttl.min(stage)
    }
}

/// Approval configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalConfigFacts {
    /// Widening an agent's ceiling or raising its stage needs an approval.
    pub agent_changes: bool,
    /// Groups whose members may approve for every agent.
    pub approver_groups: u64,
    /// A token request above `max_stage` becomes an approval request instead of a refusal.
    pub escalation: bool,
    /// Scope patterns a token only gets once a human approves.
    pub scopes: Vec<String>,
    /// How long a request waits for a decision, seconds.
    pub ttl_secs: i64,
}

/// The gateway's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFacts {
    /// Upstream services.
    pub upstreams: u64,
    /// Upstreams whose credential comes from the sealed secret store.
    pub upstreams_with_secret: u64,
    /// REST routes.
    pub routes: u64,
    /// MCP servers.
    pub mcp_servers: u64,
    /// Circuit breakers.
    pub breakers: Vec<BreakerFact>,
    /// The routes are the `--dev` sample CRM's, not configured ones.
    pub dev_sample: bool,
}

impl GatewayFacts {
    /// Whether any route or MCP server is configured.
    pub fn has_routes(&self) -> bool {
        self.routes > 0 || self.mcp_servers > 0
    }
}

/// One circuit breaker rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerFact {
    /// Its id.
    pub id: String,
    /// The agent it counts, or `*` for every agent.
    pub agent: String,
    /// The scope pattern it counts.
    pub action: String,
}

/// An agent, as named in findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentRef {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

impl AgentRef {
    fn of(a: &Agent) -> AgentRef {
        AgentRef {
            id: a.id.as_str().to_owned(),
            name: a.name.clone(),
        }
    }

    /// `` `id` `` or `` `id` (`name`) `` when the name differs.
    pub fn label(&self) -> String {
        if self.name.is_empty() || self.name == self.id {
            quoted(&self.id)
        } else {
            format!("{} ({})", quoted(&self.id), quoted(&self.name))
        }
    }
}

/// Something about one agent: the patterns or keys concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFinding {
    /// The agent.
    pub agent: AgentRef,
    /// The scope patterns or key ids concerned.
    pub items: Vec<String>,
}

impl AgentFinding {
    fn label(&self) -> String {
        let items: Vec<String> = self.items.iter().map(|i| quoted(i)).collect();
        format!("{}: {}", self.agent.label(), items.join(", "))
    }
}

/// A public key registered on several agents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedKey {
    /// The agents that hold it.
    pub agents: Vec<AgentRef>,
    /// The key ids it is registered under.
    pub kids: Vec<String>,
}

impl SharedKey {
    fn label(&self) -> String {
        let agents: Vec<String> = self.agents.iter().map(AgentRef::label).collect();
        let kids: Vec<String> = self.kids.iter().map(|k| quoted(k)).collect();
        format!("key {} on {}", kids.join(", "), agents.join(", "))
    }
}

/// Facts about the registered agents. Retired agents are counted but never found at fault:
/// they can no longer act.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    /// Registered agents.
    pub total: u64,
    /// Active.
    pub active: u64,
    /// Suspended.
    pub suspended: u64,
    /// Retired.
    pub retired: u64,
    /// Agents (not retired) by `max_stage`: `observe`, `draft`, `execute`.
    pub by_max_stage: BTreeMap<String, u64>,
    /// Keys that may prove an agent now (not revoked, not expired), on agents not retired.
    pub usable_keys: u64,
    /// Agents without an accountable owner.
    pub without_owner: Vec<AgentRef>,
    /// Agents whose ceiling grants any resource (`*:*`, `*:read`, `*.*:*` …): the patterns.
    pub broad_ceilings: Vec<AgentFinding>,
    /// Agents whose ceiling grants every action on a named resource (`tickets:*`): the
    /// patterns (broad ones are in `broad_ceilings`).
    pub wildcard_actions: Vec<AgentFinding>,
    /// Agents whose `max_stage` is `execute` and whose ceiling holds write patterns: those
    /// patterns.
    pub execute_writers: Vec<AgentFinding>,
    /// Usable keys that never expire: the key ids, per agent.
    pub keys_without_expiry: Vec<AgentFinding>,
    /// Usable public keys registered on more than one agent.
    pub shared_keys: Vec<SharedKey>,
}

impl AgentFacts {
    /// Gathers the facts from every registered agent at `now`, with the deployment's action
    /// catalog (which decides what writes).
    pub fn from_agents(agents: &[Agent], now: i64, catalog: &ActionCatalog) -> AgentFacts {
        let mut f = AgentFacts::default();
        // Public key material → (agent, kid) pairs that hold it.
        let mut by_key: BTreeMap<String, Vec<(AgentRef, String)>> = BTreeMap::new();
        for a in agents {
            f.total += 1;
            match a.status {
                AgentStatus::Active => f.active += 1,
                AgentStatus::Suspended => f.suspended += 1,
                AgentStatus::Retired => {
                    f.retired += 1;
                    continue;
                }
            }
            let me = AgentRef::of(a);
            *f.by_max_stage
                .entry(a.max_stage.as_str().to_owned())
                .or_default() += 1;
            if a.owner.trim().is_empty() {
                f.without_owner.push(me.clone());
            }
            let patterns: Vec<&ScopePattern> = a.ceiling.iter().collect();
            let pick = |keep: &dyn Fn(&ScopePattern) -> bool| -> Vec<String> {
                patterns
                    .iter()
                    .filter(|p| keep(p))
                    .map(|p| p.as_str().to_owned())
                    .collect()
            };
            let push = |list: &mut Vec<AgentFinding>, items: Vec<String>| {
                if !items.is_empty() {
                    list.push(AgentFinding {
                        agent: me.clone(),
                        items,
                    });
                }
            };
            push(&mut f.broad_ceilings, pick(&is_broad));
            push(
                &mut f.wildcard_actions,
                pick(&|p| action_of(p) == "*" && !is_broad(p)),
            );
            if a.max_stage == Stage::Execute {
                push(&mut f.execute_writers, pick(&|p| writes(p, catalog)));
            }
            let mut never_expire = Vec::new();
            for k in a.keys.iter().filter(|k| k.usable_at(now)) {
                f.usable_keys += 1;
                if k.expires_at.is_none() {
                    never_expire.push(k.kid.clone());
                }
                if let Some(material) = key_material(&k.jwk) {
                    by_key
                        .entry(material)
                        .or_default()
                        .push((me.clone(), k.kid.clone()));
                }
            }
            push(&mut f.keys_without_expiry, never_expire);
        }
        for holders in by_key.into_values() {
            let mut agents: Vec<AgentRef> = holders.iter().map(|(a, _)| a.clone()).collect();
            agents.sort();
            agents.dedup();
            if agents.len() > 1 {
                let mut kids: Vec<String> = holders.into_iter().map(|(_, k)| k).collect();
                kids.sort();
                kids.dedup();
                f.shared_keys.push(SharedKey { agents, kids });
            }
        }
        f
    }
}

/// The action part of a pattern (`read` of `crm.*:read`).
fn action_of(p: &ScopePattern) -> &str {
    p.as_str().rsplit_once(':').map(|(_, a)| a).unwrap_or("")
}

/// Whether a pattern grants any resource: every resource segment is `*`.
pub fn is_broad(p: &ScopePattern) -> bool {
    p.as_str()
        .split_once(':')
        .is_some_and(|(resource, _)| resource.split('.').all(|w| w == "*"))
}

/// Whether a pattern grants a write-class scope under `catalog`.
pub fn writes(p: &ScopePattern, catalog: &ActionCatalog) -> bool {
    let action = action_of(p);
    if action == "*" {
        return true;
    }
    match Scope::parse(p.as_str()) {
        Ok(scope) => catalog.class_of(&scope) == ActionClass::Write,
        Err(_) => {
            catalog
                .0
                .get(action)
                .copied()
                .unwrap_or_else(|| ActionClass::of_action(action))
                == ActionClass::Write
        }
    }
}

/// The public key material of a JWK (the RFC 7638 thumbprint members), to tell whether two
/// registered keys are the same key; `None` when it has none of them.
fn key_material(jwk: &serde_json::Value) -> Option<String> {
    let field = |k: &str| jwk.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let parts = ["x", "y", "n", "e"].map(field);
    if parts.iter().all(|p| p.is_empty()) {
        return None;
    }
    Some(format!(
        "{}|{}|{}",
        field("kty"),
        field("crv"),
        parts.join("|")
    ))
}

/// Audit events of one kind, decision and refusal code over the window (an aggregate read of
/// the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCount {
    /// The kind, e.g. `token.exchange`.
    pub kind: String,
    /// `allow`, `deny` or `info`.
    pub decision: String,
    /// For refusals whose reason starts with a code (`invalid_scope: …`), the code.
    pub code: Option<String>,
    /// How many.
    pub count: u64,
    /// How many name a task.
    pub with_task: u64,
    /// How many name a user or at least one agent.
    pub with_principal: u64,
}

/// The audit log over a window, aggregated by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCounts {
    /// Events by kind, decision and refusal code.
    pub groups: Vec<EventCount>,
    /// Distinct users named by events of the window.
    pub distinct_users: u64,
    /// Distinct agents named in the chains of events of the window.
    pub distinct_agents: u64,
    /// The time of the first event of the whole log.
    pub first_time: Option<String>,
    /// The highest `seq` of the whole log (0 when empty).
    pub last_seq: i64,
    /// Signed checkpoints stored.
    pub checkpoints: u64,
    /// The latest one stored (its signature is not checked here).
    pub latest_checkpoint: Option<CheckpointFact>,
}

/// Approvals of one kind and status created in the window (an aggregate read of the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalCount {
    /// `escalation`, `held_write` or `agent_change`.
    pub kind: String,
    /// `pending`, `expired` (pending past its expiry), `approved` or `denied`.
    pub status: String,
    /// How many.
    pub count: u64,
}

/// Events of one kind over the window, by decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// The kind.
    pub kind: String,
    /// Allowed.
    pub allow: u64,
    /// Refused.
    pub deny: u64,
    /// Facts and changes.
    pub info: u64,
}

impl KindCount {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.allow + self.deny + self.info
    }
}

/// Approvals by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalTally {
    /// Waiting.
    pub pending: u64,
    /// Undecided past their expiry (denials).
    pub expired: u64,
    /// Approved.
    pub approved: u64,
    /// Denied.
    pub denied: u64,
}

impl ApprovalTally {
    fn add(&mut self, status: &str, n: u64) {
        match status {
            "pending" => self.pending += n,
            "expired" => self.expired += n,
            "approved" => self.approved += n,
            "denied" => self.denied += n,
            _ => {}
        }
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.pending + self.expired + self.approved + self.denied
    }

    fn line(&self) -> String {
        format!(
            "{} (approved {}, denied {}, pending {}, expired {})",
            self.total(),
            self.approved,
            self.denied,
            self.pending,
            self.expired
        )
    }
}

/// What the audit log shows over the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityFacts {
    /// Events recorded.
    pub events: u64,
    /// Allowed.
    pub allowed: u64,
    /// Refused.
    pub denials: u64,
    /// Facts and changes.
    pub info: u64,
    /// Events by kind.
    pub by_kind: Vec<KindCount>,
    /// Refusals by code (`invalid_scope`, `invalid_client`, …).
    pub denials_by_code: BTreeMap<String, u64>,
    /// Tokens issued (allowed token exchanges, client credentials and CIBA grants).
    pub tokens_issued: u64,
    /// Token requests refused.
    pub token_denials: u64,
    /// Refusals because the client (agent) did not authenticate (`invalid_client`).
    pub client_auth_failures: u64,
    /// Gateway requests allowed.
    pub gateway_allowed: u64,
    /// Gateway requests refused.
    pub gateway_denied: u64,
    /// Circuit breaker trips.
    pub breaker_trips: u64,
    /// Revocations recorded.
    pub revocations: u64,
    /// Revocations ever recorded (the revocation feed's head).
    pub revocations_total: i64,
    /// Allowed decisions: tokens issued and gateway requests allowed.
    pub decisions: u64,
    /// Allowed decisions that name neither a user nor an agent.
    pub decisions_without_principal: u64,
    /// Allowed decisions without a task id.
    pub decisions_without_task: u64,
    /// Distinct users named.
    pub distinct_users: u64,
    /// Distinct agents named.
    pub distinct_agents: u64,
    /// Approvals created in the window, by kind (`escalation`, `held_write`, `agent_change`).
    pub approvals: BTreeMap<String, ApprovalTally>,
    /// The time of the first event of the whole log.
    pub first_event_time: Option<String>,
    /// Events in the whole log.
    pub total_events: i64,
}

impl ActivityFacts {
    /// Sums the store's aggregates into facts; `revocations_total` is the revocation feed's
    /// head.
    pub fn from_counts(
        audit: &AuditCounts,
        approvals: &[ApprovalCount],
        revocations_total: i64,
    ) -> ActivityFacts {
        let mut f = ActivityFacts {
            distinct_users: audit.distinct_users,
            distinct_agents: audit.distinct_agents,
            first_event_time: audit.first_time.clone(),
            total_events: audit.last_seq,
            revocations_total,
            ..ActivityFacts::default()
        };
        let mut kinds: BTreeMap<&str, KindCount> = BTreeMap::new();
        for g in &audit.groups {
            f.events += g.count;
            let k = kinds.entry(g.kind.as_str()).or_insert_with(|| KindCount {
                kind: g.kind.clone(),
                ..KindCount::default()
            });
            let issuance = ISSUANCE_KINDS.contains(&g.kind.as_str());
            let gateway = g.kind == GATEWAY_KIND;
            match g.decision.as_str() {
                "allow" => {
                    f.allowed += g.count;
                    k.allow += g.count;
                    if issuance {
                        f.tokens_issued += g.count;
                    }
                    if gateway {
                        f.gateway_allowed += g.count;
                    }
                    if issuance || gateway {
                        f.decisions += g.count;
                        f.decisions_without_principal += g.count.saturating_sub(g.with_principal);
                        f.decisions_without_task += g.count.saturating_sub(g.with_task);
                    }
                }
                "deny" => {
                    f.denials += g.count;
                    k.deny += g.count;
                    if g.kind.starts_with("token.") {
                        f.token_denials += g.count;
                    }
                    if gateway {
                        f.gateway_denied += g.count;
                    }
                    if let Some(code) = &g.code {
                        *f.denials_by_code.entry(code.clone()).or_default() += g.count;
                        if code == "invalid_client" {
                            f.client_auth_failures += g.count;
                        }
                    }
                }
                _ => {
                    f.info += g.count;
                    k.info += g.count;
                }
            }
            if g.kind == BREAKER_KIND {
                f.breaker_trips += g.count;
            }
            if g.kind == "revocation" {
                f.revocations += g.count;
            }
        }
        f.by_kind = kinds.into_values().collect();
        for a in approvals {
            f.approvals
                .entry(a.kind.clone())
                .or_default()
                .add(&a.status, a.count);
        }
        f
    }

    /// Events of `kind` in the window.
    pub fn count_of(&self, kind: &str) -> u64 {
        self.by_kind
            .iter()
            .find(|k| k.kind == kind)
            .map(KindCount::total)
            .unwrap_or(0)
    }

    fn approvals_of(&self, kind: &str) -> ApprovalTally {
        self.approvals.get(kind).cloned().unwrap_or_default()
    }
}

/// The audit log's integrity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityFacts {
    /// The chain verification, unless it was skipped.
    pub verification: Option<ChainCheck>,
    /// Signed checkpoints stored.
    pub checkpoints: u64,
    /// The latest one.
    pub latest_checkpoint: Option<CheckpointFact>,
}

/// The outcome of walking the hash chain and comparing it with the checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    /// The chain holds and no checkpoint contradicts it.
    pub ok: bool,
    /// Events checked.
    pub checked: u64,
    /// The head hash (the last good one when broken).
    pub head: String,
    /// The first break: its `seq` and what is wrong.
    pub first_break: Option<String>,
    /// What the checkpoints show to be wrong.
    pub checkpoint_findings: Vec<String>,
}

/// A signed checkpoint of the chain head.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFact {
    /// The checkpointed `seq`.
    pub seq: i64,
    /// When it was signed.
    pub time: String,
}

// ---- assessment ----

/// How well a control is met by this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The evidence shows what the control asks.
    Met,
    /// Mostly, with weaknesses to fix.
    Partial,
    /// Something the control asks is missing.
    Gap,
}

impl Status {
    /// `met`, `partial` or `gap`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Partial => "partial",
            Status::Gap => "gap",
        }
    }
}

/// One weakness and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Whether it makes the control `partial` or a `gap`.
    pub severity: Status,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

/// The assessment of one control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlResult {
    /// The control.
    #[serde(flatten)]
    pub control: &'static Control,
    /// The outcome: the worst severity among the gaps, `met` without any.
    pub status: Status,
    /// The evidence, one line each.
    pub evidence: Vec<String>,
    /// What keeps it from `met`, and the fixes.
    pub gaps: Vec<Gap>,
}

/// `` `value` ``, with any backtick inside replaced by `'` and line breaks and other control
/// characters by spaces, so that the value reads as one code span.
pub fn quoted(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| match c {
            '`' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("`{clean}`")
}

/// Up to [`LIST_LIMIT`] labels joined, then how many more.
fn list(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(LIST_LIMIT).map(String::as_str).collect();
    let mut s = shown.join("; ");
    if items.len() > LIST_LIMIT {
        s.push_str(&format!("; and {} more", items.len() - LIST_LIMIT));
    }
    s
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Builds one result: gaps decide the status.
struct Builder {
    evidence: Vec<String>,
    gaps: Vec<Gap>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            evidence: Vec::new(),
            gaps: Vec::new(),
        }
    }

    fn line(&mut self, s: impl Into<String>) {
        self.evidence.push(s.into());
    }

    fn gap(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.flag(Status::Gap, problem, fix);
    }

    fn partial(&mut self, problem: impl Into<String>, fix: impl Into<String>) {
        self.flag(Status::Partial, problem, fix);
    }

    fn flag(&mut self, severity: Status, problem: impl Into<String>, fix: impl Into<String>) {
        self.gaps.push(Gap {
            severity,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn finish(self, control: &'static Control) -> ControlResult {
        let status = self
            .gaps
            .iter()
            .map(|g| g.severity)
            .max()
            .unwrap_or(Status::Met);
        ControlResult {
            control,
            status,
            evidence: self.evidence,
            gaps: self.gaps,
        }
    }
}

/// Assesses every control of [`CONTROLS`] against `e`, in catalogue order.
pub fn assess(e: &Evidence) -> Vec<ControlResult> {
    CONTROLS
        .iter()
        .map(|c| {
            let b = match c.id {
                "soc2-cc6.1" => cc6_1(e),
                "soc2-cc6.2" => cc6_2(e),
                "soc2-cc6.3" => cc6_3(e),
                "hipaa-164.312-a-1" => access_control(e),
                "hipaa-164.312-a-2-i" => unique_identification(e),
                "hipaa-164.312-b" => audit_controls(e),
                "hipaa-164.312-d" => authentication(e),
                "owasp-llm06-2025" => excessive_agency(e),
                "eu-ai-act-art-12" => record_keeping(e),
                _ => Builder::new(),
            };
            b.finish(c)
        })
        .collect()
}

/// How many controls have each status: `(met, partial, gap)`.
pub fn summary(results: &[ControlResult]) -> (usize, usize, usize) {
    let n = |s: Status| results.iter().filter(|r| r.status == s).count();
    (n(Status::Met), n(Status::Partial), n(Status::Gap))
}

// Shared lines and rules.

fn policy_line(b: &mut Builder, e: &Evidence) {
    let mut s = format!(
        "policies in force: {}",
        plural(e.config.policy_count, "Cedar policy", "Cedar policies")
    );
    if e.config.policy_reload_failed {
        s.push_str(" (the last reload was refused; the previous set stays in force)");
    }
    b.line(s);
}

fn no_policy_gap(b: &mut Builder, e: &Evidence) {
    if e.config.policy_count == 0 {
        b.gap(
            "no Cedar policy is loaded, so no access is granted by rule (every scope is refused)",
            "write policies in `policies_dir` or the `[rights]` table of `mandate.toml` \
             (docs/policy.md), then `mandate policy reload`",
        );
    }
}

fn idp_line(b: &mut Builder, e: &Evidence) {
    let mut s = format!(
        "trusted identity providers: {} configured",
        e.config.trusted_idps
    );
    if e.dev {
        s.push_str(", plus the built-in `--dev` test IdP (not for production)");
    }
    b.line(s);
}

fn no_idp_gap(b: &mut Builder, e: &Evidence) {
    if e.config.trusted_idps == 0 && !e.dev {
        b.gap(
            "no identity provider is trusted, so no user can be authenticated",
            "add an `[[issuers]]` entry for your identity provider (docs/configuration.md)",
        );
    }
}

fn agents_line(b: &mut Builder, e: &Evidence) {
    let a = &e.agents;
    b.line(format!(
        "agents registered: {} ({} active, {} suspended, {} retired)",
        a.total, a.active, a.suspended, a.retired
    ));
}

fn token_lines(b: &mut Builder, e: &Evidence) {
    let t = &e.config.tokens;
    b.line(format!(
        "token lifetimes: {}s by default, at most {}s; per stage at most observe {}s, draft {}s, \
         execute {}s; execute-stage writes {}s",
        t.default_ttl,
        t.max_ttl,
        t.observe_max_ttl,
        t.draft_max_ttl,
        t.execute_max_ttl,
        t.execute_write_ttl
    ));
}

fn issuance_line(b: &mut Builder, e: &Evidence) {
    b.line(format!(
        "tokens issued in the window: {}; token requests refused: {}",
        e.activity.tokens_issued, e.activity.token_denials
    ));
}

fn gateway_line(b: &mut Builder, e: &Evidence) {
    let g = &e.config.gateway;
    if g.dev_sample {
        b.line(format!(
            "gateway: the `--dev` sample CRM ({}, {}); {}",
            plural(g.routes, "route", "routes"),
            plural(g.mcp_servers, "MCP server", "MCP servers"),
            plural(
                g.breakers.len() as u64,
                "circuit breaker",
                "circuit breakers"
            )
        ));
    } else if g.upstreams == 0 && !g.has_routes() {
        b.line("gateway: no upstream or route configured in `[gateway]`");
    } else {
        b.line(format!(
            "gateway: {} ({} with a sealed secret), {}, {}; {}",
            plural(g.upstreams, "upstream", "upstreams"),
            g.upstreams_with_secret,
            plural(g.routes, "route", "routes"),
            plural(g.mcp_servers, "MCP server", "MCP servers"),
            plural(
                g.breakers.len() as u64,
                "circuit breaker",
                "circuit breakers"
            )
        ));
    }
}

fn revocation_line(b: &mut Builder, e: &Evidence) {
    b.line(format!(
        "revocations in the window: {} ({} since the first)",
        e.activity.revocations, e.activity.revocations_total
    ));
}

fn chain_line(b: &mut Builder, e: &Evidence) {
    match &e.integrity.verification {
        None => b.line("hash chain: not verified for this report (`verify=false`)"),
        Some(v) if v.ok => b.line(format!(
            "hash chain: {} verified, head {}, and no checkpoint contradicts it",
            plural(v.checked, "event", "events"),
            quoted(v.head.get(..16).unwrap_or(&v.head))
        )),
        Some(v) => {
            let mut s = format!(
                "hash chain: DOES NOT VERIFY ({} checked)",
                plural(v.checked, "event", "events")
            );
            if let Some(brk) = &v.first_break {
                s.push_str(&format!("; first break: {}", quoted(brk)));
            }
            for f in &v.checkpoint_findings {
                s.push_str(&format!("; {}", quoted(f)));
            }
            b.line(s);
        }
    }
}

fn broken_chain_gap(b: &mut Builder, e: &Evidence) {
    if let Some(v) = &e.integrity.verification
        && !v.ok
    {
        b.gap(
            "the audit hash chain does not verify: events were altered, removed or cut off",
            "run `mandate audit verify --data DIR` to locate the change, restore the log from a \
             backup and investigate who had write access to the database",
        );
    }
}

fn broad_ceiling_gap(b: &mut Builder, e: &Evidence) {
    let broad = &e.agents.broad_ceilings;
    if !broad.is_empty() {
        let labels: Vec<String> = broad.iter().map(AgentFinding::label).collect();
        b.gap(
            format!(
                "{} a ceiling that grants any resource: {}",
                plural(broad.len() as u64, "agent has", "agents have"),
                list(&labels)
            ),
            "replace wildcard-everything patterns with the scopes the agent needs \
             (`mandate agents update ID --ceiling …`)",
        );
    }
}

fn count_by_kind(e: &Evidence, kinds: &[(&str, &str)]) -> String {
    kinds
        .iter()
        .map(|(kind, label)| format!("{label} {}", e.activity.count_of(kind)))
        .collect::<Vec<_>>()
        .join(", ")
}

// The controls.

fn cc6_1(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    policy_line(&mut b, e);
    idp_line(&mut b, e);
    token_lines(&mut b, e);
    issuance_line(&mut b, e);
    agents_line(&mut b, e);
    gateway_line(&mut b, e);
    no_policy_gap(&mut b, e);
    no_idp_gap(&mut b, e);
    if e.config.policy_reload_failed {
        b.partial(
            "the last policy reload was refused; the policies in force are not those on disk",
            "fix the errors `mandate policy show` names, then `mandate policy reload`",
        );
    }
    let longest = e.config.tokens.longest();
    if longest > LONG_TOKEN_SECS {
        b.partial(
            format!("tokens may live up to {longest}s, more than an hour"),
            format!(
                "lower `tokens.max_ttl` and `tokens.stage_max_ttl.*` to {LONG_TOKEN_SECS} or less"
            ),
        );
    }
    b
}

fn cc6_2(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let a = &e.agents;
    agents_line(&mut b, e);
    if a.without_owner.is_empty() {
        b.line("agents without an accountable owner: 0");
    } else {
        let labels: Vec<String> = a.without_owner.iter().map(AgentRef::label).collect();
        b.line(format!(
            "agents without an accountable owner: {} ({})",
            a.without_owner.len(),
            list(&labels)
        ));
    }
    b.line(format!(
        "agent lifecycle events in the window: {}",
        count_by_kind(
            e,
            &[
                ("agent.register", "registered"),
                ("agent.update", "changed"),
                ("agent.suspend", "suspended"),
                ("agent.resume", "resumed"),
                ("agent.retire", "retired"),
                ("agent.key.add", "keys added"),
                ("agent.key.remove", "keys removed"),
            ]
        )
    ));
    b.line(format!(
        "widening agent changes need a human's approval: {}",
        yes_no(e.config.approvals.agent_changes)
    ));
    b.line(format!(
        "agent changes held for approval in the window: {}",
        e.activity.approvals_of("agent_change").line()
    ));
    revocation_line(&mut b, e);
    b.line(format!(
        "Shared Signals streams telling receivers of revocations: {}",
        e.config.ssf_streams
    ));
    if !a.without_owner.is_empty() {
        b.gap(
            format!(
                "{} no accountable owner",
                plural(a.without_owner.len() as u64, "agent has", "agents have")
            ),
            "name an owner for each (`mandate agents update ID --owner SUB`), or retire the agent",
        );
    }
    if !e.config.approvals.agent_changes {
        b.partial(
            "widening an agent's ceiling or raising its stage takes effect without anyone's \
             approval (`approvals.agent_changes` is off)",
            "set `approvals.agent_changes = true` so the agent's owner or an approver decides",
        );
    }
    b
}

fn cc6_3(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let a = &e.agents;
    b.line(format!(
        "ceilings of the {} agents not retired: {} any resource; {} a wildcard action",
        a.active + a.suspended,
        plural(a.broad_ceilings.len() as u64, "grants", "grant"),
        plural(a.wildcard_actions.len() as u64, "uses", "use")
    ));
    b.line(format!(
        "delegation chains: at most {} agents",
        e.config.max_chain_depth
    ));
    let codes: Vec<String> = e
        .activity
        .denials_by_code
        .iter()
        .map(|(c, n)| format!("{} {n}", quoted(c)))
        .collect();
    if codes.is_empty() {
        b.line(format!(
            "requests refused in the window: {}",
            e.activity.denials
        ));
    } else {
        b.line(format!(
            "requests refused in the window: {} (by reason: {})",
            e.activity.denials,
            codes.join(", ")
        ));
    }
    let mut decided = ApprovalTally::default();
    for t in e.activity.approvals.values() {
        decided.approved += t.approved;
        decided.denied += t.denied;
    }
    b.line(format!(
        "approvals decided in the window: approved {}, denied {} (by the agent's owner or an \
         approver, never the user they were asked for)",
        decided.approved, decided.denied
    ));
    broad_ceiling_gap(&mut b, e);
    if !a.wildcard_actions.is_empty() {
        let labels: Vec<String> = a.wildcard_actions.iter().map(AgentFinding::label).collect();
        b.partial(
            format!(
                "{} every action on a resource, writes included: {}",
                plural(
                    a.wildcard_actions.len() as u64,
                    "agent's ceiling grants",
                    "agents' ceilings grant"
                ),
                list(&labels)
            ),
            "list the actions the agent needs (e.g. `tickets:read tickets:create` instead of \
             `tickets:*`)",
        );
    }
    b
}

fn access_control(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    policy_line(&mut b, e);
    gateway_line(&mut b, e);
    b.line(format!(
        "gateway decisions in the window: {} allowed, {} refused; circuit breaker trips: {}",
        e.activity.gateway_allowed, e.activity.gateway_denied, e.activity.breaker_trips
    ));
    issuance_line(&mut b, e);
    revocation_line(&mut b, e);
    b.line(format!(
        "longest token lifetime: {}s",
        e.config.tokens.longest()
    ));
    no_policy_gap(&mut b, e);
    let g = &e.config.gateway;
    let enforced = g.has_routes() || e.activity.gateway_allowed + e.activity.gateway_denied > 0;
    if !enforced {
        b.partial(
            "no gateway enforces access in front of the tools: each service must verify \
             tokens and scopes itself",
            "put the tools behind the gateway (`[gateway]` routes and MCP servers, \
             docs/gateway.md), or verify tokens with `mandate-verify` in each service",
        );
    }
    b
}

fn unique_identification(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let act = &e.activity;
    b.line(format!(
        "allowed decisions in the window (tokens issued, gateway requests): {}; naming a user \
         or an agent: {}",
        act.decisions,
        act.decisions - act.decisions_without_principal.min(act.decisions)
    ));
    b.line(format!(
        "distinct users named in the window: {}; distinct agents: {}",
        act.distinct_users, act.distinct_agents
    ));
    b.line(format!(
        "keys registered on more than one agent: {}",
        e.agents.shared_keys.len()
    ));
    if !e.samples.is_empty() {
        b.line("each sample audit line below names the user, the agent chain and the task");
    }
    if !e.agents.shared_keys.is_empty() {
        let labels: Vec<String> = e.agents.shared_keys.iter().map(SharedKey::label).collect();
        b.gap(
            format!(
                "the same key proves several agents, so their actions cannot be told apart: {}",
                list(&labels)
            ),
            "give each agent its own key pair, then remove the shared key \
             (`mandate agents remove-key ID KID`)",
        );
    }
    if act.decisions_without_principal > 0 {
        b.gap(
            format!(
                "{} name neither a user nor an agent",
                plural(
                    act.decisions_without_principal,
                    "allowed decision",
                    "allowed decisions"
                )
            ),
            "find them with `mandate audit query --decision allow` and report the defect: \
             every token names its subject by construction",
        );
    }
    b
}

fn audit_controls(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let act = &e.activity;
    b.line(format!(
        "events in the window: {} ({} allowed, {} refused, {} facts and changes)",
        act.events, act.allowed, act.denials, act.info
    ));
    if !act.by_kind.is_empty() {
        let kinds: Vec<String> = act
            .by_kind
            .iter()
            .map(|k| format!("{} {}", quoted(&k.kind), k.total()))
            .collect();
        b.line(format!("events by kind: {}", kinds.join(", ")));
    }
    match &act.first_event_time {
        Some(t) => b.line(format!(
            "the log holds {} since {}",
            plural(act.total_events.max(0) as u64, "event", "events"),
            quoted(t)
        )),
        None => b.line("the log is empty"),
    }
    chain_line(&mut b, e);
    let i = &e.integrity;
    match &i.latest_checkpoint {
        Some(cp) => b.line(format!(
            "signed checkpoints: {}; the latest covers seq {} (signed {})",
            i.checkpoints,
            cp.seq,
            quoted(&cp.time)
        )),
        None => b.line("signed checkpoints: none yet"),
    }
    if e.config.audit_checkpoint_secs == 0 {
        b.line("periodic checkpoints: off");
    } else {
        b.line(format!(
            "periodic checkpoints: every {}s when the log moved",
            e.config.audit_checkpoint_secs
        ));
    }
    broken_chain_gap(&mut b, e);
    if i.verification.is_none() {
        b.partial(
            "the hash chain was not verified for this report",
            "ask again without `verify=false` (`--no-verify`), or run `mandate audit verify`",
        );
    }
    if i.checkpoints == 0 {
        b.partial(
            "no signed checkpoint of the chain head exists yet, so a cut tail would go unnoticed",
            "sign one now with `POST /v1/audit/checkpoint`; the server signs one every \
             `audit_checkpoint_secs` and at shutdown",
        );
    }
    if e.config.audit_checkpoint_secs == 0 {
        b.partial(
            "periodic checkpoints are off (`audit_checkpoint_secs = 0`)",
            "set `audit_checkpoint_secs` (default 60)",
        );
    }
    b
}

fn authentication(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    idp_line(&mut b, e);
    b.line(format!(
        "agent keys that may prove an agent now: {}; without an expiry: {}",
        e.agents.usable_keys,
        e.agents
            .keys_without_expiry
            .iter()
            .map(|f| f.items.len())
            .sum::<usize>()
    ));
    b.line("agents prove themselves with signed, single-use client assertions; no static secrets");
    b.line(format!(
        "client authentication failures in the window (`invalid_client`): {}",
        e.activity.client_auth_failures
    ));
    no_idp_gap(&mut b, e);
    let stale = &e.agents.keys_without_expiry;
    if !stale.is_empty() {
        let labels: Vec<String> = stale.iter().map(AgentFinding::label).collect();
        b.partial(
            format!(
                "{} that never expire: {}",
                plural(
                    stale.len() as u64,
                    "agent proves itself with keys",
                    "agents prove themselves with keys"
                ),
                list(&labels)
            ),
            "register keys with an expiry (`mandate agents add-key ID --jwk FILE --expires-at \
             EPOCH`) and remove the old ones, or use workload identities",
        );
    }
    b
}

fn excessive_agency(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let a = &e.agents;
    let stage = |s: &str| a.by_max_stage.get(s).copied().unwrap_or(0);
    b.line(format!(
        "agents by max stage: observe {}, draft {} (writes held for approval), execute {}",
        stage("observe"),
        stage("draft"),
        stage("execute")
    ));
    b.line(format!(
        "ceilings that grant any resource: {}",
        a.broad_ceilings.len()
    ));
    let breakers = &e.config.gateway.breakers;
    if breakers.is_empty() {
        b.line("circuit breakers: none");
    } else {
        let names: Vec<String> = breakers
            .iter()
            .map(|r| {
                format!(
                    "{} on {} {}",
                    quoted(&r.id),
                    quoted(&r.agent),
                    quoted(&r.action)
                )
            })
            .collect();
        b.line(format!(
            "circuit breakers: {} ({})",
            breakers.len(),
            list(&names)
        ));
    }
    let rate = |n: u32| {
        if n == 0 {
            "no limit".to_owned()
        } else {
            format!("{n} per minute")
        }
    };
    b.line(format!(
        "issuance rate limits: per user {}, per agent {}",
        rate(e.config.issuance_per_user_per_minute),
        rate(e.config.issuance_per_agent_per_minute)
    ));
    let scopes = &e.config.approvals.scopes;
    if scopes.is_empty() {
        b.line("scopes that always need a human's approval: none");
    } else {
        let s: Vec<String> = scopes.iter().map(|s| quoted(s)).collect();
        b.line(format!(
            "scopes that always need a human's approval: {}",
            list(&s)
        ));
    }
    b.line(format!(
        "writes held for approval in the window: {}",
        e.activity.approvals_of("held_write").line()
    ));
    b.line(format!(
        "stage escalations asked in the window: {}",
        e.activity.approvals_of("escalation").line()
    ));
    b.line(format!(
        "circuit breaker trips in the window: {}",
        e.activity.breaker_trips
    ));
    broad_ceiling_gap(&mut b, e);
    let ungated = ungated_writers(e);
    if !ungated.is_empty() {
        let labels: Vec<String> = ungated.iter().map(AgentFinding::label).collect();
        b.partial(
            format!(
                "{} at `execute` stage with neither a human's approval nor a circuit breaker: {}",
                plural(ungated.len() as u64, "agent may write", "agents may write"),
                list(&labels)
            ),
            "lower their `max_stage` to `draft` (writes are held for approval), list those \
             scopes in `approvals.scopes`, or add a `[[gateway.breakers]]` rule for them",
        );
    }
    b
}

/// Agents that may write at `execute` stage with no approval and no breaker: the write
/// patterns that no approval scope covers, for agents that no breaker counts.
pub fn ungated_writers(e: &Evidence) -> Vec<AgentFinding> {
    let approval: Vec<ScopePattern> = e
        .config
        .approvals
        .scopes
        .iter()
        .filter_map(|s| ScopePattern::parse(s).ok())
        .collect();
    let braked = |id: &str| {
        e.config
            .gateway
            .breakers
            .iter()
            .any(|r| r.agent == "*" || r.agent == id)
    };
    e.agents
        .execute_writers
        .iter()
        .filter(|f| !braked(&f.agent.id))
        .filter_map(|f| {
            let items: Vec<String> = f
                .items
                .iter()
                .filter(|p| match ScopePattern::parse(p) {
                    Ok(p) => !approval.iter().any(|q| p.is_subset_of(q)),
                    Err(_) => true,
                })
                .cloned()
                .collect();
            (!items.is_empty()).then(|| AgentFinding {
                agent: f.agent.clone(),
                items,
            })
        })
        .collect()
}

fn record_keeping(e: &Evidence) -> Builder {
    let mut b = Builder::new();
    let act = &e.activity;
    b.line(format!(
        "events recorded automatically in the window: {}",
        act.events
    ));
    match &act.first_event_time {
        Some(t) => b.line(format!(
            "the log covers the deployment since {} ({})",
            quoted(t),
            plural(act.total_events.max(0) as u64, "event", "events")
        )),
        None => b.line("the log is empty"),
    }
    b.line(format!(
        "allowed decisions in the window: {}; with a task id joining them to the agent's \
         record: {}",
        act.decisions,
        act.decisions - act.decisions_without_task.min(act.decisions)
    ));
    b.line(format!(
        "tasks in the window: {}",
        count_by_kind(
            e,
            &[
                ("task.create", "created"),
                ("task.step", "agent steps recorded"),
                ("task.complete", "completed"),
            ]
        )
    ));
    match e.config.audit_retention_days {
        None => b.line("retention: audit events are never pruned"),
        Some(d) => b.line(format!("retention: audit events are kept {d} days")),
    }
    chain_line(&mut b, e);
    broken_chain_gap(&mut b, e);
    if let Some(d) = e.config.audit_retention_days
        && d < MIN_RETENTION_DAYS
    {
        b.gap(
            format!(
                "audit events are kept only {d} days, less than the six months deployers must \
                 keep logs"
            ),
            format!(
                "keep them at least {MIN_RETENTION_DAYS} days, or export them \
                 (`mandate audit export`) to storage that does"
            ),
        );
    }
    if act.decisions_without_task > 0 {
        b.partial(
            format!(
                "{} no task id and cannot be joined to the agent's record",
                plural(
                    act.decisions_without_task,
                    "allowed decision carries",
                    "allowed decisions carry"
                )
            ),
            "find them with `mandate audit query --decision allow` and report the defect: \
             every token is bound to a task by construction",
        );
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;
    use crate::agent::AgentKey;
    use crate::ids::AgentId;
    use crate::scope::PatternSet;

    /// A deployment that meets every control.
    fn good() -> Evidence {
        Evidence {
            generated_at: "2026-03-14T00:00:00.000Z".into(),
            issuer: "https://mandate.example".into(),
            window_days: 30,
            since: "2026-02-12T00:00:00.000Z".into(),
            dev: false,
            config: ConfigFacts {
                tokens: TokenLifetimes {
                    default_ttl: 300,
                    max_ttl: 3600,
                    execute_write_ttl: 60,
                    observe_max_ttl: 3600,
                    draft_max_ttl: 900,
                    execute_max_ttl: 300,
                },
                max_chain_depth: 4,
                trusted_idps: 1,
                policy_count: 5,
                audit_checkpoint_secs: 60,
                approvals: ApprovalConfigFacts {
                    agent_changes: true,
                    ..ApprovalConfigFacts::default()
                },
                gateway: GatewayFacts {
                    upstreams: 1,
                    upstreams_with_secret: 1,
                    routes: 4,
                    ..GatewayFacts::default()
                },
                ..ConfigFacts::default()
            },
            agents: AgentFacts {
                total: 1,
                active: 1,
                usable_keys: 1,
                ..AgentFacts::default()
            },
            activity: ActivityFacts {
                events: 10,
                decisions: 4,
                tokens_issued: 2,
                gateway_allowed: 2,
                first_event_time: Some("2026-01-01T00:00:00.000Z".into()),
                total_events: 40,
                ..ActivityFacts::default()
            },
            integrity: IntegrityFacts {
                verification: Some(ChainCheck {
                    ok: true,
                    checked: 40,
                    head: "ab".repeat(32),
                    ..ChainCheck::default()
                }),
                checkpoints: 2,
                latest_checkpoint: Some(CheckpointFact {
                    seq: 40,
                    time: "2026-03-13T23:59:00.000Z".into(),
                }),
            },
            samples: vec![
                "2026-03-13T23:58:00.000Z user:alice via agent:a token.exchange x:read aud allow"
                    .into(),
            ],
        }
    }

    fn result(e: &Evidence, id: &str) -> ControlResult {
        assess(e).into_iter().find(|r| r.control.id == id).unwrap()
    }

    fn status(e: &Evidence, id: &str) -> Status {
        result(e, id).status
    }

    fn finding(id: &str, name: &str, items: &[&str]) -> AgentFinding {
        AgentFinding {
            agent: AgentRef {
                id: id.into(),
                name: name.into(),
            },
            items: items.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn the_catalogue_names_every_control_of_the_spec_once() {
        let refs: Vec<&str> = CONTROLS.iter().map(|c| c.reference).collect();
        assert_eq!(
            refs,
            [
                "CC6.1",
                "CC6.2",
                "CC6.3",
                "§164.312(a)(1)",
                "§164.312(a)(2)(i)",
                "§164.312(b)",
                "§164.312(d)",
                "LLM06:2025",
                "Art. 12"
            ]
        );
        let mut ids: Vec<&str> = CONTROLS.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CONTROLS.len());
        for c in CONTROLS {
            assert!(!c.relies_on.is_empty(), "{}", c.id);
            assert!(!c.asks.is_empty() && !c.mandate_does.is_empty(), "{}", c.id);
        }
    }

    #[test]
    fn a_good_deployment_meets_every_control_with_evidence() {
        let results = assess(&good());
        assert_eq!(results.len(), CONTROLS.len());
        for r in &results {
            assert_eq!(r.status, Status::Met, "{}: {:?}", r.control.id, r.gaps);
            assert!(r.gaps.is_empty());
            assert!(!r.evidence.is_empty(), "{}", r.control.id);
        }
        assert_eq!(summary(&results), (CONTROLS.len(), 0, 0));
    }

    #[test]
    fn cc6_1_needs_policies_and_an_identity_provider() {
        let mut e = good();
        e.config.policy_count = 0;
        assert_eq!(status(&e, "soc2-cc6.1"), Status::Gap);

        let mut e = good();
        e.config.trusted_idps = 0;
        assert_eq!(status(&e, "soc2-cc6.1"), Status::Gap);
        // The --dev test IdP authenticates users of a dev deployment.
        e.dev = true;
        assert_eq!(status(&e, "soc2-cc6.1"), Status::Met);
        let r = result(&e, "soc2-cc6.1");
        assert!(
            r.evidence.iter().any(|l| l.contains("`--dev` test IdP")),
            "{:?}",
            r.evidence
        );

        let mut e = good();
        e.config.policy_reload_failed = true;
        assert_eq!(status(&e, "soc2-cc6.1"), Status::Partial);

        let mut e = good();
        e.config.tokens.max_ttl = 86_400;
        e.config.tokens.observe_max_ttl = 86_400;
        let r = result(&e, "soc2-cc6.1");
        assert_eq!(r.status, Status::Partial);
        assert!(r.gaps[0].problem.contains("86400s"), "{:?}", r.gaps);
        // A long global maximum that every stage caps lower is not a long token.
        e.config.tokens.observe_max_ttl = 3600;
        assert_eq!(status(&e, "soc2-cc6.1"), Status::Met);
    }

    #[test]
    fn cc6_2_needs_owners_and_approved_widening() {
        let mut e = good();
        e.agents.without_owner = vec![AgentRef {
            id: "orphan".into(),
            name: "orphan".into(),
        }];
        let r = result(&e, "soc2-cc6.2");
        assert_eq!(r.status, Status::Gap);
        assert!(r.evidence.iter().any(|l| l.contains("`orphan`")));

        let mut e = good();
        e.config.approvals.agent_changes = false;
        let r = result(&e, "soc2-cc6.2");
        assert_eq!(r.status, Status::Partial);
        assert!(r.gaps[0].fix.contains("approvals.agent_changes"));
    }

    #[test]
    fn cc6_3_flags_broad_ceilings_and_wildcard_actions() {
        let mut e = good();
        e.agents.wildcard_actions = vec![finding("support", "Support", &["tickets:*"])];
        let r = result(&e, "soc2-cc6.3");
        assert_eq!(r.status, Status::Partial);
        assert!(
            r.gaps[0]
                .problem
                .contains("`support` (`Support`): `tickets:*`")
        );

        e.agents.broad_ceilings = vec![finding("root", "root", &["*:*"])];
        let r = result(&e, "soc2-cc6.3");
        assert_eq!(r.status, Status::Gap);
        assert_eq!(r.gaps.len(), 2);
    }

    #[test]
    fn access_control_needs_policies_and_enforcement_at_the_tools() {
        let mut e = good();
        e.config.gateway = GatewayFacts::default();
        assert_eq!(
            status(&e, "hipaa-164.312-a-1"),
            Status::Met,
            "requests went through"
        );
        e.activity.gateway_allowed = 0;
        assert_eq!(status(&e, "hipaa-164.312-a-1"), Status::Partial);
        e.config.gateway.dev_sample = true;
        e.config.gateway.routes = 4;
        assert_eq!(status(&e, "hipaa-164.312-a-1"), Status::Met);
        e.config.policy_count = 0;
        assert_eq!(status(&e, "hipaa-164.312-a-1"), Status::Gap);
    }

    #[test]
    fn unique_identification_refuses_shared_keys() {
        let mut e = good();
        e.agents.shared_keys = vec![SharedKey {
            agents: vec![
                AgentRef {
                    id: "a".into(),
                    name: "a".into(),
                },
                AgentRef {
                    id: "b".into(),
                    name: "B".into(),
                },
            ],
            kids: vec!["k1".into()],
        }];
        let r = result(&e, "hipaa-164.312-a-2-i");
        assert_eq!(r.status, Status::Gap);
        assert!(
            r.gaps[0].problem.contains("key `k1` on `a`, `b` (`B`)"),
            "{:?}",
            r.gaps
        );

        let mut e = good();
        e.activity.decisions_without_principal = 1;
        assert_eq!(status(&e, "hipaa-164.312-a-2-i"), Status::Gap);
    }

    #[test]
    fn audit_controls_need_a_verified_chain_and_checkpoints() {
        let mut e = good();
        e.integrity.checkpoints = 0;
        e.integrity.latest_checkpoint = None;
        assert_eq!(status(&e, "hipaa-164.312-b"), Status::Partial);

        let mut e = good();
        e.config.audit_checkpoint_secs = 0;
        assert_eq!(status(&e, "hipaa-164.312-b"), Status::Partial);

        let mut e = good();
        e.integrity.verification = None;
        let r = result(&e, "hipaa-164.312-b");
        assert_eq!(r.status, Status::Partial);
        assert!(r.evidence.iter().any(|l| l.contains("not verified")));

        let mut e = good();
        e.integrity.verification = Some(ChainCheck {
            ok: false,
            checked: 40,
            head: "cd".repeat(32),
            first_break: Some("seq 7: hash mismatch".into()),
            checkpoint_findings: Vec::new(),
        });
        let r = result(&e, "hipaa-164.312-b");
        assert_eq!(r.status, Status::Gap);
        assert!(
            r.evidence
                .iter()
                .any(|l| l.contains("`seq 7: hash mismatch`"))
        );
        // A broken chain is a broken record too.
        assert_eq!(status(&e, "eu-ai-act-art-12"), Status::Gap);
    }

    #[test]
    fn authentication_wants_an_idp_and_expiring_keys() {
        let mut e = good();
        e.config.trusted_idps = 0;
        assert_eq!(status(&e, "hipaa-164.312-d"), Status::Gap);

        let mut e = good();
        e.agents.keys_without_expiry = vec![finding("a", "a", &["a-k1"])];
        let r = result(&e, "hipaa-164.312-d");
        assert_eq!(r.status, Status::Partial);
        assert!(r.gaps[0].problem.contains("`a`: `a-k1`"), "{:?}", r.gaps);
        assert!(
            r.evidence
                .iter()
                .any(|l| l.contains("without an expiry: 1"))
        );
    }

    #[test]
    fn excessive_agency_wants_narrow_ceilings_and_gated_writes() {
        let mut e = good();
        e.agents.broad_ceilings = vec![finding("root", "root", &["*:*"])];
        assert_eq!(status(&e, "owasp-llm06-2025"), Status::Gap);

        let mut e = good();
        e.agents.execute_writers = vec![finding("payer", "payer", &["billing.payments:create"])];
        let r = result(&e, "owasp-llm06-2025");
        assert_eq!(r.status, Status::Partial);
        assert!(r.gaps[0].problem.contains("`billing.payments:create`"));

        // An approval scope that covers every write pattern gates them.
        e.config.approvals.scopes = vec!["billing.*:create".into()];
        assert_eq!(status(&e, "owasp-llm06-2025"), Status::Met);
        // One that covers only some leaves the others.
        e.agents.execute_writers = vec![finding(
            "payer",
            "payer",
            &["billing.payments:create", "email:send"],
        )];
        let r = result(&e, "owasp-llm06-2025");
        assert_eq!(r.status, Status::Partial);
        assert!(r.gaps[0].problem.contains("`email:send`"));
        assert!(!r.gaps[0].problem.contains("billing"));

        // A breaker on the agent, or on every agent, also gates it.
        for agent in ["payer", "*"] {
            let mut e = e.clone();
            e.config.gateway.breakers = vec![BreakerFact {
                id: "slow".into(),
                agent: agent.into(),
                action: "email:send".into(),
            }];
            assert_eq!(status(&e, "owasp-llm06-2025"), Status::Met, "{agent}");
        }
        let mut other = e.clone();
        other.config.gateway.breakers = vec![BreakerFact {
            id: "slow".into(),
            agent: "someone-else".into(),
            action: "email:send".into(),
        }];
        assert_eq!(status(&other, "owasp-llm06-2025"), Status::Partial);
    }

    #[test]
    fn record_keeping_wants_six_months_and_task_ids() {
        let mut e = good();
        e.config.audit_retention_days = Some(400);
        assert_eq!(status(&e, "eu-ai-act-art-12"), Status::Met);
        e.config.audit_retention_days = Some(90);
        let r = result(&e, "eu-ai-act-art-12");
        assert_eq!(r.status, Status::Gap);
        assert!(r.gaps[0].problem.contains("90 days"));

        let mut e = good();
        e.activity.decisions_without_task = 2;
        assert_eq!(status(&e, "eu-ai-act-art-12"), Status::Partial);
        // A report without verification does not weaken Art. 12 (that is §164.312(b)'s call).
        let mut e = good();
        e.integrity.verification = None;
        assert_eq!(status(&e, "eu-ai-act-art-12"), Status::Met);
    }

    fn agent(id: &str, name: &str, ceiling: &[&str], stage: Stage, keys: Vec<AgentKey>) -> Agent {
        Agent {
            id: AgentId::parse(id).unwrap(),
            name: name.into(),
            owner: "carol@example.com".into(),
            description: String::new(),
            ceiling: PatternSet::parse(ceiling.iter().copied()).unwrap(),
            tags: Vec::new(),
            max_stage: stage,
            status: AgentStatus::Active,
            keys,
            workloads: Vec::new(),
            require_dpop: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn key(kid: &str, x: &str, expires_at: Option<i64>) -> AgentKey {
        AgentKey {
            kid: kid.into(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}),
            expires_at,
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn agent_facts_find_broad_ceilings_shared_keys_and_writers() {
        let now = 1_000;
        let mut retired = agent(
            "old",
            "old",
            &["*:*"],
            Stage::Execute,
            vec![key("o", "X", None)],
        );
        retired.status = AgentStatus::Retired;
        let mut revoked = key("r", "X", None);
        revoked.revoked_at = Some(10);
        let mut orphan = agent(
            "orphan",
            "orphan",
            &["tickets:read"],
            Stage::Observe,
            vec![],
        );
        orphan.owner = "  ".into();
        orphan.status = AgentStatus::Suspended;
        let agents = vec![
            agent(
                "root",
                "<b>Root</b>",
                &["*:*", "crm.customers:read"],
                Stage::Execute,
                vec![key("root-k1", "X", Some(now + 60))],
            ),
            agent(
                "copy",
                "copy",
                &["tickets:*", "reports:export"],
                Stage::Execute,
                vec![
                    key("copy-k1", "X", None),
                    key("expired", "Y", Some(now - 1)),
                ],
            ),
            agent(
                "reader",
                "reader",
                &["crm.*:read"],
                Stage::Draft,
                vec![key("reader-k1", "Z", None), revoked],
            ),
            retired,
            orphan,
        ];
        let mut catalog = ActionCatalog::default();
        catalog.0.insert("export".into(), ActionClass::Read);
        let f = AgentFacts::from_agents(&agents, now, &catalog);
        assert_eq!((f.total, f.active, f.suspended, f.retired), (5, 3, 1, 1));
        assert_eq!(f.by_max_stage.get("execute"), Some(&2));
        assert_eq!(f.by_max_stage.get("observe"), Some(&1));
        assert_eq!(
            f.usable_keys, 3,
            "revoked, expired and retired keys do not count"
        );
        assert_eq!(f.without_owner.len(), 1);
        assert_eq!(f.without_owner[0].id, "orphan");
        assert_eq!(
            f.broad_ceilings,
            vec![finding("root", "<b>Root</b>", &["*:*"])]
        );
        assert_eq!(
            f.wildcard_actions,
            vec![finding("copy", "copy", &["tickets:*"])]
        );
        // `export` reads by the catalog; `*:*` and `tickets:*` write.
        assert_eq!(
            f.execute_writers,
            vec![
                finding("root", "<b>Root</b>", &["*:*"]),
                finding("copy", "copy", &["tickets:*"]),
            ]
        );
        assert_eq!(
            f.keys_without_expiry,
            vec![
                finding("copy", "copy", &["copy-k1"]),
                finding("reader", "reader", &["reader-k1"]),
            ]
        );
        // `X` is usable on root and copy (the retired agent and the revoked key do not count).
        assert_eq!(f.shared_keys.len(), 1);
        let ids: Vec<&str> = f.shared_keys[0]
            .agents
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["copy", "root"]);
        assert_eq!(f.shared_keys[0].kids, ["copy-k1", "root-k1"]);
    }

    #[test]
    fn broad_patterns_are_those_with_no_resource_named() {
        let p = |s: &str| ScopePattern::parse(s).unwrap();
        assert!(is_broad(&p("*:*")));
        assert!(is_broad(&p("*:read")));
        assert!(is_broad(&p("*.*:*")));
        assert!(!is_broad(&p("crm.*:read")));
        assert!(!is_broad(&p("tickets:*")));
        let c = ActionCatalog::default();
        assert!(writes(&p("tickets:*"), &c));
        assert!(writes(&p("mcp.crm.*:call"), &c));
        assert!(!writes(&p("crm.*:read"), &c));
    }

    #[test]
    fn activity_sums_the_store_aggregates() {
        let g =
            |kind: &str, decision: &str, code: Option<&str>, count, task, principal| EventCount {
                kind: kind.into(),
                decision: decision.into(),
                code: code.map(str::to_owned),
                count,
                with_task: task,
                with_principal: principal,
            };
        let audit = AuditCounts {
            groups: vec![
                g("token.exchange", "allow", None, 5, 5, 5),
                g("token.client_credentials", "allow", None, 1, 1, 1),
                g("token.exchange", "deny", Some("invalid_scope"), 2, 0, 2),
                g("token.exchange", "deny", Some("invalid_client"), 1, 0, 0),
                g("gateway.request", "allow", None, 3, 2, 3),
                g("gateway.request", "deny", None, 1, 1, 1),
                g("gateway.breaker", "deny", None, 1, 1, 1),
                g("revocation", "info", None, 2, 1, 0),
                g("agent.register", "info", None, 2, 0, 2),
            ],
            distinct_users: 2,
            distinct_agents: 3,
            first_time: Some("2026-01-01T00:00:00.000Z".into()),
            last_seq: 99,
            ..AuditCounts::default()
        };
        let approvals = vec![
            ApprovalCount {
                kind: "held_write".into(),
                status: "approved".into(),
                count: 2,
            },
            ApprovalCount {
                kind: "held_write".into(),
                status: "expired".into(),
                count: 1,
            },
        ];
        let f = ActivityFacts::from_counts(&audit, &approvals, 7);
        assert_eq!(f.events, 18);
        assert_eq!((f.allowed, f.denials, f.info), (9, 5, 4));
        assert_eq!(f.tokens_issued, 6);
        assert_eq!(f.token_denials, 3);
        assert_eq!(f.client_auth_failures, 1);
        assert_eq!(f.denials_by_code.get("invalid_scope"), Some(&2));
        assert_eq!((f.gateway_allowed, f.gateway_denied), (3, 1));
        assert_eq!(f.breaker_trips, 1);
        assert_eq!((f.revocations, f.revocations_total), (2, 7));
        assert_eq!(f.decisions, 9);
        assert_eq!(f.decisions_without_task, 1);
        assert_eq!(f.decisions_without_principal, 0);
        assert_eq!(f.count_of("token.exchange"), 8);
        assert_eq!(f.count_of("nothing"), 0);
        assert_eq!(f.total_events, 99);
        let held = f.approvals.get("held_write").unwrap();
        assert_eq!((held.approved, held.expired, held.total()), (2, 1, 3));
    }

    #[test]
    fn outside_values_are_quoted_as_one_code_span() {
        assert_eq!(quoted("a`b\nc"), "`a'b c`");
        let r = AgentRef {
            id: "x".into(),
            name: "<script>`".into(),
        };
        assert_eq!(r.label(), "`x` (`<script>'`)");
        let many: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert!(list(&many).ends_with("; and 2 more"));
    }
}
