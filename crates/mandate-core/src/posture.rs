//! Posture (SPEC §8): an inventory of every agent, findings with a severity and a fix, each
//! agent's blast radius, and access reviews.
//!
//! Everything here is a pure function of plain inputs — the agents, what was used when
//! ([`Usage`], aggregated by the store), recorded [`Justification`]s, open [`Review`]s and the
//! [`Settings`] — so every finding can be tested without a server. Each [`Finding`] carries its
//! reasons as data: a stable id ([`Check`]), the agent and subject it is about, the problem in a
//! sentence and the fix, naming the command to run.
//!
//! Blast radius is `scope weight × velocity (per minute) × detection window (minutes)`: roughly
//! how many weighted actions a misbehaving agent could take before it is stopped. Each term is
//! returned with its parts and the rule that produced it, so a reader can check the arithmetic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{Agent, AgentKey, AgentStatus};
use crate::scope::{ActionCatalog, ActionClass, Scope, ScopePattern};
use crate::stage::Stage;
use crate::time::rfc3339_millis;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Default window for "unused" ceiling scopes, days.
pub const DEFAULT_UNUSED_DAYS: i64 = 30;
/// Default age after which a key is "old", days.
pub const DEFAULT_KEY_MAX_AGE_DAYS: i64 = 90;
/// Default life suggested for a replacement key, days.
pub const SUGGESTED_KEY_LIFE_DAYS: i64 = 90;

// ---------------------------------------------------------------------------------------------
// Findings

/// How bad a finding is, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Identity or accountability is broken: fix now.
    Critical,
    /// A standing exposure an attacker can use as it is.
    High,
    /// Least privilege is not met, or a control is missing.
    Medium,
    /// Hygiene: unused access, stale records.
    Low,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "critical" => Some(Severity::Critical),
            "high" => Some(Severity::High),
            "medium" => Some(Severity::Medium),
            "low" => Some(Severity::Low),
            _ => None,
        }
    }
}

/// What a finding is about: its stable id (`key-never-expires`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The same public key is registered on several agents.
    KeyShared,
    /// A usable key has no expiry.
    KeyNeverExpires,
    /// The agent has no accountable owner.
    NoOwner,
    /// A usable key is older than the maximum age.
    KeyOld,
    /// A write-class ceiling pattern has no recorded justification.
    WriteScopeUnjustified,
    /// The agent's `max_stage` is `execute`: writes run without a human.
    StageExecute,
    /// An access review is past its due date, unanswered.
    ReviewOverdue,
    /// No token in the window held a scope of this ceiling pattern.
    ScopeUnused,
}

impl Check {
    /// Every check, in the order findings of equal severity are listed.
    pub const ALL: [Check; 8] = [
        Check::KeyShared,
        Check::KeyNeverExpires,
        Check::NoOwner,
        Check::KeyOld,
        Check::WriteScopeUnjustified,
        Check::StageExecute,
        Check::ReviewOverdue,
        Check::ScopeUnused,
    ];

    /// The stable id.
    pub fn id(self) -> &'static str {
        match self {
            Check::KeyShared => "key-shared",
            Check::KeyNeverExpires => "key-never-expires",
            Check::NoOwner => "no-owner",
            Check::KeyOld => "key-old",
            Check::WriteScopeUnjustified => "write-scope-unjustified",
            Check::StageExecute => "stage-execute",
            Check::ReviewOverdue => "review-overdue",
            Check::ScopeUnused => "scope-unused",
        }
    }
}

/// One problem found, with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The stable id of the check.
    pub id: Check,
    /// How bad it is.
    pub severity: Severity,
    /// The agent it is about.
    pub agent: String,
    /// What exactly: a key id, a scope pattern, a review id, or the field (`owner`,
    /// `max_stage`).
    pub subject: String,
    /// The problem, in a sentence.
    pub problem: String,
    /// The fix, naming the command to run.
    pub fix: String,
}

/// What the findings are judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Now, seconds since the epoch.
    pub now: i64,
    /// A ceiling pattern no token held in this many days is unused.
    pub unused_days: i64,
    /// A key older than this many days is old.
    pub key_max_age_days: i64,
    /// Action classes that differ from the default.
    pub catalog: ActionCatalog,
}

impl Settings {
    /// The defaults at `now`: 30 days for unused scopes, 90 for old keys, the default catalog.
    pub fn new(now: i64) -> Settings {
        Settings {
            now,
            unused_days: DEFAULT_UNUSED_DAYS,
            key_max_age_days: DEFAULT_KEY_MAX_AGE_DAYS,
            catalog: ActionCatalog::default(),
        }
    }

    fn window_start(&self) -> i64 {
        self.now
            .saturating_sub(self.unused_days.saturating_mul(DAY))
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// When an agent last proved itself with a credential (the current actor of an issued token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialUse {
    /// The agent.
    pub agent: String,
    /// The credential: a key id for `kid:<kid>` credentials, else the credential as recorded.
    pub credential: String,
    /// The issue time of the newest token it obtained.
    pub last_used: i64,
}

/// Tokens issued to an agent (as the current actor) holding one exact scope set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeUse {
    /// The agent.
    pub agent: String,
    /// The space-separated scopes, as issued.
    pub scopes: String,
    /// The issue time of the newest such token.
    pub last_used: i64,
}

/// An agent's busiest minute: the most tokens issued to it in one minute of the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePeak {
    /// The agent.
    pub agent: String,
    /// Tokens in that minute.
    pub per_minute: i64,
}

/// What was used when, aggregated from the issued-token records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Last use per (agent, credential), all time.
    pub credentials: Vec<CredentialUse>,
    /// Last use per (agent, scope set), all time.
    pub scopes: Vec<ScopeUse>,
    /// Busiest minute per agent, since the window's start.
    pub peaks: Vec<RatePeak>,
}

impl Usage {
    /// When `agent` last used the key `kid`.
    pub fn key_last_used(&self, agent: &str, kid: &str) -> Option<i64> {
        self.credentials
            .iter()
            .filter(|c| c.agent == agent && c.credential == kid)
            .map(|c| c.last_used)
            .max()
    }

    /// When `agent` last held a scope that `pattern` grants.
    pub fn pattern_last_used(&self, agent: &str, pattern: &ScopePattern) -> Option<i64> {
        self.scopes
            .iter()
            .filter(|u| u.agent == agent)
            .filter(|u| {
                u.scopes
                    .split(' ')
                    .filter_map(|s| Scope::parse(s).ok())
                    .any(|s| pattern.matches(&s))
            })
            .map(|u| u.last_used)
            .max()
    }

    /// The busiest minute of `agent` in the window (0 if it got no token).
    pub fn peak(&self, agent: &str) -> i64 {
        self.peaks
            .iter()
            .filter(|p| p.agent == agent)
            .map(|p| p.per_minute)
            .max()
            .unwrap_or(0)
    }
}

/// Why an agent's ceiling holds a pattern, as recorded by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    /// The agent.
    pub agent: String,
    /// The ceiling pattern, as written.
    pub pattern: String,
    /// Why.
    pub text: String,
    /// Who recorded it (`admin:<id>`).
    pub by: String,
    /// When.
    pub at: i64,
}

/// The state of an access review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    /// Waiting for the owner.
    Open,
    /// The owner confirmed the agent still needs its whole ceiling.
    Attested,
    /// The owner removed scopes from the ceiling.
    Narrowed,
}

impl ReviewStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Attested => "attested",
            ReviewStatus::Narrowed => "narrowed",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<ReviewStatus> {
        match s {
            "open" => Some(ReviewStatus::Open),
            "attested" => Some(ReviewStatus::Attested),
            "narrowed" => Some(ReviewStatus::Narrowed),
            _ => None,
        }
    }
}

/// One access review item: an agent's owner is asked whether it still needs its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// `rv-…`.
    pub id: String,
    /// The review round it belongs to (`rc-…`): every item opened by one start.
    pub campaign: String,
    /// The agent.
    pub agent: String,
    /// Its owner when the review was opened: who is asked.
    pub owner: String,
    /// The ceiling under review, as it was when opened.
    pub ceiling: Vec<String>,
    /// Open, attested or narrowed.
    pub status: ReviewStatus,
    /// Who opened it (`admin:<id>`).
    pub opened_by: String,
    /// When it was opened.
    pub created_at: i64,
    /// When the owner's answer is due.
    pub due_at: i64,
    /// The owner who answered.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<i64>,
    /// The patterns the owner removed.
    pub removed: Vec<String>,
    /// The owner's note.
    pub note: Option<String>,
}

impl Review {
    /// Whether it is open and past its due date at `now`.
    pub fn is_overdue(&self, now: i64) -> bool {
        self.status == ReviewStatus::Open && now >= self.due_at
    }
}

/// Everything posture looks at.
#[derive(Debug, Clone, Copy)]
pub struct Deployment<'a> {
    /// Every agent, with its keys.
    pub agents: &'a [Agent],
    /// Recorded justifications.
    pub justifications: &'a [Justification],
    /// What was used when.
    pub usage: &'a Usage,
    /// Access reviews (open ones matter).
    pub reviews: &'a [Review],
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The class of a ceiling pattern: `write` if it can grant any write-class scope — its action is
/// `*`, its action writes, or the catalog names a write-class scope it matches.
pub fn pattern_class(pattern: &ScopePattern, catalog: &ActionCatalog) -> ActionClass {
    let text = pattern.as_str();
    let Some((resource, action)) = text.split_once(':') else {
        return ActionClass::Write;
    };
    if action == "*" {
        return ActionClass::Write;
    }
    if !resource.split('.').any(|w| w == "*") {
        return match Scope::parse(text) {
            Ok(s) => catalog.class_of(&s),
            Err(_) => ActionClass::Write,
        };
    }
    let by_action = catalog
        .0
        .get(action)
        .copied()
        .unwrap_or_else(|| ActionClass::of_action(action));
    if by_action == ActionClass::Write {
        return ActionClass::Write;
    }
    let writes_somewhere = catalog.0.iter().any(|(name, class)| {
        *class == ActionClass::Write && Scope::parse(name).ok().is_some_and(|s| pattern.matches(&s))
    });
    if writes_somewhere {
        ActionClass::Write
    } else {
        ActionClass::Read
    }
}

/// How many segments of the pattern are `*`.
pub fn wildcards(pattern: &ScopePattern) -> u32 {
    let n = pattern
        .as_str()
        .split([':', '.'])
        .filter(|w| *w == "*")
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A public key's identity: the SHA-256 (hex) of its RFC 7638 canonical members, so the same key
/// registered under two `kid`s is recognised. `None` for a key type it does not know.
pub fn key_fingerprint(jwk: &serde_json::Value) -> Option<String> {
    let m = |k: &str| {
        jwk.get(k)
            .and_then(serde_json::Value::as_str)
            .map(|v| v.trim_end_matches('='))
    };
    let canonical = match m("kty")? {
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, m("crv")?, m("x")?),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            m("crv")?,
            m("x")?,
            m("y")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, m("e")?, m("n")?),
        _ => return None,
    };
    Some(hex::encode(Sha256::digest(canonical.as_bytes())))
}

/// `YYYY-MM-DD` of a time in seconds.
fn date(secs: i64) -> String {
    rfc3339_millis(secs.saturating_mul(1000))
        .chars()
        .take(10)
        .collect()
}

/// Whole days from `from` to `to` (never negative).
fn days_between(from: i64, to: i64) -> i64 {
    to.saturating_sub(from).max(0) / DAY
}

/// Quotes a command-line argument for a POSIX shell when it needs it.
fn sh(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b',' | b'/')
        });
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn usable_keys(agent: &Agent, now: i64) -> impl Iterator<Item = &AgentKey> {
    agent.keys.iter().filter(move |k| k.usable_at(now))
}

fn is_justified(agent: &str, pattern: &ScopePattern, justifications: &[Justification]) -> bool {
    justifications.iter().any(|j| {
        j.agent == agent
            && !j.text.trim().is_empty()
            && ScopePattern::parse(&j.pattern).is_ok_and(|q| pattern.is_subset_of(&q))
    })
}

fn justification_of<'a>(
    agent: &str,
    pattern: &ScopePattern,
    justifications: &'a [Justification],
) -> Option<&'a Justification> {
    justifications
        .iter()
        .filter(|j| j.agent == agent && !j.text.trim().is_empty())
        .find(|j| j.pattern == pattern.as_str())
        .or_else(|| {
            justifications.iter().find(|j| {
                j.agent == agent
                    && !j.text.trim().is_empty()
                    && ScopePattern::parse(&j.pattern).is_ok_and(|q| pattern.is_subset_of(&q))
            })
        })
}

/// The ceiling without `pattern`, as the comma-separated value of `--ceiling`.
fn ceiling_without(agent: &Agent, remove: &BTreeSet<&str>) -> String {
    agent
        .ceiling
        .iter()
        .map(ScopePattern::as_str)
        .filter(|p| !remove.contains(p))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// Findings

/// Every finding in the deployment, most severe first (then by agent, check and subject).
/// Retired agents are left out: they can do nothing.
pub fn findings(d: &Deployment<'_>, s: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    let live: Vec<&Agent> = d
        .agents
        .iter()
        .filter(|a| a.status != AgentStatus::Retired)
        .collect();
    shared_keys(&live, s, &mut out);
    for agent in &live {
        key_findings(agent, s, &mut out);
        owner_finding(agent, &mut out);
        write_findings(agent, d.justifications, s, &mut out);
        stage_finding(agent, s, &mut out);
        if agent.status == AgentStatus::Active {
            unused_findings(agent, d.usage, s, &mut out);
        }
    }
    for r in d.reviews {
        let live_agent = live.iter().any(|a| a.id.as_str() == r.agent);
        if live_agent && r.is_overdue(s.now) {
            out.push(Finding {
                id: Check::ReviewOverdue,
                severity: Severity::Medium,
                agent: r.agent.clone(),
                subject: r.id.clone(),
                problem: format!(
                    "access review `{}` of agent `{}` was due on {} and its owner `{}` has not \
                     answered: nobody has confirmed the agent still needs its ceiling",
                    r.id,
                    r.agent,
                    date(r.due_at),
                    r.owner
                ),
                fix: format!(
                    "`{owner}` answers it with their own identity provider token: `mandate review \
                     attest {id} --as-token <token>` if the agent still needs everything, or \
                     `mandate review remove {id} --scope <pattern> --as-token <token>` to narrow \
                     its ceiling",
                    owner = r.owner,
                    id = r.id
                ),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.severity, &a.agent, a.id, &a.subject).cmp(&(b.severity, &b.agent, b.id, &b.subject))
    });
    out
}

fn shared_keys(agents: &[&Agent], s: &Settings, out: &mut Vec<Finding>) {
    // fingerprint → (agent, kid) pairs holding it.
    let mut holders: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for a in agents {
        for k in usable_keys(a, s.now) {
            if let Some(fp) = key_fingerprint(&k.jwk) {
                holders
                    .entry(fp)
                    .or_default()
                    .push((a.id.as_str(), k.kid.as_str()));
            }
        }
    }
    for pairs in holders.values() {
        let distinct: BTreeSet<&str> = pairs.iter().map(|(a, _)| *a).collect();
        if distinct.len() < 2 {
            continue;
        }
        for (agent, kid) in pairs {
            let others: Vec<String> = distinct
                .iter()
                .filter(|o| *o != agent)
                .map(|o| format!("`{o}`"))
                .collect();
            out.push(Finding {
                id: Check::KeyShared,
                severity: Severity::Critical,
                agent: (*agent).to_owned(),
                subject: (*kid).to_owned(),
                problem: format!(
                    "key `{kid}` of agent `{agent}` is the same public key as one registered for \
                     {}: whoever holds the private key can act as any of them, and the audit \
                     log cannot tell them apart",
                    others.join(", ")
                ),
                fix: format!(
                    "give `{agent}` a key pair of its own: `mandate agents add-key {agent} --jwk \
                     {agent}-new.jwk --expires-at {exp}`, move the agent to it, then `mandate \
                     agents remove-key {agent} {kid}`",
                    agent = agent,
                    kid = sh(kid),
                    exp = s.now + SUGGESTED_KEY_LIFE_DAYS * DAY
                ),
            });
        }
    }
}

fn key_findings(agent: &Agent, s: &Settings, out: &mut Vec<Finding>) {
    let id = agent.id.as_str();
    let suggested = s.now + SUGGESTED_KEY_LIFE_DAYS * DAY;
    for k in usable_keys(agent, s.now) {
        if k.expires_at.is_none() {
            out.push(Finding {
                id: Check::KeyNeverExpires,
                severity: Severity::High,
                agent: id.to_owned(),
                subject: k.kid.clone(),
                problem: format!(
                    "key `{}` of agent `{id}` never expires: a leaked copy works until someone \
                     notices and revokes it",
                    k.kid
                ),
                fix: format!(
                    "register a replacement with an expiry, move the agent to it, then remove \
                     this one: `mandate agents add-key {id} --jwk {id}-new.jwk --expires-at \
                     {suggested}` and `mandate agents remove-key {id} {}`",
                    sh(&k.kid)
                ),
            });
        }
        let age = days_between(k.created_at, s.now);
        if age > s.key_max_age_days {
            out.push(Finding {
                id: Check::KeyOld,
                severity: Severity::Medium,
                agent: id.to_owned(),
                subject: k.kid.clone(),
                problem: format!(
                    "key `{}` of agent `{id}` is {age} days old (registered {}), older than {} \
                     days: the longer a key lives, the more places a copy of it may have reached",
                    k.kid,
                    date(k.created_at),
                    s.key_max_age_days
                ),
                fix: format!(
                    "rotate it: `mandate agents add-key {id} --jwk {id}-new.jwk --expires-at \
                     {suggested}`, move the agent to the new key, then `mandate agents remove-key \
                     {id} {}`",
                    sh(&k.kid)
                ),
            });
        }
    }
}

fn owner_finding(agent: &Agent, out: &mut Vec<Finding>) {
    if !agent.owner.trim().is_empty() {
        return;
    }
    let id = agent.id.as_str();
    out.push(Finding {
        id: Check::NoOwner,
        severity: Severity::High,
        agent: id.to_owned(),
        subject: "owner".to_owned(),
        problem: format!(
            "agent `{id}` has no owner: no accountable human answers for what it does, approves \
             its changes or reviews its access"
        ),
        fix: format!(
            "name the accountable human: `mandate agents update {id} --owner <person>` (an owner \
             change waits for an approver's decision)"
        ),
    });
}

fn write_findings(
    agent: &Agent,
    justifications: &[Justification],
    s: &Settings,
    out: &mut Vec<Finding>,
) {
    let id = agent.id.as_str();
    for p in agent.ceiling.iter() {
        if pattern_class(p, &s.catalog) != ActionClass::Write || is_justified(id, p, justifications)
        {
            continue;
        }
        let rest = ceiling_without(agent, &BTreeSet::from([p.as_str()]));
        out.push(Finding {
            id: Check::WriteScopeUnjustified,
            severity: Severity::Medium,
            agent: id.to_owned(),
            subject: p.as_str().to_owned(),
            problem: format!(
                "agent `{id}` may write with `{p}` and nobody recorded why it needs to: a write \
                 scope should be a deliberate, explained grant",
                p = p.as_str()
            ),
            fix: format!(
                "record why: `mandate agents update {id} --justify {}`; or take it away: \
                 `mandate agents update {id} --ceiling {}`",
                sh(&format!("{}=<why {id} needs it>", p.as_str())),
                sh(&rest)
            ),
        });
    }
}

fn stage_finding(agent: &Agent, s: &Settings, out: &mut Vec<Finding>) {
    if agent.max_stage != Stage::Execute {
        return;
    }
    let id = agent.id.as_str();
    let writes = agent
        .ceiling
        .iter()
        .any(|p| pattern_class(p, &s.catalog) == ActionClass::Write);
    let (severity, consequence) = if writes {
        (
            Severity::Medium,
            "its writes run without a human seeing them first",
        )
    } else {
        (
            Severity::Low,
            "it has no write scope, so `execute` adds nothing but the risk of a later widening",
        )
    };
    out.push(Finding {
        id: Check::StageExecute,
        severity,
        agent: id.to_owned(),
        subject: "max_stage".to_owned(),
        problem: format!("agent `{id}` acts in stage `execute`: {consequence}"),
        fix: format!(
            "lower it to `draft`, so each write waits for a human's approval: `mandate agents \
             update {id} --max-stage draft`"
        ),
    });
}

fn unused_findings(agent: &Agent, usage: &Usage, s: &Settings, out: &mut Vec<Finding>) {
    let id = agent.id.as_str();
    let start = s.window_start();
    // A younger agent has not had the whole window to use its scopes.
    if agent.created_at > start {
        return;
    }
    for p in agent.ceiling.iter() {
        let last = usage.pattern_last_used(id, p);
        if last.is_some_and(|t| t >= start) {
            continue;
        }
        let class = pattern_class(p, &s.catalog);
        let when = match last {
            Some(t) => format!("last on {}", date(t)),
            None => "never".to_owned(),
        };
        let rest = ceiling_without(agent, &BTreeSet::from([p.as_str()]));
        let fix = if rest.is_empty() {
            format!(
                "it used nothing in {} days: retire it (`mandate agents retire {id}`), or \
                 confirm with its owner that it is still needed",
                s.unused_days
            )
        } else {
            format!(
                "narrow the ceiling: `mandate agents update {id} --ceiling {}` (or its owner \
                 removes it in an access review: `mandate review remove <review> --scope {}`)",
                sh(&rest),
                sh(p.as_str())
            )
        };
        out.push(Finding {
            id: Check::ScopeUnused,
            severity: if class == ActionClass::Write {
                Severity::Medium
            } else {
                Severity::Low
            },
            agent: id.to_owned(),
            subject: p.as_str().to_owned(),
            problem: format!(
                "agent `{id}` has not held `{}` in the last {} days ({when}): access it does not \
                 use is only exposure",
                p.as_str(),
                s.unused_days
            ),
            fix,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// One credential of an agent, as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// The key id.
    pub kid: String,
    /// When it was registered.
    pub created_at: i64,
    /// Whole days since then.
    pub age_days: i64,
    /// When it stops being accepted, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Whether it proves the agent now.
    pub usable: bool,
    /// The issue time of the newest token it obtained.
    pub last_used: Option<i64>,
    /// Its public key's fingerprint (SHA-256 of the RFC 7638 members, hex).
    pub fingerprint: Option<String>,
}

/// One ceiling pattern, as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// The pattern.
    pub pattern: String,
    /// `read` or `write`.
    pub class: ActionClass,
    /// Why the agent has it, if recorded.
    pub justification: Option<String>,
    /// The issue time of the newest token that held a scope it grants.
    pub last_used: Option<i64>,
}

/// One agent, as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The agent id.
    pub agent: String,
    /// Its name.
    pub name: String,
    /// The accountable human.
    pub owner: String,
    /// Lifecycle state.
    pub status: AgentStatus,
    /// The highest stage it acts in without an approval.
    pub max_stage: Stage,
    /// The ceiling patterns, as written.
    pub ceiling: Vec<String>,
    /// Each pattern with its class, justification and last use.
    pub scopes: Vec<ScopeInfo>,
    /// Its keys.
    pub credentials: Vec<CredentialInfo>,
    /// When it was registered.
    pub created_at: i64,
}

/// Every agent with its owner, status, ceiling, stage and credentials, ordered by id.
pub fn inventory(d: &Deployment<'_>, s: &Settings) -> Vec<InventoryEntry> {
    let mut v: Vec<InventoryEntry> = d
        .agents
        .iter()
        .map(|a| {
            let id = a.id.as_str();
            InventoryEntry {
                agent: id.to_owned(),
                name: a.name.clone(),
                owner: a.owner.clone(),
                status: a.status,
                max_stage: a.max_stage,
                ceiling: a.ceiling.iter().map(|p| p.as_str().to_owned()).collect(),
                scopes: a
                    .ceiling
                    .iter()
                    .map(|p| ScopeInfo {
                        pattern: p.as_str().to_owned(),
                        class: pattern_class(p, &s.catalog),
                        justification: justification_of(id, p, d.justifications)
                            .map(|j| j.text.clone()),
                        last_used: d.usage.pattern_last_used(id, p),
                    })
                    .collect(),
                credentials: a
                    .keys
                    .iter()
                    .map(|k| CredentialInfo {
                        kid: k.kid.clone(),
                        created_at: k.created_at,
                        age_days: days_between(k.created_at, s.now),
                        expires_at: k.expires_at,
                        revoked_at: k.revoked_at,
                        usable: k.usable_at(s.now),
                        last_used: d.usage.key_last_used(id, &k.kid),
                        fingerprint: key_fingerprint(&k.jwk),
                    })
                    .collect(),
                created_at: a.created_at,
            }
        })
        .collect();
    v.sort_by(|a, b| a.agent.cmp(&b.agent));
    v
}

// ---------------------------------------------------------------------------------------------
// Blast radius

/// Weight of a read-class pattern.
pub const READ_WEIGHT: u64 = 1;
/// Weight of a write-class pattern an agent may use in `execute`.
pub const WRITE_WEIGHT: u64 = 3;

/// The rule behind [`ScopeWeight`], as shown to readers.
pub const WEIGHT_RULE: &str = "each ceiling pattern weighs 1 if it reads and 3 if it writes; a \
    write counts 1 at `draft` (each write waits for a human) and 0 at `observe` (never issued; a \
    `*` action still reads, 1); the weight doubles for each `*` segment; the total is the sum";

/// A configured limit on how fast an agent can act: the issuance limit or a gateway breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Where it is configured: `limits.issuance_per_agent_per_minute`, `breaker:<id>`.
    pub source: String,
    /// The agent it applies to, or `*` for each agent.
    pub agent: String,
    /// The scopes it counts; `None` for every scope.
    pub covers: Option<ScopePattern>,
    /// Its rate, per minute.
    pub per_minute: f64,
    /// A URL alerted when it trips.
    pub webhook: Option<String>,
    /// Whether tripping it suspends the agent.
    pub suspends: bool,
}

/// How long a misbehaving agent goes on, and the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// Longest token life at each stage, seconds (already capped by the global maximum).
    pub stage_ttl: BTreeMap<Stage, i64>,
    /// Measured revocation-to-refusal latency at a verifier (p99), milliseconds.
    pub revocation_latency_ms: f64,
    /// Assumed time to notice misuse when nothing alerts, seconds.
    pub unalerted_secs: i64,
    /// Assumed rate of an agent no limit covers, per minute.
    pub unbounded_per_minute: f64,
    /// The configured limits.
    pub limits: Vec<Limit>,
}

/// One pattern's weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedScope {
    /// The pattern.
    pub pattern: String,
    /// `read` or `write`.
    pub class: ActionClass,
    /// How many `*` segments.
    pub wildcards: u32,
    /// Its weight.
    pub weight: u64,
    /// How the weight follows from the rule.
    pub why: String,
}

/// The scope term: what the agent can touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeWeight {
    /// The sum of the patterns' weights.
    pub total: u64,
    /// The rule.
    pub rule: String,
    /// Each pattern.
    pub scopes: Vec<WeightedScope>,
}

/// A limit as it applies to one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedLimit {
    /// Where it is configured.
    pub source: String,
    /// Its rate, per minute.
    pub per_minute: f64,
    /// Whether it bounds everything the agent can do (it covers every ceiling pattern).
    pub binding: bool,
    /// What it counts, and whether it binds.
    pub why: String,
}

/// The velocity term: how fast the agent can act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Velocity {
    /// Actions per minute used in the score.
    pub per_minute: f64,
    /// Whether a configured limit bounds it.
    pub bounded: bool,
    /// The limits that apply to the agent.
    pub limits: Vec<AppliedLimit>,
    /// Its busiest minute in the window, tokens.
    pub observed_peak_per_minute: i64,
    /// How `per_minute` was chosen.
    pub explanation: String,
}

/// The detection term: how long until misuse stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionWindow {
    /// The sum of the three parts, seconds.
    pub seconds: f64,
    /// The same, minutes (the unit of the score).
    pub minutes: f64,
    /// The longest life of a token the agent can hold, seconds: a verifier that checks only
    /// signatures accepts a stolen one that long.
    pub token_ttl_secs: i64,
    /// Revocation-to-refusal latency at a verifier following the revocation stream, ms.
    pub revocation_latency_ms: f64,
    /// Time until someone is told, seconds: 0 when a breaker alerts or suspends.
    pub alerting_secs: i64,
    /// Where each part comes from.
    pub explanation: String,
}

/// An agent's blast radius: `scope weight × velocity × detection window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    /// The agent.
    pub agent: String,
    /// What it can touch.
    pub scope_weight: ScopeWeight,
    /// How fast.
    pub velocity: Velocity,
    /// For how long.
    pub detection_window: DetectionWindow,
    /// `scope_weight.total × velocity.per_minute × detection_window.minutes`.
    pub score: f64,
    /// The product written out.
    pub formula: String,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn weigh(p: &ScopePattern, stage: Stage, catalog: &ActionCatalog) -> WeightedScope {
    let class = pattern_class(p, catalog);
    let stars = wildcards(p);
    let any_action = p.as_str().ends_with(":*");
    let (base, base_why) = match (class, stage) {
        (ActionClass::Read, _) => (READ_WEIGHT, "reads: 1".to_owned()),
        (ActionClass::Write, Stage::Execute) => (WRITE_WEIGHT, "writes at `execute`: 3".into()),
        (ActionClass::Write, Stage::Draft) => (
            READ_WEIGHT,
            "writes, but at `draft` each write waits for a human: 1".into(),
        ),
        (ActionClass::Write, Stage::Observe) if any_action => (
            READ_WEIGHT,
            "at `observe` only its reads are ever issued: 1".into(),
        ),
        (ActionClass::Write, Stage::Observe) => (0, "writes, never issued at `observe`: 0".into()),
    };
    let factor = 1u64.checked_shl(stars.min(32)).unwrap_or(u64::MAX);
    let weight = base.saturating_mul(factor);
    let why = if stars == 0 {
        base_why
    } else {
        format!("{base_why}; × 2^{stars} for {stars} `*` segment(s) = {weight}")
    };
    WeightedScope {
        pattern: p.as_str().to_owned(),
        class,
        wildcards: stars,
        weight,
        why,
    }
}

fn fmt_num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.2}")
    }
}

/// The blast radius of `agent`: each term with its parts, and their product.
pub fn blast_radius(
    agent: &Agent,
    usage: &Usage,
    exposure: &Exposure,
    catalog: &ActionCatalog,
) -> BlastRadius {
    let id = agent.id.as_str();
    // Scope weight.
    let scopes: Vec<WeightedScope> = agent
        .ceiling
        .iter()
        .map(|p| weigh(p, agent.max_stage, catalog))
        .collect();
    let total = scopes
        .iter()
        .map(|w| w.weight)
        .fold(0u64, u64::saturating_add);
    let scope_weight = ScopeWeight {
        total,
        rule: WEIGHT_RULE.to_owned(),
        scopes,
    };

    // Velocity.
    let applies: Vec<&Limit> = exposure
        .limits
        .iter()
        .filter(|l| l.agent == "*" || l.agent == id)
        .collect();
    let limits: Vec<AppliedLimit> = applies
        .iter()
        .map(|l| {
            let binding = match &l.covers {
                None => true,
                Some(c) => agent.ceiling.iter().all(|p| p.is_subset_of(c)),
            };
            let counts = match &l.covers {
                None => "counts every token issued to it".to_owned(),
                Some(c) => format!("counts `{}`", c.as_str()),
            };
            let why = if binding {
                format!("{counts}; covers its whole ceiling, so it bounds the agent")
            } else {
                format!(
                    "{counts}; does not cover its whole ceiling, so it bounds only part of what \
                     it can do"
                )
            };
            AppliedLimit {
                source: l.source.clone(),
                per_minute: l.per_minute,
                binding,
                why,
            }
        })
        .collect();
    let peak = usage.peak(id);
    let binding = limits
        .iter()
        .filter(|l| l.binding)
        .min_by(|a, b| a.per_minute.total_cmp(&b.per_minute));
    let (per_minute, bounded, explanation) = match binding {
        Some(l) => (
            l.per_minute,
            true,
            format!(
                "the tightest limit covering its whole ceiling: `{}`, {} per minute (busiest \
                 minute observed: {peak})",
                l.source,
                fmt_num(l.per_minute)
            ),
        ),
        None => {
            let v = exposure.unbounded_per_minute.max(peak as f64);
            (
                v,
                false,
                format!(
                    "no issuance limit or breaker covers its whole ceiling, so nothing stops it \
                     short of the server's own throughput; counted at {} per minute (the assumed \
                     rate of an unbounded agent, {}, or its busiest observed minute, {peak}, \
                     whichever is higher)",
                    fmt_num(v),
                    fmt_num(exposure.unbounded_per_minute)
                ),
            )
        }
    };
    let velocity = Velocity {
        per_minute,
        bounded,
        limits,
        observed_peak_per_minute: peak,
        explanation,
    };

    // Detection window.
    let (ttl_stage, ttl) = exposure
        .stage_ttl
        .iter()
        .filter(|(stage, _)| **stage <= agent.max_stage)
        .max_by_key(|(_, secs)| **secs)
        .map(|(s, t)| (*s, *t))
        .unwrap_or((agent.max_stage, 0));
    let alerting_limit = applies.iter().find(|l| {
        (l.webhook.is_some() || l.suspends)
            && match &l.covers {
                None => true,
                Some(c) => agent.ceiling.iter().any(|p| p.intersect(c).is_some()),
            }
    });
    let (alerting_secs, alert_why) = match alerting_limit {
        Some(l) => (
            0,
            match (&l.webhook, l.suspends) {
                (Some(_), true) => {
                    format!("`{}` alerts a webhook and suspends the agent", l.source)
                }
                (Some(_), false) => format!("`{}` alerts a webhook when it trips", l.source),
                _ => format!("`{}` suspends the agent when it trips", l.source),
            },
        ),
        None => (
            exposure.unalerted_secs,
            format!(
                "no breaker alerts or suspends for it: misuse is found when someone reads the \
                 audit log, assumed within {} s",
                exposure.unalerted_secs
            ),
        ),
    };
    let seconds = ttl as f64 + exposure.revocation_latency_ms / 1000.0 + alerting_secs as f64;
    let detection_window = DetectionWindow {
        seconds,
        minutes: seconds / 60.0,
        token_ttl_secs: ttl,
        revocation_latency_ms: exposure.revocation_latency_ms,
        alerting_secs,
        explanation: format!(
            "tokens it can hold live up to {ttl} s (stage `{ttl_stage}`, at or below its max \
             stage `{}`), a verifier following the revocation stream refuses a revoked one within \
             {} ms (measured p99), and {alert_why}",
            agent.max_stage, exposure.revocation_latency_ms
        ),
    };
    let score = total as f64 * per_minute * detection_window.minutes;
    let formula = format!(
        "{total} (scope weight) × {} per minute (velocity) × {} min (detection window) = {}",
        fmt_num(per_minute),
        fmt_num(round2(detection_window.minutes)),
        // Whole units: the window's milliseconds of revocation latency are not worth a decimal.
        fmt_num(score.round())
    );
    BlastRadius {
        agent: id.to_owned(),
        scope_weight,
        velocity,
        detection_window,
        score,
        formula,
    }
}

/// The blast radius of every agent that is not retired, largest first.
pub fn blast_radii(
    agents: &[Agent],
    usage: &Usage,
    exposure: &Exposure,
    catalog: &ActionCatalog,
) -> Vec<BlastRadius> {
    let mut v: Vec<BlastRadius> = agents
        .iter()
        .filter(|a| a.status != AgentStatus::Retired)
        .map(|a| blast_radius(a, usage, exposure, catalog))
        .collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.agent.cmp(&b.agent)));
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::ids::AgentId;
    use crate::scope::PatternSet;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn jwk(x: &str, kid: &str) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
    }

    fn key(kid: &str, x: &str, created_at: i64, expires_at: Option<i64>) -> AgentKey {
        AgentKey {
            kid: kid.into(),
            jwk: jwk(x, kid),
            expires_at,
            created_at,
            revoked_at: None,
        }
    }

    /// A well-kept agent: owner, read and justified write scopes, a young expiring key, `draft`.
    fn clean(id: &str) -> Agent {
        Agent {
            id: AgentId::parse(id).unwrap(),
            name: id.into(),
            owner: "carol@example.com".into(),
            description: String::new(),
            ceiling: PatternSet::parse(["crm.customers:read", "tickets:create"]).unwrap(),
            tags: Vec::new(),
            max_stage: Stage::Draft,
            status: AgentStatus::Active,
            keys: vec![key(
                &format!("{id}-k1"),
                &format!("x-{id}"),
                NOW - 40 * DAY,
                Some(NOW + 50 * DAY),
            )],
            workloads: Vec::new(),
            require_dpop: false,
            created_at: NOW - 40 * DAY,
            updated_at: NOW - 40 * DAY,
        }
    }

    fn justified(id: &str, pattern: &str) -> Justification {
        Justification {
            agent: id.into(),
            pattern: pattern.into(),
            text: "creates tickets for customers".into(),
            by: "admin:bootstrap".into(),
            at: NOW - 40 * DAY,
        }
    }

    fn used(id: &str, scopes: &str, at: i64) -> ScopeUse {
        ScopeUse {
            agent: id.into(),
            scopes: scopes.into(),
            last_used: at,
        }
    }

    fn run(
        agents: &[Agent],
        justifications: &[Justification],
        usage: &Usage,
        reviews: &[Review],
    ) -> Vec<Finding> {
        let d = Deployment {
            agents,
            justifications,
            usage,
            reviews,
        };
        findings(&d, &Settings::new(NOW))
    }

    fn clean_world() -> (Vec<Agent>, Vec<Justification>, Usage) {
        let agents = vec![clean("alpha")];
        let justifications = vec![justified("alpha", "tickets:create")];
        let usage = Usage {
            scopes: vec![used(
                "alpha",
                "crm.customers:read tickets:create",
                NOW - DAY,
            )],
            ..Usage::default()
        };
        (agents, justifications, usage)
    }

    fn ids(found: &[Finding]) -> Vec<(Check, &str, &str)> {
        found
            .iter()
            .map(|f| (f.id, f.agent.as_str(), f.subject.as_str()))
            .collect()
    }

    #[test]
    fn a_clean_deployment_has_no_findings() {
        let (agents, justifications, usage) = clean_world();
        assert_eq!(run(&agents, &justifications, &usage, &[]), vec![]);
    }

    #[test]
    fn a_key_without_expiry_is_high() {
        let (mut agents, j, usage) = clean_world();
        agents[0].keys[0].expires_at = None;
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(ids(&f), [(Check::KeyNeverExpires, "alpha", "alpha-k1")]);
        assert_eq!(f[0].severity, Severity::High);
        assert!(
            f[0].fix.contains("mandate agents add-key alpha"),
            "{}",
            f[0].fix
        );
        assert!(
            f[0].fix
                .contains("mandate agents remove-key alpha alpha-k1")
        );
        // A revoked or expired key is not a finding: it proves nothing any more.
        agents[0].keys[0].revoked_at = Some(NOW - 1);
        assert_eq!(run(&agents, &j, &usage, &[]), vec![]);
    }

    #[test]
    fn an_old_key_is_medium_and_the_age_is_configurable() {
        let (mut agents, j, usage) = clean_world();
        agents[0].keys[0].created_at = NOW - 100 * DAY;
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(ids(&f), [(Check::KeyOld, "alpha", "alpha-k1")]);
        assert_eq!(f[0].severity, Severity::Medium);
        assert!(f[0].problem.contains("100 days old"), "{}", f[0].problem);
        let d = Deployment {
            agents: &agents,
            justifications: &j,
            usage: &usage,
            reviews: &[],
        };
        let mut s = Settings::new(NOW);
        s.key_max_age_days = 120;
        assert_eq!(findings(&d, &s), vec![]);
    }

    #[test]
    fn one_public_key_on_two_agents_is_critical_for_both_whatever_the_kid() {
        let (mut agents, mut j, mut usage) = clean_world();
        let mut beta = clean("beta");
        beta.keys[0].jwk = jwk("x-alpha", "beta-k1");
        agents.push(beta);
        j.push(justified("beta", "tickets:create"));
        usage
            .scopes
            .push(used("beta", "crm.customers:read tickets:create", NOW));
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(
            ids(&f),
            [
                (Check::KeyShared, "alpha", "alpha-k1"),
                (Check::KeyShared, "beta", "beta-k1")
            ]
        );
        assert!(f.iter().all(|f| f.severity == Severity::Critical));
        assert!(f[0].problem.contains("`beta`"), "{}", f[0].problem);
        // Padding does not hide a shared key.
        agents[1].keys[0].jwk = jwk("x-alpha==", "beta-k1");
        assert_eq!(run(&agents, &j, &usage, &[]).len(), 2);
        // Two keys of one agent that are the same key are not "shared by several agents".
        agents.pop();
        let again = key("alpha-k2", "x-alpha", NOW - DAY, Some(NOW + DAY));
        agents[0].keys.push(again);
        assert_eq!(run(&agents, &j, &usage, &[]), vec![]);
    }

    #[test]
    fn unused_ceiling_scopes_are_found_after_the_window() {
        let (agents, j, mut usage) = clean_world();
        usage.scopes = vec![
            used("alpha", "crm.customers:read", NOW - 2 * DAY),
            used("alpha", "tickets:create", NOW - 31 * DAY),
        ];
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(ids(&f), [(Check::ScopeUnused, "alpha", "tickets:create")]);
        // Unused writes are medium, unused reads low.
        assert_eq!(f[0].severity, Severity::Medium);
        assert!(f[0].problem.contains("last on"), "{}", f[0].problem);
        assert!(
            f[0].fix
                .contains("mandate agents update alpha --ceiling crm.customers:read"),
            "{}",
            f[0].fix
        );
        // Another agent's use does not count.
        usage.scopes = vec![used("other", "crm.customers:read tickets:create", NOW)];
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(f.len(), 2);
        assert!(f.iter().any(|f| f.severity == Severity::Low));
        assert!(f.iter().all(|f| f.problem.contains("(never)")));
        // An agent younger than the window is not judged yet, nor a suspended one.
        let mut young = agents.clone();
        young[0].created_at = NOW - 10 * DAY;
        assert_eq!(run(&young, &j, &usage, &[]), vec![]);
        let mut off = agents.clone();
        off[0].status = AgentStatus::Suspended;
        assert_eq!(run(&off, &j, &usage, &[]), vec![]);
    }

    #[test]
    fn wildcard_patterns_are_used_through_any_scope_they_grant() {
        let (mut agents, _, mut usage) = clean_world();
        agents[0].ceiling = PatternSet::parse(["crm.*:read"]).unwrap();
        usage.scopes = vec![used("alpha", "crm.invoices:read", NOW - DAY)];
        assert_eq!(run(&agents, &[], &usage, &[]), vec![]);
    }

    #[test]
    fn write_scopes_need_a_justification_and_a_wider_one_covers_narrower_patterns() {
        let (agents, _, usage) = clean_world();
        let f = run(&agents, &[], &usage, &[]);
        assert_eq!(
            ids(&f),
            [(Check::WriteScopeUnjustified, "alpha", "tickets:create")]
        );
        assert!(
            f[0].fix.contains(
                "mandate agents update alpha --justify 'tickets:create=<why alpha needs it>'"
            ),
            "{}",
            f[0].fix
        );
        assert_eq!(
            run(&agents, &[justified("alpha", "tickets:*")], &usage, &[]),
            vec![]
        );
        // A blank text is no justification; another agent's does not count.
        let mut blank = justified("alpha", "tickets:create");
        blank.text = "  ".into();
        assert_eq!(run(&agents, &[blank], &usage, &[]).len(), 1);
        assert_eq!(
            run(&agents, &[justified("beta", "tickets:create")], &usage, &[]).len(),
            1
        );
    }

    #[test]
    fn pattern_classes_follow_actions_wildcards_and_the_catalog() {
        let p = |s: &str| ScopePattern::parse(s).unwrap();
        let none = ActionCatalog::default();
        assert_eq!(pattern_class(&p("crm.*:read"), &none), ActionClass::Read);
        assert_eq!(pattern_class(&p("tickets:*"), &none), ActionClass::Write);
        assert_eq!(pattern_class(&p("email:send"), &none), ActionClass::Write);
        assert_eq!(
            pattern_class(&p("mcp.crm.*:call"), &none),
            ActionClass::Write
        );
        let mut catalog = ActionCatalog::default();
        catalog.0.insert("call".into(), ActionClass::Read);
        catalog
            .0
            .insert("mcp.crm.delete_customer:call".into(), ActionClass::Write);
        catalog
            .0
            .insert("crm.reports:generate".into(), ActionClass::Read);
        assert_eq!(
            pattern_class(&p("mcp.crm.lookup:call"), &catalog),
            ActionClass::Read
        );
        assert_eq!(
            pattern_class(&p("mcp.crm.*:call"), &catalog),
            ActionClass::Write
        );
        assert_eq!(
            pattern_class(&p("mcp.erp.*:call"), &catalog),
            ActionClass::Read
        );
        assert_eq!(
            pattern_class(&p("crm.reports:generate"), &catalog),
            ActionClass::Read
        );
        assert_eq!(wildcards(&p("crm.*:*")), 2);
        assert_eq!(wildcards(&p("crm.customers:read")), 0);
    }

    #[test]
    fn no_owner_and_execute_stage_are_found() {
        let (mut agents, j, usage) = clean_world();
        agents[0].owner = " ".into();
        agents[0].max_stage = Stage::Execute;
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(
            ids(&f),
            [
                (Check::NoOwner, "alpha", "owner"),
                (Check::StageExecute, "alpha", "max_stage")
            ]
        );
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[1].severity, Severity::Medium);
        assert!(f[1].fix.contains("--max-stage draft"));
        // Without a write scope, `execute` is only low.
        agents[0].owner = "carol@example.com".into();
        agents[0].ceiling = PatternSet::parse(["crm.customers:read"]).unwrap();
        let f = run(&agents, &j, &usage, &[]);
        assert_eq!(ids(&f), [(Check::StageExecute, "alpha", "max_stage")]);
        assert_eq!(f[0].severity, Severity::Low);
    }

    fn review(id: &str, agent: &str, due_at: i64) -> Review {
        Review {
            id: id.into(),
            campaign: "rc-1".into(),
            agent: agent.into(),
            owner: "carol@example.com".into(),
            ceiling: vec!["crm.customers:read".into()],
            status: ReviewStatus::Open,
            opened_by: "admin:bootstrap".into(),
            created_at: NOW - 20 * DAY,
            due_at,
            decided_by: None,
            decided_at: None,
            removed: Vec::new(),
            note: None,
        }
    }

    #[test]
    fn an_unanswered_review_past_its_due_date_is_found() {
        let (agents, j, usage) = clean_world();
        let open = review("rv-1", "alpha", NOW + DAY);
        assert_eq!(run(&agents, &j, &usage, &[open]), vec![]);
        let late = review("rv-2", "alpha", NOW - DAY);
        let f = run(&agents, &j, &usage, std::slice::from_ref(&late));
        assert_eq!(ids(&f), [(Check::ReviewOverdue, "alpha", "rv-2")]);
        assert!(
            f[0].fix.contains("mandate review attest rv-2"),
            "{}",
            f[0].fix
        );
        let mut answered = late;
        answered.status = ReviewStatus::Attested;
        assert_eq!(run(&agents, &j, &usage, &[answered]), vec![]);
    }

    #[test]
    fn retired_agents_have_no_findings_and_findings_are_ordered_by_severity() {
        let (mut agents, _, usage) = clean_world();
        agents[0].keys[0].expires_at = None;
        agents[0].max_stage = Stage::Execute;
        let f = run(&agents, &[], &usage, &[]);
        let sev: Vec<Severity> = f.iter().map(|f| f.severity).collect();
        let mut sorted = sev.clone();
        sorted.sort();
        assert_eq!(sev, sorted);
        assert_eq!(f[0].id, Check::KeyNeverExpires);
        agents[0].status = AgentStatus::Retired;
        assert_eq!(run(&agents, &[], &usage, &[]), vec![]);
    }

    #[test]
    fn the_inventory_shows_credentials_scopes_and_their_use() {
        let (agents, j, mut usage) = clean_world();
        usage.credentials = vec![CredentialUse {
            agent: "alpha".into(),
            credential: "alpha-k1".into(),
            last_used: NOW - 5,
        }];
        let d = Deployment {
            agents: &agents,
            justifications: &j,
            usage: &usage,
            reviews: &[],
        };
        let inv = inventory(&d, &Settings::new(NOW));
        assert_eq!(inv.len(), 1);
        let e = &inv[0];
        assert_eq!(e.owner, "carol@example.com");
        assert_eq!(e.ceiling, ["crm.customers:read", "tickets:create"]);
        assert_eq!(e.credentials[0].age_days, 40);
        assert_eq!(e.credentials[0].last_used, Some(NOW - 5));
        assert_eq!(e.credentials[0].expires_at, Some(NOW + 50 * DAY));
        assert!(e.credentials[0].usable);
        assert_eq!(e.scopes[1].class, ActionClass::Write);
        assert_eq!(
            e.scopes[1].justification.as_deref(),
            Some("creates tickets for customers")
        );
        assert_eq!(e.scopes[0].last_used, Some(NOW - DAY));
    }

    fn exposure(limits: Vec<Limit>) -> Exposure {
        Exposure {
            stage_ttl: BTreeMap::from([
                (Stage::Observe, 3600),
                (Stage::Draft, 900),
                (Stage::Execute, 300),
            ]),
            revocation_latency_ms: 6.0,
            unalerted_secs: 3600,
            unbounded_per_minute: 600.0,
            limits,
        }
    }

    #[test]
    fn blast_radius_terms_follow_their_rules_and_multiply() {
        let mut a = clean("alpha");
        a.ceiling = PatternSet::parse(["crm.customers:read", "tickets:*", "email:send"]).unwrap();
        a.max_stage = Stage::Execute;
        let usage = Usage {
            peaks: vec![RatePeak {
                agent: "alpha".into(),
                per_minute: 12,
            }],
            ..Usage::default()
        };
        let b = blast_radius(&a, &usage, &exposure(vec![]), &ActionCatalog::default());
        let w: Vec<u64> = b.scope_weight.scopes.iter().map(|s| s.weight).collect();
        assert_eq!(w, [1, 6, 3]);
        assert_eq!(b.scope_weight.total, 10);
        assert!(!b.velocity.bounded);
        assert_eq!(b.velocity.per_minute, 600.0);
        assert_eq!(b.velocity.observed_peak_per_minute, 12);
        assert_eq!(b.detection_window.token_ttl_secs, 3600);
        assert_eq!(b.detection_window.alerting_secs, 3600);
        assert!((b.detection_window.seconds - 7200.006).abs() < 1e-9);
        let product =
            b.scope_weight.total as f64 * b.velocity.per_minute * b.detection_window.minutes;
        assert!((b.score - product).abs() < 1e-9);
        assert!(
            b.formula.starts_with("10 (scope weight) × 600 per minute"),
            "{}",
            b.formula
        );

        // At `draft`, writes weigh like reads; at `observe`, exact writes weigh nothing.
        a.max_stage = Stage::Draft;
        let d = blast_radius(&a, &usage, &exposure(vec![]), &ActionCatalog::default());
        assert_eq!(d.scope_weight.total, 1 + 2 + 1);
        a.max_stage = Stage::Observe;
        let o = blast_radius(&a, &usage, &exposure(vec![]), &ActionCatalog::default());
        assert_eq!(o.scope_weight.total, 1 + 2);
        assert_eq!(o.detection_window.token_ttl_secs, 3600);
    }

    #[test]
    fn limits_bound_velocity_only_when_they_cover_the_whole_ceiling_and_alerts_shorten_detection() {
        let a = clean("alpha");
        let usage = Usage::default();
        let issuance = Limit {
            source: "limits.issuance_per_agent_per_minute".into(),
            agent: "*".into(),
            covers: None,
            per_minute: 30.0,
            webhook: None,
            suspends: false,
        };
        let partial = Limit {
            source: "breaker:tickets".into(),
            agent: "alpha".into(),
            covers: Some(ScopePattern::parse("tickets:*").unwrap()),
            per_minute: 1.0,
            webhook: Some("https://hooks.example/x".into()),
            suspends: false,
        };
        let elsewhere = Limit {
            source: "breaker:other".into(),
            agent: "beta".into(),
            covers: None,
            per_minute: 0.5,
            webhook: None,
            suspends: true,
        };
        let b = blast_radius(
            &a,
            &usage,
            &exposure(vec![issuance, partial, elsewhere]),
            &ActionCatalog::default(),
        );
        assert_eq!(b.velocity.limits.len(), 2, "{:?}", b.velocity.limits);
        assert!(b.velocity.bounded);
        assert_eq!(b.velocity.per_minute, 30.0);
        assert!(b.velocity.limits[0].binding);
        assert!(!b.velocity.limits[1].binding);
        assert_eq!(b.detection_window.alerting_secs, 0);
        assert!(b.detection_window.explanation.contains("breaker:tickets"));
        let want = b.scope_weight.total as f64 * 30.0 * b.detection_window.minutes;
        assert!((b.score - want).abs() < 1e-9);
    }

    #[test]
    fn blast_radii_skip_retired_agents_and_put_the_largest_first() {
        let small = clean("small");
        let mut big = clean("big");
        big.max_stage = Stage::Execute;
        let mut gone = clean("gone");
        gone.status = AgentStatus::Retired;
        let v = blast_radii(
            &[small, big, gone],
            &Usage::default(),
            &exposure(vec![]),
            &ActionCatalog::default(),
        );
        let names: Vec<&str> = v.iter().map(|b| b.agent.as_str()).collect();
        assert_eq!(names, ["big", "small"]);
    }

    #[test]
    fn severities_and_checks_have_stable_names() {
        for s in [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        for c in Check::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.id()));
        }
        for st in [
            ReviewStatus::Open,
            ReviewStatus::Attested,
            ReviewStatus::Narrowed,
        ] {
            assert_eq!(ReviewStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(
            sh("crm.customers:read,tickets:create"),
            "crm.customers:read,tickets:create"
        );
        assert_eq!(sh("tickets:*"), "'tickets:*'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
