//! Posture (SPEC §8) and access reviews (issue 7).
//!
//! [`report`] gathers what [`mandate_core::posture`] judges — the agents (from the directory),
//! usage aggregated by the store from the issued-token records, recorded justifications, open
//! reviews, and the limits and lifetimes of the configuration — and returns the inventory, the
//! findings and each agent's blast radius as JSON. The rules live in `mandate-core`; this module
//! only reads.
//!
//! Access reviews: [`open_round`] opens one review item per active agent for its owner;
//! [`answer`] records the owner's answer — attest (keep the ceiling) or remove scopes (the ceiling
//! narrows at once, through the agent update path). Everything is audited: `review.open`,
//! `review.attest`, `review.remove`, and refusals.

use std::collections::{BTreeMap, BTreeSet};

use mandate_core::agent::AgentStatus;
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::ids::UserPrincipal;
use mandate_core::posture::{
    self, DEFAULT_KEY_MAX_AGE_DAYS, DEFAULT_UNUSED_DAYS, Deployment, Exposure, Limit, Review,
    ReviewStatus, Settings,
};
use mandate_core::scope::ScopePattern;
use mandate_core::stage::Stage;
use mandate_core::time::rfc3339_millis;
use mandate_gateway::breaker::{Then, parse_window};
use mandate_store::{Op, ReviewFilter, StoreError};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Revocation-to-refusal latency at a verifier following the revocation stream, p99, in
/// milliseconds: the slowest p99 measured in `docs/BENCHMARKS.md` (5.4 ms after load).
pub const REVOCATION_LATENCY_MS: f64 = 5.4;
/// Assumed time for a human to notice misuse in the audit log when no breaker alerts, seconds.
pub const UNALERTED_SECS: i64 = 3600;
/// Assumed rate of an agent that no limit bounds, per minute (ten actions a second).
pub const UNBOUNDED_PER_MINUTE: f64 = 600.0;
/// Longest window for unused scopes and key age, days.
pub const MAX_DAYS: i64 = 3650;
/// Default days until an access review is due.
pub const DEFAULT_DUE_DAYS: i64 = 14;
/// Longest time until an access review is due, days.
pub const MAX_DUE_DAYS: i64 = 365;
/// Most open reviews a posture report lists (and that a round looks at).
const MAX_LISTED_REVIEWS: u32 = 1000;

/// What a posture report is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A ceiling pattern no token held in this many days is unused.
    pub unused_days: i64,
    /// A key older than this many days is old.
    pub key_max_age_days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            unused_days: DEFAULT_UNUSED_DAYS,
            key_max_age_days: DEFAULT_KEY_MAX_AGE_DAYS,
        }
    }
}

/// The limits and lifetimes of the configuration, as blast radius needs them.
pub fn exposure(state: &AppState) -> Exposure {
    let t = &state.config.tokens;
    let cap = |secs: i64| secs.min(t.max_ttl);
    let stage_ttl = BTreeMap::from([
        (Stage::Observe, cap(t.stage_max_ttl.observe)),
        (Stage::Draft, cap(t.stage_max_ttl.draft)),
        (Stage::Execute, cap(t.stage_max_ttl.execute)),
    ]);
    let mut limits = Vec::new();
    let issuance = state.config.limits.issuance_per_agent_per_minute;
    if issuance > 0 {
        limits.push(Limit {
            source: "limits.issuance_per_agent_per_minute".into(),
            agent: "*".into(),
            covers: None,
            per_minute: f64::from(issuance),
            webhook: None,
            suspends: false,
        });
    }
    for b in &state.config.gateway.breakers {
        let Some(window) = parse_window(&b.per).filter(|w| *w > 0) else {
            continue;
        };
        let Ok(covers) = ScopePattern::parse(&b.action) else {
            continue;
        };
        limits.push(Limit {
            source: format!("breaker:{}", b.id),
            agent: b.agent.clone(),
            covers: Some(covers),
            per_minute: f64::from(b.max) * 60.0 / window as f64,
            webhook: b.webhook.clone(),
            suspends: b.then == Then::Suspend,
        });
    }
    Exposure {
        stage_ttl,
        revocation_latency_ms: REVOCATION_LATENCY_MS,
        unalerted_secs: UNALERTED_SECS,
        unbounded_per_minute: UNBOUNDED_PER_MINUTE,
        limits,
    }
}

/// A review as the API shows it: every field, and whether it is overdue at `now`.
pub fn review_view(r: &Review, now: i64) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("overdue".into(), json!(r.is_overdue(now)));
    }
    v
}

fn open_filter() -> ReviewFilter {
    ReviewFilter {
        status: Some(ReviewStatus::Open),
        limit: Some(MAX_LISTED_REVIEWS),
        ..ReviewFilter::default()
    }
}

/// The posture report of the deployment behind `state`, as JSON.
pub async fn report(state: &AppState, opts: Options) -> Result<Value, StoreError> {
    let now = state.clock.now();
    let settings = Settings {
        now,
        unused_days: opts.unused_days,
        key_max_age_days: opts.key_max_age_days,
        catalog: state.config.catalog.clone(),
    };
    let agents: Vec<_> = state
        .directory
        .all()
        .iter()
        .map(|a| a.as_ref().clone())
        .collect();
    let since = now.saturating_sub(opts.unused_days.saturating_mul(posture::DAY));
    let usage = state.store.usage(since).await?;
    let justifications = state.store.justifications().await?;
    let reviews = state.store.reviews(&open_filter()).await?;
    let d = Deployment {
        agents: &agents,
        justifications: &justifications,
        usage: &usage,
        reviews: &reviews,
    };
    let inventory = posture::inventory(&d, &settings);
    let findings = posture::findings(&d, &settings);
    let exposure = exposure(state);
    let radii = posture::blast_radii(&agents, &usage, &exposure, &settings.catalog);
    let mut summary = json!({
        "agents": agents.len(),
        "findings": findings.len(),
        "open_reviews": reviews.len(),
        "overdue_reviews": reviews.iter().filter(|r| r.is_overdue(now)).count(),
    });
    for sev in ["critical", "high", "medium", "low"] {
        summary[sev] = json!(
            findings
                .iter()
                .filter(|f| f.severity.as_str() == sev)
                .count()
        );
    }
    Ok(json!({
        "generated_at": rfc3339_millis(now.saturating_mul(1000)),
        "now": now,
        "settings": {
            "unused_days": opts.unused_days,
            "key_max_age_days": opts.key_max_age_days,
            "revocation_latency_ms": exposure.revocation_latency_ms,
            "unalerted_secs": exposure.unalerted_secs,
            "unbounded_per_minute": exposure.unbounded_per_minute,
            "stage_ttl": exposure.stage_ttl,
            "limits": exposure.limits,
        },
        "summary": summary,
        "inventory": inventory,
        "findings": findings,
        "blast_radius": radii,
        "reviews": reviews.iter().map(|r| review_view(r, now)).collect::<Vec<_>>(),
    }))
}

// ---- access reviews ----

fn new_id(prefix: &str) -> Result<String, ApiError> {
    mandate_token::random_id::<12>()
        .map(|r| format!("{prefix}-{r}"))
        .map_err(|e| {
            tracing::error!(error = %e, "no randomness for a review id");
            ApiError::server_error()
        })
}

/// What [`open_round`] did.
#[derive(Debug, Clone)]
pub struct Round {
    /// The round's id (`rc-…`).
    pub campaign: String,
    /// The review items opened, one per agent.
    pub opened: Vec<Review>,
    /// Agents left out, with why.
    pub skipped: Vec<(String, String)>,
}

/// Opens one review item per active agent for its owner, due in `due_days`, in one unit with a
/// `review.open` event each. Agents that already have an open review, and agents without an
/// owner, are skipped (and said so).
pub async fn open_round(
    state: &AppState,
    due_days: i64,
    by: &str,
    request_id: Option<String>,
) -> Result<Round, ApiError> {
    let now = state.clock.now();
    let campaign = new_id("rc")?;
    let open = state.store.reviews(&open_filter()).await?;
    let mut opened = Vec::new();
    let mut skipped = Vec::new();
    let mut ops = Vec::new();
    for agent in state.directory.all() {
        if agent.status != AgentStatus::Active {
            continue;
        }
        let id = agent.id.as_str();
        if let Some(r) = open.iter().find(|r| r.agent == id) {
            skipped.push((id.to_owned(), format!("review `{}` is still open", r.id)));
            continue;
        }
        if agent.owner.trim().is_empty() {
            skipped.push((
                id.to_owned(),
                "it has no owner to review it; name one first".to_owned(),
            ));
            continue;
        }
        let review = Review {
            id: new_id("rv")?,
            campaign: campaign.clone(),
            agent: id.to_owned(),
            owner: agent.owner.clone(),
            ceiling: agent
                .ceiling
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            status: ReviewStatus::Open,
            opened_by: by.to_owned(),
            created_at: now,
            due_at: now + due_days * posture::DAY,
            decided_by: None,
            decided_at: None,
            removed: Vec::new(),
            note: None,
        };
        let event = NewEvent {
            kind: "review.open".into(),
            chain: vec![id.to_owned()],
            action: Some("review.open".into()),
            resource: Some(format!("review:{}", review.id)),
            decision: Some(Decision::Info),
            reason: format!(
                "by {by}; owner {} answers by {}",
                review.owner,
                date(review.due_at)
            ),
            request_id: request_id.clone(),
            detail: json!({
                "review": review.id, "campaign": campaign, "owner": review.owner,
                "due_at": review.due_at, "ceiling": review.ceiling,
            })
            .to_string(),
            ..Default::default()
        };
        ops.push(Op::InsertReview(Box::new(review.clone())));
        ops.push(Op::Audit(event));
        opened.push(review);
    }
    if !ops.is_empty() {
        state.store.commit(ops).await?;
    }
    Ok(Round {
        campaign,
        opened,
        skipped,
    })
}

fn date(secs: i64) -> String {
    rfc3339_millis(secs.saturating_mul(1000))
        .chars()
        .take(10)
        .collect()
}

/// The owner's answer to a review.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The agent still needs its whole ceiling.
    Attest,
    /// Take these patterns out of its ceiling.
    Remove(Vec<String>),
}

/// Most patterns one answer may remove.
const MAX_REMOVED: usize = 256;
/// Longest note, bytes.
pub const MAX_NOTE_BYTES: usize = 1000;

/// Records `who`'s answer to review `id`: only the agent's owner may answer, once. Removing
/// scopes narrows the agent's ceiling in the same unit. Refusals of a human who is not the owner
/// are audited too.
pub async fn answer(
    state: &AppState,
    id: &str,
    who: &UserPrincipal,
    answer: Answer,
    note: Option<String>,
    request_id: Option<String>,
) -> Result<Review, ApiError> {
    let shown: String = id.chars().take(64).collect();
    let review = state
        .store
        .review(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no access review `{shown}`")))?;
    if review.status != ReviewStatus::Open {
        return Err(ApiError::conflict(format!(
            "access review `{}` was already {}",
            review.id,
            review.status.as_str()
        )));
    }
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
        return Err(ApiError::bad_request(format!(
            "`note` is longer than {MAX_NOTE_BYTES} bytes"
        )));
    }
    let (kind, status, removed) = match answer {
        Answer::Attest => ("review.attest", ReviewStatus::Attested, Vec::new()),
        Answer::Remove(scopes) => {
            if scopes.is_empty() {
                return Err(ApiError::bad_request(
                    "`scopes` must name at least one pattern of the ceiling to remove (to keep \
                     everything, attest instead)",
                ));
            }
            if scopes.len() > MAX_REMOVED {
                return Err(ApiError::bad_request(format!(
                    "`scopes` holds more than {MAX_REMOVED} patterns"
                )));
            }
            let mut seen = BTreeSet::new();
            let list: Vec<String> = scopes
                .into_iter()
                .filter(|s| seen.insert(s.clone()))
                .collect();
            ("review.remove", ReviewStatus::Narrowed, list)
        }
    };
    let agent = state.directory.get(&review.agent).ok_or_else(|| {
        ApiError::not_found(format!(
            "agent `{}` of review `{}` not found",
            review.agent, review.id
        ))
    })?;
    let user = &who.subject;
    if agent.owner.trim().is_empty() || agent.owner != *user {
        let reason = format!(
            "only the owner of agent `{}` (`{}`) may answer its access review; `{user}` is not",
            agent.id, agent.owner
        );
        let event = NewEvent {
            kind: kind.into(),
            user: Some(user.clone()),
            chain: vec![review.agent.clone()],
            action: Some(kind.into()),
            resource: Some(format!("review:{}", review.id)),
            decision: Some(Decision::Deny),
            reason: reason.clone(),
            request_id,
            detail: json!({"review": review.id, "owner": agent.owner}).to_string(),
            ..Default::default()
        };
        state.store.commit(vec![Op::Audit(event)]).await?;
        return Err(ApiError::forbidden(reason));
    }
    if agent.status == AgentStatus::Retired {
        return Err(ApiError::conflict(format!(
            "agent `{}` is retired; its review needs no answer",
            agent.id
        )));
    }
    let now = state.clock.now();
    let by = format!("user:{user}");
    let mut ops = Vec::new();
    let mut detail = json!({"review": review.id, "campaign": review.campaign});
    if !removed.is_empty() {
        let (narrow, after) = crate::admin::agents::narrowing(
            state,
            &review.agent,
            &removed,
            &by,
            json!({"review": review.id}),
        )?;
        ops.extend(narrow);
        detail["removed"] = json!(removed);
        detail["ceiling"] = json!(
            after
                .ceiling
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect::<Vec<_>>()
        );
    } else {
        detail["ceiling"] = json!(
            agent
                .ceiling
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect::<Vec<_>>()
        );
    }
    if let Some(n) = &note {
        detail["note"] = json!(n);
    }
    let reason = match status {
        ReviewStatus::Narrowed => format!(
            "owner {user} removed {} from the ceiling",
            removed
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("owner {user} attests the agent still needs its ceiling"),
    };
    ops.push(Op::DecideReview {
        id: review.id.clone(),
        status,
        by: user.clone(),
        at: now,
        removed: removed.clone(),
        note: note.clone(),
    });
    ops.push(Op::Audit(NewEvent {
        kind: kind.into(),
        user: Some(user.clone()),
        chain: vec![review.agent.clone()],
        action: Some(kind.into()),
        resource: Some(format!("review:{}", review.id)),
        decision: Some(Decision::Info),
        reason,
        request_id,
        detail: detail.to_string(),
        ..Default::default()
    }));
    state.store.commit(ops).await.map_err(|e| match e {
        StoreError::ReviewClosed { id, status } => {
            ApiError::conflict(format!("access review `{id}` was already {status}"))
        }
        other => other.into(),
    })?;
    if !removed.is_empty() {
        state
            .directory
            .refresh(state.store.as_ref(), &review.agent)
            .await?;
    }
    state
        .store
        .review(&review.id)
        .await?
        .ok_or_else(ApiError::server_error)
}
