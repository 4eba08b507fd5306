//! Circuit breakers (SPEC §6): per agent and action pattern, a count of forwarded requests over a
//! sliding window that, once it would exceed a maximum, refuses the request and either keeps
//! denying until the window slides (`deny`) or suspends the agent (`suspend`).
//!
//! This module is the pure policy: no clock, no IO. The caller passes the time of each request
//! (milliseconds since the epoch) and acts on the [`Verdict`]: on a [`Trip`] with
//! [`Trip::first`] set it writes the audit event, calls the webhook, and for
//! [`Then::Suspend`] suspends the agent through the revocation path. Only a human resumes a
//! suspended agent; the caller then calls [`Breakers::reset`].
//!
//! # Counting and its approximation
//!
//! Each (rule, agent) pair keeps a ring of per-bucket counts instead of every timestamp, so its
//! memory is fixed (61 counters) whatever the rate. A window of `W` is cut into
//! [`BUCKETS`] buckets of width `w = ⌈W / 60⌉` milliseconds, aligned on the epoch; the count at
//! time `t` sums the bucket holding `t` and the [`BUCKETS`] buckets before it, i.e. every
//! admitted request in `[t − 60·w − (t mod w), t]`. That span is never shorter than `W`, so the
//! approximation only errs on the strict side:
//!
//! * no more than `max` requests are ever let through in **any** exact window of length `W`
//!   (no slack upwards);
//! * a request is remembered up to one bucket (`W / 60`, e.g. 1 minute for `1h`) longer than
//!   `W`, so a `deny` breaker may reopen up to `W / 60` later than an exact sliding log would.
//!
//! Refused requests are not counted, and a request refused by one breaker is counted against
//! none (it was not forwarded). Time that goes backwards (clock skew between callers) is treated
//! as the latest time seen by that (rule, agent) pair.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use mandate_core::ids::{AgentId, IdError};
use mandate_core::scope::{Scope, ScopeError, ScopePattern};
use serde::{Deserialize, Serialize};

/// Buckets per window; the ring holds one more, for the bucket in progress.
pub const BUCKETS: usize = 60;

/// Longest window accepted, in seconds (365 days).
pub const MAX_WINDOW_SECS: u64 = 365 * 86_400;

const RING: usize = BUCKETS + 1;

/// What a breaker does once tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// Refuse requests while the window count is at its maximum; they pass again once the
    /// window slides.
    Deny,
    /// Refuse the request and suspend the agent (its tokens are revoked); refuse until a human
    /// resumes it.
    Suspend,
}

impl Then {
    /// `deny` or `suspend`.
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Deny => "deny",
            Then::Suspend => "suspend",
        }
    }
}

impl fmt::Display for Then {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A breaker rule as written in the gateway configuration, e.g.
/// `{ id = "mail-flood", agent = "*", action = "email:send", max = 50, per = "1h", then = "suspend" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerRule {
    /// The rule's name; the audit reason names it.
    pub id: String,
    /// An agent id, or `*` for every agent (each agent is counted on its own).
    pub agent: String,
    /// A scope pattern such as `email:send`, `email:*` or `crm.*:read`.
    pub action: String,
    /// Most requests allowed in the window; at least 1.
    pub max: u32,
    /// The window: a number and a unit, `30s`, `10m`, `1h` or `1d`.
    pub per: String,
    /// What happens once `max` would be exceeded.
    pub then: Then,
    /// A URL to alert when the breaker trips; `http://` or `https://`.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// Why a breaker rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The id is empty.
    #[error("a breaker has an empty `id`")]
    EmptyId,
    /// Two rules share an id.
    #[error("breaker `{0}` is defined more than once; breaker ids must be unique")]
    DuplicateId(String),
    /// The agent is neither an agent id nor `*`.
    #[error("breaker `{id}`: `agent` must be an agent id or `*`: {source}")]
    Agent {
        /// The rule.
        id: String,
        /// What was wrong with the agent id.
        source: IdError,
    },
    /// The action is not a scope pattern.
    #[error("breaker `{id}`: `action` is not a scope pattern: {source}")]
    Action {
        /// The rule.
        id: String,
        /// What was wrong with the pattern.
        source: ScopeError,
    },
    /// `max` is zero.
    #[error("breaker `{0}`: `max` must be at least 1")]
    ZeroMax(String),
    /// `per` does not parse as a duration.
    #[error("breaker `{id}`: `per` `{per}` is not a duration like `30s`, `10m`, `1h` or `1d`")]
    Per {
        /// The rule.
        id: String,
        /// The value given.
        per: String,
    },
    /// `per` is zero.
    #[error("breaker `{id}`: `per` `{per}` is zero; a window is at least `1s`")]
    ZeroPer {
        /// The rule.
        id: String,
        /// The value given.
        per: String,
    },
    /// `per` is longer than [`MAX_WINDOW_SECS`].
    #[error("breaker `{id}`: `per` `{per}` is longer than `365d`")]
    LongPer {
        /// The rule.
        id: String,
        /// The value given.
        per: String,
    },
    /// The webhook is not an http(s) URL.
    #[error("breaker `{id}`: `webhook` `{url}` is not an `http://` or `https://` URL")]
    Webhook {
        /// The rule.
        id: String,
        /// The value given.
        url: String,
    },
}

/// Parses a window such as `30s`, `10m`, `1h` or `1d` into seconds; `None` if it is not of that
/// form (digits, then one of `s`, `m`, `h`, `d`) or overflows.
pub fn parse_window(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Writes a window in its largest whole unit: `3600` → `1h`, `90` → `90s`.
pub fn format_window(secs: u64) -> String {
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A rule, checked.
#[derive(Debug, Clone)]
struct Rule {
    id: String,
    /// `None` for `*`.
    agent: Option<AgentId>,
    pattern: ScopePattern,
    max: u32,
    window_secs: u64,
    /// Bucket width, milliseconds; at least 1.
    bucket_ms: i64,
    then: Then,
    webhook: Option<String>,
}

impl Rule {
    fn compile(r: BreakerRule) -> Result<Rule, RuleError> {
        if r.id.is_empty() {
            return Err(RuleError::EmptyId);
        }
        let id = r.id;
        let agent = if r.agent == "*" {
            None
        } else {
            match AgentId::parse(&r.agent) {
                Ok(a) => Some(a),
                Err(source) => return Err(RuleError::Agent { id, source }),
            }
        };
        let pattern = match ScopePattern::parse(&r.action) {
            Ok(p) => p,
            Err(source) => return Err(RuleError::Action { id, source }),
        };
        if r.max == 0 {
            return Err(RuleError::ZeroMax(id));
        }
        let per = truncated(&r.per);
        let window_secs = match parse_window(&r.per) {
            None => return Err(RuleError::Per { id, per }),
            Some(0) => return Err(RuleError::ZeroPer { id, per }),
            Some(s) if s > MAX_WINDOW_SECS => return Err(RuleError::LongPer { id, per }),
            Some(s) => s,
        };
        if let Some(url) = &r.webhook {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                return Err(RuleError::Webhook {
                    id,
                    url: truncated(url),
                });
            }
        }
        // window_secs ≤ MAX_WINDOW_SECS, so the product fits an i64 comfortably.
        let window_ms = i64::try_from(window_secs).unwrap_or(i64::MAX / 2_000) * 1_000;
        let bucket_ms = (window_ms + BUCKETS as i64 - 1) / BUCKETS as i64;
        Ok(Rule {
            id,
            agent,
            pattern,
            max: r.max,
            window_secs,
            bucket_ms: bucket_ms.max(1),
            then: r.then,
            webhook: r.webhook,
        })
    }

    fn applies(&self, agent: &str, action: &Scope) -> bool {
        self.agent.as_ref().is_none_or(|a| a.as_str() == agent) && self.pattern.matches(action)
    }
}

/// The counts of one (rule, agent) pair.
#[derive(Debug, Clone)]
struct Window {
    counts: [u32; RING],
    /// Absolute number of the newest bucket (`now_ms / bucket_ms`).
    head: i64,
    /// Sum of `counts`.
    total: u32,
    /// In a streak of refusals (the trip was reported).
    tripped: bool,
    /// For a `suspend` breaker that tripped: the count that tripped it. Refuses until reset.
    latched: Option<u32>,
}

impl Window {
    fn new(head: i64) -> Window {
        Window {
            counts: [0; RING],
            head,
            total: 0,
            tripped: false,
            latched: None,
        }
    }

    fn slot(bucket: i64) -> usize {
        // rem_euclid of a positive modulus is in 0..RING.
        usize::try_from(bucket.rem_euclid(RING as i64)).unwrap_or(0)
    }

    /// Moves the ring forward to `bucket`, dropping buckets that left the window. A bucket at or
    /// before the head (time going backwards) changes nothing.
    fn advance(&mut self, bucket: i64) {
        if bucket <= self.head {
            return;
        }
        if bucket - self.head >= RING as i64 {
            self.counts = [0; RING];
            self.total = 0;
        } else {
            for b in self.head + 1..=bucket {
                let slot = Window::slot(b);
                self.total -= self.counts[slot];
                self.counts[slot] = 0;
            }
        }
        self.head = bucket;
    }

    fn add(&mut self) {
        let slot = Window::slot(self.head);
        self.counts[slot] += 1;
        self.total += 1;
    }

    fn forgettable(&self) -> bool {
        self.total == 0 && self.latched.is_none()
    }
}

/// A breaker that refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// The rule's id: the reason in audit.
    pub rule: String,
    /// Deny, or suspend the agent.
    pub then: Then,
    /// The count this request would have made (or, for a suspended agent, the count that
    /// suspended it).
    pub count: u32,
    /// The rule's maximum.
    pub max: u32,
    /// The rule's window, in seconds.
    pub window_secs: u64,
    /// Where to alert, if configured.
    pub webhook: Option<String>,
    /// Whether this is the first refusal of a streak for this (rule, agent): the caller
    /// suspends, alerts and audits the trip only then.
    pub first: bool,
    /// The agent refused.
    pub agent: String,
    /// The rule's action pattern, as written.
    pub action: String,
}

impl Trip {
    /// A sentence for audit and logs, e.g. "breaker `mail-flood`: 51 `email:send` in 1h by agent
    /// `support-v2` exceeds 50; agent suspended".
    pub fn reason(&self) -> String {
        let outcome = match self.then {
            Then::Deny => "request denied",
            Then::Suspend => "agent suspended",
        };
        format!(
            "breaker `{}`: {} `{}` in {} by agent `{}` exceeds {}; {outcome}",
            self.rule,
            self.count,
            self.action,
            format_window(self.window_secs),
            self.agent,
            self.max,
        )
    }
}

/// What the breakers say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; it has been counted.
    Allow,
    /// Refuse it; it has not been counted.
    Trip(Trip),
}

/// The gateway's circuit breakers and their counts.
#[derive(Debug, Clone)]
pub struct Breakers {
    rules: Vec<Rule>,
    /// agent → rule index → window. Only pairs with something to remember are kept.
    windows: HashMap<String, BTreeMap<usize, Window>>,
}

impl Breakers {
    /// Checks the rules: ids non-empty and unique, agents, patterns, `max`, windows, webhooks.
    pub fn new(rules: Vec<BreakerRule>) -> Result<Breakers, RuleError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for r in rules {
            let rule = Rule::compile(r)?;
            if !seen.insert(rule.id.clone()) {
                return Err(RuleError::DuplicateId(rule.id));
            }
            compiled.push(rule);
        }
        Ok(Breakers {
            rules: compiled,
            windows: HashMap::new(),
        })
    }

    /// Whether no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides on a request by `agent` for `action` at `now_ms` (milliseconds since the epoch),
    /// before it is forwarded. If no matching breaker would exceed its maximum, the request is
    /// counted against every matching rule and allowed; otherwise nothing is counted and the
    /// strictest trip is returned (`suspend` over `deny`, then the smallest rule id).
    pub fn check(&mut self, agent: &str, action: &Scope, now_ms: i64) -> Verdict {
        let matching: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(agent, action))
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            return Verdict::Allow;
        }

        // Advance the windows this request touches; find the trips.
        let mut worst: Option<(usize, u32)> = None;
        if let Some(per_rule) = self.windows.get_mut(agent) {
            for &i in &matching {
                let rule = &self.rules[i];
                let Some(w) = per_rule.get_mut(&i) else {
                    continue;
                };
                w.advance(now_ms.div_euclid(rule.bucket_ms));
                let count = match w.latched {
                    Some(c) => c,
                    None if w.total >= rule.max => w.total.saturating_add(1),
                    None => continue,
                };
                let stricter = match worst {
                    None => true,
                    Some((j, _)) => {
                        let other = &self.rules[j];
                        (rule.then, std::cmp::Reverse(&rule.id))
                            > (other.then, std::cmp::Reverse(&other.id))
                    }
                };
                if stricter {
                    worst = Some((i, count));
                }
            }
        }

        if let Some((i, count)) = worst {
            let rule = &self.rules[i];
            let mut first = true;
            if let Some(w) = self.windows.get_mut(agent).and_then(|m| m.get_mut(&i)) {
                first = !w.tripped;
                w.tripped = true;
                if rule.then == Then::Suspend && w.latched.is_none() {
                    w.latched = Some(count);
                }
            }
            let trip = Trip {
                rule: rule.id.clone(),
                then: rule.then,
                count,
                max: rule.max,
                window_secs: rule.window_secs,
                webhook: rule.webhook.clone(),
                first,
                agent: agent.to_owned(),
                action: rule.pattern.as_str().to_owned(),
            };
            self.forget_empty(agent);
            return Verdict::Trip(trip);
        }

        // Allowed: count it everywhere it matches; a streak of refusals ends.
        let per_rule = self.windows.entry(agent.to_owned()).or_default();
        for &i in &matching {
            let bucket = now_ms.div_euclid(self.rules[i].bucket_ms);
            let w = per_rule.entry(i).or_insert_with(|| Window::new(bucket));
            w.advance(bucket);
            w.add();
            w.tripped = false;
        }
        Verdict::Allow
    }

    /// Forgets the counts of `agent` under `suspend` breakers, lifting a suspension latch: called
    /// when a human resumes the agent. `deny` breakers keep counting: they are rate limits, and a
    /// resume does not make the last hour's requests disappear.
    pub fn reset(&mut self, agent: &str) {
        if let Some(per_rule) = self.windows.get_mut(agent) {
            per_rule.retain(|&i, _| self.rules[i].then != Then::Suspend);
        }
        self.forget_empty(agent);
    }

    /// Whether a `suspend` breaker has tripped for `agent` and not been reset since.
    pub fn is_suspended(&self, agent: &str) -> bool {
        self.windows
            .get(agent)
            .is_some_and(|m| m.values().any(|w| w.latched.is_some()))
    }

    /// Drops every window that is empty at `now_ms` (and not holding a suspension), so agents
    /// that stopped calling cost no memory. [`Breakers::check`] already drops the windows it
    /// sees empty; this sweeps the rest.
    pub fn prune(&mut self, now_ms: i64) {
        let rules = &self.rules;
        self.windows.retain(|_, per_rule| {
            per_rule.retain(|&i, w| {
                w.advance(now_ms.div_euclid(rules[i].bucket_ms));
                !w.forgettable()
            });
            !per_rule.is_empty()
        });
    }

    /// How many (rule, agent) windows are held in memory.
    pub fn windows_held(&self) -> usize {
        self.windows.values().map(BTreeMap::len).sum()
    }

    fn forget_empty(&mut self, agent: &str) {
        if let Some(per_rule) = self.windows.get_mut(agent) {
            per_rule.retain(|_, w| !w.forgettable());
            if per_rule.is_empty() {
                self.windows.remove(agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const SEC: i64 = 1_000;
    const T0: i64 = 1_700_000_000_000;

    fn rule(id: &str, agent: &str, action: &str, max: u32, per: &str, then: Then) -> BreakerRule {
        BreakerRule {
            id: id.to_owned(),
            agent: agent.to_owned(),
            action: action.to_owned(),
            max,
            per: per.to_owned(),
            then,
            webhook: None,
        }
    }

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    fn trip(v: Verdict) -> Trip {
        match v {
            Verdict::Trip(t) => t,
            Verdict::Allow => panic!("expected a trip"),
        }
    }

    fn err(r: BreakerRule) -> String {
        Breakers::new(vec![r]).unwrap_err().to_string()
    }

    #[test]
    fn allows_exactly_max_then_trips() {
        let mut b =
            Breakers::new(vec![rule("mail", "a", "email:send", 3, "1h", Then::Deny)]).unwrap();
        let send = scope("email:send");
        for i in 0..3 {
            assert_eq!(b.check("a", &send, T0 + i), Verdict::Allow, "request {i}");
        }
        let t = trip(b.check("a", &send, T0 + 3));
        assert_eq!(t.rule, "mail");
        assert_eq!(t.then, Then::Deny);
        assert_eq!((t.count, t.max, t.window_secs), (4, 3, 3_600));
        assert!(t.first);
        // Refused requests are not counted: the count stays at max + 1.
        assert_eq!(trip(b.check("a", &send, T0 + 4)).count, 4);
    }

    #[test]
    fn first_is_true_once_per_streak() {
        let mut b =
            Breakers::new(vec![rule("mail", "a", "email:send", 1, "1m", Then::Deny)]).unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("a", &send, T0), Verdict::Allow);
        let firsts: Vec<bool> = (1..=5)
            .map(|i| trip(b.check("a", &send, T0 + i * SEC)).first)
            .collect();
        assert_eq!(firsts, [true, false, false, false, false]);
        // The window slides, a request passes, the streak ends; the next trip is a new streak.
        assert_eq!(b.check("a", &send, T0 + 70 * SEC), Verdict::Allow);
        assert!(trip(b.check("a", &send, T0 + 71 * SEC)).first);
        assert!(!trip(b.check("a", &send, T0 + 72 * SEC)).first);
    }

    #[test]
    fn deny_reopens_after_the_window_slides() {
        // 60 s window: buckets of 1 s; a request is remembered between 60 s and 61 s.
        let mut b =
            Breakers::new(vec![rule("r", "a", "tickets:create", 2, "60s", Then::Deny)]).unwrap();
        let create = scope("tickets:create");
        let start = T0 - T0.rem_euclid(SEC); // aligned on a bucket
        assert_eq!(b.check("a", &create, start), Verdict::Allow);
        assert_eq!(b.check("a", &create, start + 30 * SEC), Verdict::Allow);
        assert!(matches!(
            b.check("a", &create, start + 59 * SEC),
            Verdict::Trip(_)
        ));
        assert!(matches!(
            b.check("a", &create, start + 60 * SEC),
            Verdict::Trip(_)
        ));
        // The first request leaves the window; one slot frees, the second still counts.
        assert_eq!(b.check("a", &create, start + 61 * SEC), Verdict::Allow);
        assert!(matches!(
            b.check("a", &create, start + 62 * SEC),
            Verdict::Trip(_)
        ));
        // Long after, the window is empty: max requests pass again.
        assert_eq!(b.check("a", &create, start + 600 * SEC), Verdict::Allow);
        assert_eq!(b.check("a", &create, start + 600 * SEC), Verdict::Allow);
        assert!(matches!(
            b.check("a", &create, start + 600 * SEC),
            Verdict::Trip(_)
        ));
    }

    #[test]
    fn suspend_is_strictest_when_two_rules_trip() {
        let mut b = Breakers::new(vec![
            rule("a-deny", "*", "email:*", 1, "1h", Then::Deny),
            rule("z-suspend", "*", "email:send", 1, "1h", Then::Suspend),
        ])
        .unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("bot", &send, T0), Verdict::Allow);
        let t = trip(b.check("bot", &send, T0 + 1));
        assert_eq!(
            (t.rule.as_str(), t.then, t.first),
            ("z-suspend", Then::Suspend, true)
        );
        assert!(b.is_suspended("bot"));
        // Only the deny rule matches `email:draft`: it trips alone.
        let t = trip(b.check("bot", &scope("email:draft"), T0 + 2));
        assert_eq!((t.rule.as_str(), t.then), ("a-deny", Then::Deny));
    }

    #[test]
    fn equal_trips_break_by_smallest_rule_id() {
        let mut b = Breakers::new(vec![
            rule("c", "*", "email:send", 1, "1h", Then::Deny),
            rule("b", "*", "email:*", 1, "1h", Then::Deny),
            rule("d", "x", "email:send", 1, "1h", Then::Deny),
        ])
        .unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("x", &send, T0), Verdict::Allow);
        for i in 1..5 {
            assert_eq!(trip(b.check("x", &send, T0 + i)).rule, "b");
        }
    }

    #[test]
    fn other_agents_and_other_actions_do_not_count() {
        let mut b = Breakers::new(vec![rule("r", "a", "crm.*:read", 2, "1h", Then::Deny)]).unwrap();
        let read = scope("crm.customers:read");
        for i in 0..10 {
            assert_eq!(b.check("b", &read, T0 + i), Verdict::Allow);
            assert_eq!(
                b.check("a", &scope("crm.customers:write"), T0 + i),
                Verdict::Allow
            );
            assert_eq!(b.check("a", &scope("crm:read"), T0 + i), Verdict::Allow);
            assert_eq!(
                b.check("a", &scope("erp.orders:read"), T0 + i),
                Verdict::Allow
            );
        }
        assert_eq!(b.windows_held(), 0, "nothing matched, nothing is held");
        assert_eq!(b.check("a", &read, T0 + 20), Verdict::Allow);
        assert_eq!(
            b.check("a", &scope("crm.tickets:read"), T0 + 21),
            Verdict::Allow
        );
        assert!(matches!(b.check("a", &read, T0 + 22), Verdict::Trip(_)));
    }

    #[test]
    fn star_agent_counts_each_agent_on_its_own() {
        let mut b = Breakers::new(vec![rule("r", "*", "email:send", 2, "1h", Then::Deny)]).unwrap();
        let send = scope("email:send");
        for agent in ["a", "b", "c"] {
            assert_eq!(b.check(agent, &send, T0), Verdict::Allow);
            assert_eq!(b.check(agent, &send, T0), Verdict::Allow);
        }
        for agent in ["a", "b", "c"] {
            let t = trip(b.check(agent, &send, T0));
            assert_eq!((t.agent.as_str(), t.first), (agent, true));
        }
        assert_eq!(b.windows_held(), 3);
    }

    #[test]
    fn suspend_holds_until_reset_then_counts_from_zero() {
        let mut b =
            Breakers::new(vec![rule("s", "a", "email:send", 2, "1m", Then::Suspend)]).unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("a", &send, T0), Verdict::Allow);
        assert_eq!(b.check("a", &send, T0 + 1), Verdict::Allow);
        let t = trip(b.check("a", &send, T0 + 2));
        assert!(t.first && t.then == Then::Suspend && t.count == 3);
        // The window slides, but a suspension is lifted only by a human.
        let later = trip(b.check("a", &send, T0 + 3_600 * SEC));
        assert!(!later.first);
        assert_eq!(later.count, 3, "the count that suspended the agent");
        b.prune(T0 + 7_200 * SEC);
        assert!(b.is_suspended("a"), "prune keeps a suspension");
        b.reset("a");
        assert!(!b.is_suspended("a"));
        assert_eq!(b.windows_held(), 0);
        // Counts start from zero, even within the old window.
        let now = T0 + 3_601 * SEC;
        assert_eq!(b.check("a", &send, now), Verdict::Allow);
        assert_eq!(b.check("a", &send, now), Verdict::Allow);
        assert!(
            trip(b.check("a", &send, now)).first,
            "a new streak after a resume"
        );
    }

    #[test]
    fn reset_keeps_deny_counts_and_other_agents() {
        let mut b = Breakers::new(vec![
            rule("d", "*", "tickets:create", 1, "1h", Then::Deny),
            rule("s", "*", "email:send", 1, "1h", Then::Suspend),
        ])
        .unwrap();
        let (create, send) = (scope("tickets:create"), scope("email:send"));
        for agent in ["a", "b"] {
            assert_eq!(b.check(agent, &create, T0), Verdict::Allow);
            assert_eq!(b.check(agent, &send, T0), Verdict::Allow);
            assert!(matches!(b.check(agent, &send, T0), Verdict::Trip(_)));
        }
        b.reset("a");
        assert_eq!(b.check("a", &send, T0 + 1), Verdict::Allow);
        assert_eq!(trip(b.check("a", &create, T0 + 1)).rule, "d");
        assert!(b.is_suspended("b"));
        assert_eq!(trip(b.check("b", &send, T0 + 1)).rule, "s");
    }

    #[test]
    fn a_refused_request_counts_against_no_rule() {
        let mut b = Breakers::new(vec![
            rule("tight", "a", "email:send", 1, "1h", Then::Deny),
            rule("loose", "a", "email:*", 3, "1h", Then::Deny),
        ])
        .unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("a", &send, T0), Verdict::Allow);
        for i in 1..10 {
            assert_eq!(trip(b.check("a", &send, T0 + i)).rule, "tight");
        }
        // `loose` saw one request only: two more `email:*` pass.
        assert_eq!(b.check("a", &scope("email:draft"), T0 + 20), Verdict::Allow);
        assert_eq!(b.check("a", &scope("email:draft"), T0 + 21), Verdict::Allow);
        assert_eq!(
            trip(b.check("a", &scope("email:draft"), T0 + 22)).rule,
            "loose"
        );
    }

    #[test]
    fn trip_carries_the_webhook_and_reads_well() {
        let mut r = rule(
            "mail-flood",
            "support-v2",
            "email:send",
            50,
            "1h",
            Then::Suspend,
        );
        r.webhook = Some("https://hooks.example.com/mandate".to_owned());
        let mut b = Breakers::new(vec![r]).unwrap();
        let send = scope("email:send");
        for i in 0..50 {
            assert_eq!(b.check("support-v2", &send, T0 + i * SEC), Verdict::Allow);
        }
        let t = trip(b.check("support-v2", &send, T0 + 50 * SEC));
        assert_eq!(
            t.webhook.as_deref(),
            Some("https://hooks.example.com/mandate")
        );
        assert_eq!(
            t.reason(),
            "breaker `mail-flood`: 51 `email:send` in 1h by agent `support-v2` exceeds 50; agent suspended"
        );
        let deny = Trip {
            then: Then::Deny,
            window_secs: 90,
            ..t
        };
        assert_eq!(
            deny.reason(),
            "breaker `mail-flood`: 51 `email:send` in 90s by agent `support-v2` exceeds 50; request denied"
        );
    }

    #[test]
    fn windows_parse_and_format() {
        assert_eq!(parse_window("30s"), Some(30));
        assert_eq!(parse_window("10m"), Some(600));
        assert_eq!(parse_window("1h"), Some(3_600));
        assert_eq!(parse_window("1d"), Some(86_400));
        assert_eq!(parse_window("007s"), Some(7));
        assert_eq!(parse_window("0s"), Some(0));
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "1.5h",
            "-1h",
            "+1h",
            " 1h",
            "1h ",
            "1H",
            "1hh",
            "1é",
            "é",
            "99999999999999999999d",
            "18446744073709551615d",
        ] {
            assert_eq!(parse_window(bad), None, "{bad:?}");
        }
        assert_eq!(format_window(3_600), "1h");
        assert_eq!(format_window(7_200), "2h");
        assert_eq!(format_window(86_400), "1d");
        assert_eq!(format_window(600), "10m");
        assert_eq!(format_window(90), "90s");
        assert_eq!(format_window(0), "0s");
    }

    #[test]
    fn every_rule_error_reads_well() {
        let ok = || {
            rule(
                "mail-flood",
                "support-v2",
                "email:send",
                50,
                "1h",
                Then::Deny,
            )
        };
        assert_eq!(
            err(BreakerRule {
                id: String::new(),
                ..ok()
            }),
            "a breaker has an empty `id`"
        );
        assert_eq!(
            Breakers::new(vec![ok(), ok()]).unwrap_err().to_string(),
            "breaker `mail-flood` is defined more than once; breaker ids must be unique"
        );
        assert_eq!(
            err(BreakerRule {
                agent: "Bad Agent".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `agent` must be an agent id or `*`: agent id `Bad Agent` must \
             be 1–64 characters of `a-z`, `0-9`, `-`, `_` or `.`, starting with a letter or digit"
        );
        assert_eq!(
            err(BreakerRule {
                action: "email".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `action` is not a scope pattern: scope `email` is not of the \
             form `<resource>:<action>`"
        );
        assert_eq!(
            err(BreakerRule {
                action: "email:Send".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `action` is not a scope pattern: scope `email:Send` has an \
             empty segment or a character outside `a-z`, `0-9`, `_` and `-`"
        );
        assert_eq!(
            err(BreakerRule { max: 0, ..ok() }),
            "breaker `mail-flood`: `max` must be at least 1"
        );
        assert_eq!(
            err(BreakerRule {
                per: "5x".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `per` `5x` is not a duration like `30s`, `10m`, `1h` or `1d`"
        );
        assert_eq!(
            err(BreakerRule {
                per: "0m".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `per` `0m` is zero; a window is at least `1s`"
        );
        assert_eq!(
            err(BreakerRule {
                per: "366d".to_owned(),
                ..ok()
            }),
            "breaker `mail-flood`: `per` `366d` is longer than `365d`"
        );
        for url in ["ftp://x", "hooks.example.com", "https://", "http:///path"] {
            assert_eq!(
                err(BreakerRule {
                    webhook: Some(url.to_owned()),
                    ..ok()
                }),
                format!(
                    "breaker `mail-flood`: `webhook` `{url}` is not an `http://` or `https://` URL"
                )
            );
        }
        // The accepted edges.
        assert!(
            Breakers::new(vec![BreakerRule {
                per: "365d".to_owned(),
                max: 1,
                ..ok()
            }])
            .is_ok()
        );
        assert!(
            Breakers::new(vec![BreakerRule {
                per: "1s".to_owned(),
                ..ok()
            }])
            .is_ok()
        );
        assert!(
            Breakers::new(vec![BreakerRule {
                agent: "*".to_owned(),
                action: "*:*".to_owned(),
                webhook: Some("http://localhost:9000/hook".to_owned()),
                ..ok()
            }])
            .is_ok()
        );
        assert!(Breakers::new(vec![]).unwrap().is_empty());
    }

    #[test]
    fn rules_deserialize_from_config() {
        let rules: Vec<BreakerRule> = serde_json::from_str(
            r#"[{"id": "mail-flood", "agent": "*", "action": "email:send", "max": 50,
                 "per": "1h", "then": "suspend", "webhook": "https://hooks.example.com/m"},
                {"id": "reads", "agent": "support-v2", "action": "crm.*:read", "max": 1000,
                 "per": "10m", "then": "deny"}]"#,
        )
        .unwrap();
        assert_eq!(rules[0].then, Then::Suspend);
        assert_eq!(rules[1].webhook, None);
        let b = Breakers::new(rules).unwrap();
        assert!(!b.is_empty());

        let unknown = serde_json::from_str::<BreakerRule>(
            r#"{"id": "x", "agent": "*", "action": "a:b", "max": 1, "per": "1h", "then": "deny",
                "limit": 3}"#,
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `limit`"),
            "{unknown}"
        );
        let then = serde_json::from_str::<BreakerRule>(
            r#"{"id": "x", "agent": "*", "action": "a:b", "max": 1, "per": "1h", "then": "block"}"#,
        )
        .unwrap_err();
        assert!(
            then.to_string().contains("unknown variant `block`"),
            "{then}"
        );
    }

    #[test]
    fn empty_windows_are_forgotten() {
        let mut b = Breakers::new(vec![
            rule("r", "*", "email:*", 5, "1m", Then::Deny),
            rule("s", "*", "email:send", 5, "10s", Then::Deny),
        ])
        .unwrap();
        for i in 0..100 {
            assert_eq!(
                b.check(&format!("agent-{i}"), &scope("email:send"), T0),
                Verdict::Allow
            );
        }
        assert_eq!(b.windows_held(), 200);
        // An allowed check counts in the windows it matches; it keeps them.
        assert_eq!(
            b.check("agent-0", &scope("email:draft"), T0 + 30 * SEC),
            Verdict::Allow
        );
        assert_eq!(b.windows_held(), 200);
        b.prune(T0 + 30 * SEC);
        assert_eq!(
            b.windows_held(),
            100,
            "the 10 s windows are gone, the 1 m ones stay"
        );
        b.prune(T0 + 3_600 * SEC);
        assert_eq!(b.windows_held(), 0);
        assert!(b.windows.is_empty());
    }

    #[test]
    fn a_trip_check_drops_windows_it_sees_empty() {
        let mut b = Breakers::new(vec![
            rule("long", "a", "email:*", 1, "1h", Then::Deny),
            rule("short", "a", "email:send", 5, "1s", Then::Deny),
        ])
        .unwrap();
        assert_eq!(b.check("a", &scope("email:send"), T0), Verdict::Allow);
        assert_eq!(b.windows_held(), 2);
        assert!(matches!(
            b.check("a", &scope("email:send"), T0 + 10 * SEC),
            Verdict::Trip(_)
        ));
        assert_eq!(b.windows_held(), 1);
    }

    #[test]
    fn time_going_backwards_counts_in_the_latest_bucket() {
        let mut b = Breakers::new(vec![rule("r", "a", "email:send", 2, "1m", Then::Deny)]).unwrap();
        let send = scope("email:send");
        assert_eq!(b.check("a", &send, T0 + 60 * SEC), Verdict::Allow);
        assert_eq!(b.check("a", &send, T0), Verdict::Allow);
        assert!(matches!(
            b.check("a", &send, T0 - 3_600 * SEC),
            Verdict::Trip(_)
        ));
        // Both requests are remembered from the latest time: they leave together.
        assert!(matches!(
            b.check("a", &send, T0 + 119 * SEC),
            Verdict::Trip(_)
        ));
        assert_eq!(b.check("a", &send, T0 + 122 * SEC), Verdict::Allow);
        // Negative times (before 1970) do not break the ring.
        let mut b = Breakers::new(vec![rule("r", "a", "email:send", 1, "1m", Then::Deny)]).unwrap();
        assert_eq!(b.check("a", &send, -5), Verdict::Allow);
        assert!(matches!(b.check("a", &send, 5), Verdict::Trip(_)));
    }

    /// 10,000 requests at pseudo-random times (bursts and pauses) from two agents on a few
    /// actions, against three overlapping rules. For every rule, checked against an exact log:
    /// * never more than `max` admitted matching requests in any window of exactly `W` — the
    ///   bucket approximation has no upward slack;
    /// * a refusal by a rule at `t` is justified by at least `max` admitted matching requests in
    ///   `(t − 61·w, t]` where `w = ⌈W/60⌉` — the approximation's only slack, one bucket
    ///   (plus rounding), is in the strict direction.
    #[test]
    fn lcg_never_lets_more_than_max_through_any_window() {
        let specs = [
            ("burst", "*", "email:*", 7_u32, "10s", Then::Deny),
            ("send", "a", "email:send", 3, "2s", Then::Deny),
            ("reads", "*", "crm.*:read", 20, "1m", Then::Deny),
        ];
        let mut b = Breakers::new(
            specs
                .iter()
                .map(|&(id, agent, action, max, per, then)| rule(id, agent, action, max, per, then))
                .collect(),
        )
        .unwrap();
        let actions = [
            scope("email:send"),
            scope("email:draft"),
            scope("crm.customers:read"),
            scope("crm.tickets:read"),
            scope("tickets:create"),
        ];
        let agents = ["a", "b"];

        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut now = T0;
        // (time, agent, action index, verdict)
        let mut log: Vec<(i64, &str, usize, Verdict)> = Vec::new();
        let (mut allowed, mut refused) = (0, 0);
        for _ in 0..10_000 {
            now += match next() % 100 {
                0..=59 => (next() % 50) as i64,     // bursts
                60..=94 => (next() % 2_000) as i64, // steady
                _ => (next() % 40_000) as i64,      // pauses
            };
            let agent = agents[(next() % 2) as usize];
            let a = (next() % actions.len() as u64) as usize;
            let v = b.check(agent, &actions[a], now);
            match &v {
                Verdict::Allow => allowed += 1,
                Verdict::Trip(t) => {
                    assert_eq!(t.agent, agent);
                    refused += 1
                }
            }
            log.push((now, agent, a, v));
        }
        assert!(
            allowed > 1_000 && refused > 100,
            "{allowed} allowed, {refused} refused"
        );

        for &(id, rule_agent, action, max, per, _) in &specs {
            let pattern = ScopePattern::parse(action).unwrap();
            let w_ms = parse_window(per).unwrap() as i64 * 1_000;
            let bucket = (w_ms + 59) / 60;
            for agent in agents {
                if rule_agent != "*" && rule_agent != agent {
                    continue;
                }
                let admitted: Vec<i64> = log
                    .iter()
                    .filter(|(_, ag, a, v)| {
                        *ag == agent && pattern.matches(&actions[*a]) && *v == Verdict::Allow
                    })
                    .map(|(t, ..)| *t)
                    .collect();
                let in_span = |from_excl: i64, to_incl: i64| {
                    admitted
                        .iter()
                        .filter(|&&t| t > from_excl && t <= to_incl)
                        .count()
                };
                for &t in &admitted {
                    let n = in_span(t - w_ms, t);
                    assert!(
                        n <= max as usize,
                        "{id}/{agent}: {n} admitted in ({}, {t}]",
                        t - w_ms
                    );
                }
                for (t, ag, _, v) in &log {
                    if let Verdict::Trip(trip) = v
                        && *ag == agent
                        && trip.rule == id
                    {
                        let n = in_span(t - 61 * bucket, *t);
                        assert!(n >= max as usize, "{id}/{agent}: refused at {t} with {n}");
                    }
                }
            }
        }
    }
}
