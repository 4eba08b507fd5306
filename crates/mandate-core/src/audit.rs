//! Audit events and their hash chain (SPEC §7).
//!
//! Each event's `hash` is SHA-256 over its canonical form, which includes the previous event's
//! hash: altering, removing or reordering a row breaks every link after it, and
//! [`verify_chain`] names the first `seq` where the chain no longer holds.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{self, Checkpoint, CheckpointFinding, LogFacts};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outcome an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Something was allowed (a token issued, a request forwarded).
    Allow,
    /// Something was refused.
    Deny,
    /// A change or a fact (an agent registered, a key rotated, a revocation).
    Info,
}

impl Decision {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Info => "info",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "allow" => Some(Decision::Allow),
            "deny" => Some(Decision::Deny),
            "info" => Some(Decision::Info),
            _ => None,
        }
    }
}

/// An event before it is appended: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NewEvent {
    /// What happened, e.g. `token.exchange`, `agent.register`, `revocation`.
    pub kind: String,
    /// The user's subject, when a user is involved.
    pub user: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The task.
    pub task: Option<String>,
    /// The action (a scope, or an admin operation).
    pub action: Option<String>,
    /// What the action is on (an audience, a record, an agent).
    pub resource: Option<String>,
    /// `allow`, `deny` or `info`; absent means `info`.
    pub decision: Option<Decision>,
    /// Why, in words (a denial's reason, a revocation's cause).
    pub reason: String,
    /// The policies or rules that decided.
    pub policy_ids: Vec<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// The credential that proved the current actor.
    pub credential: Option<String>,
    /// The token the event is about (its `jti`, never the token).
    pub jti: Option<String>,
    /// Further facts as a JSON object, kept as text so its hash is stable.
    pub detail: String,
}

/// An appended event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    /// What happened.
    pub kind: String,
    /// The user's subject.
    pub user: Option<String>,
    /// Agent ids, earliest first.
    pub chain: Vec<String>,
    /// The task.
    pub task: Option<String>,
    /// The action.
    pub action: Option<String>,
    /// The resource.
    pub resource: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// Why.
    pub reason: String,
    /// Deciding policies.
    pub policy_ids: Vec<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The credential of the current actor.
    pub credential: Option<String>,
    /// The token's `jti`.
    pub jti: Option<String>,
    /// Further facts (JSON object text).
    pub detail: String,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// SHA-256 of this event's canonical form.
    pub hash: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    time: &'a str,
    kind: &'a str,
    user: &'a Option<String>,
    chain: &'a [String],
    task: &'a Option<String>,
    action: &'a Option<String>,
    resource: &'a Option<String>,
    decision: Decision,
    reason: &'a str,
    policy_ids: &'a [String],
    request_id: &'a Option<String>,
    credential: &'a Option<String>,
    jti: &'a Option<String>,
    detail: &'a str,
    prev_hash: &'a str,
}

impl AuditEvent {
    /// Places `new` in the chain after `prev_hash`, at `seq`, and computes its hash.
    pub fn seal(new: NewEvent, seq: i64, time: String, prev_hash: String) -> AuditEvent {
        let mut e = AuditEvent {
            seq,
            time,
            kind: new.kind,
            user: new.user,
            chain: new.chain,
            task: new.task,
            action: new.action,
            resource: new.resource,
            decision: new.decision.unwrap_or(Decision::Info),
            reason: new.reason,
            policy_ids: new.policy_ids,
            request_id: new.request_id,
            credential: new.credential,
            jti: new.jti,
            detail: if new.detail.is_empty() {
                "{}".to_owned()
            } else {
                new.detail
            },
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    /// SHA-256 (hex) of the canonical form: fields in a fixed order, `hash` left out.
    pub fn compute_hash(&self) -> String {
        let c = Canonical {
            seq: self.seq,
            time: &self.time,
            kind: &self.kind,
            user: &self.user,
            chain: &self.chain,
            task: &self.task,
            action: &self.action,
            resource: &self.resource,
            decision: self.decision,
            reason: &self.reason,
            policy_ids: &self.policy_ids,
            request_id: &self.request_id,
            credential: &self.credential,
            jti: &self.jti,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        };
        // Serializing a struct of strings, slices and a unit enum cannot fail.
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// The one-line form: `time user:alice via agent:support-v2 task:t action resource decision`.
    pub fn line(&self) -> String {
        let mut parts = vec![self.time.clone()];
        match &self.user {
            Some(u) => parts.push(format!("user:{u}")),
            None => parts.push("-".to_owned()),
        }
        if !self.chain.is_empty() {
            let via: Vec<String> = self.chain.iter().map(|a| format!("agent:{a}")).collect();
            parts.push(format!("via {}", via.join(" > ")));
        }
        if let Some(t) = &self.task {
            parts.push(format!("task:{t}"));
        }
        parts.push(self.kind.clone());
        if let Some(a) = &self.action {
            parts.push(a.clone());
        }
        if let Some(r) = &self.resource {
            parts.push(r.clone());
        }
        parts.push(self.decision.as_str().to_owned());
        if !self.reason.is_empty() && self.decision == Decision::Deny {
            parts.push(format!("({})", self.reason));
        }
        parts.join(" ")
    }
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The first `seq` that does not verify.
    pub seq: i64,
    /// What is wrong there.
    pub problem: String,
}

/// The result of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Events checked.
    pub checked: u64,
    /// The last good hash (the chain head when intact).
    pub head: String,
    /// The first break, if any.
    pub first_break: Option<ChainBreak>,
    /// Checkpoints compared with the log (those whose signatures verified).
    pub checkpoints_checked: u64,
    /// What the checkpoints show to be wrong: a cut tail, a missing or rewritten event (and,
    /// added by the caller, checkpoints whose signatures do not verify).
    pub checkpoint_findings: Vec<CheckpointFinding>,
}

impl ChainReport {
    /// Whether the chain holds and no checkpoint contradicts it.
    pub fn is_ok(&self) -> bool {
        self.first_break.is_none() && self.checkpoint_findings.is_empty()
    }
}

/// Checks a chain event by event, so a long log can be walked page by page.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev: String,
    expected_seq: i64,
    checked: u64,
    first_break: Option<ChainBreak>,
    checkpoints: Vec<Checkpoint>,
    facts: LogFacts,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            prev: GENESIS_HASH.to_owned(),
            expected_seq: 1,
            checked: 0,
            first_break: None,
            checkpoints: Vec::new(),
            facts: LogFacts::default(),
        }
    }
}

impl ChainVerifier {
    /// A verifier that also compares the log with `checkpoints`, whose signatures the caller
    /// has already checked. Feed it the whole log, even past a break, so that it learns where
    /// the log ends and what it holds at each checkpointed `seq`.
    pub fn with_checkpoints(checkpoints: Vec<Checkpoint>) -> ChainVerifier {
        ChainVerifier {
            checkpoints,
            ..ChainVerifier::default()
        }
    }

    /// A verifier for a log whose events through `seq` were archived (audit retention): the
    /// first event it is fed must be `seq + 1` and link to `hash`, the archived segment's last
    /// hash. `checkpoints` are those of events after `seq`, signatures already checked.
    pub fn after_anchor(seq: i64, hash: String, checkpoints: Vec<Checkpoint>) -> ChainVerifier {
        ChainVerifier {
            prev: hash,
            expected_seq: seq.saturating_add(1),
            checkpoints,
            facts: LogFacts {
                last_seq: seq,
                ..LogFacts::default()
            },
            ..ChainVerifier::default()
        }
    }

    /// Checks the next event. After the first break, further events only tell where the log
    /// ends and what it holds at checkpointed places.
    pub fn push(&mut self, e: &AuditEvent) {
        self.facts.last_seq = self.facts.last_seq.max(e.seq);
        if self.checkpoints.iter().any(|c| c.seq == e.seq) {
            self.facts
                .hashes
                .entry(e.seq)
                .or_insert_with(|| e.hash.clone());
        }
        if self.first_break.is_some() {
            return;
        }
        let problem = if e.seq != self.expected_seq {
            Some(format!(
                "expected seq {}, found {}: events missing or reordered",
                self.expected_seq, e.seq
            ))
        } else if e.prev_hash != self.prev {
            Some("prev_hash does not match the previous event's hash: an event before it was removed or replaced".to_owned())
        } else if e.compute_hash() != e.hash {
            Some("hash does not match the event's content: the event was altered".to_owned())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.first_break = Some(ChainBreak {
                    seq: self.expected_seq.min(e.seq),
                    problem,
                })
            }
            None => {
                self.prev = e.hash.clone();
                self.expected_seq += 1;
                self.checked += 1;
            }
        }
    }

    /// Whether a break was found.
    pub fn is_broken(&self) -> bool {
        self.first_break.is_some()
    }

    /// The result so far.
    pub fn report(self) -> ChainReport {
        ChainReport {
            checked: self.checked,
            head: self.prev,
            first_break: self.first_break,
            checkpoints_checked: self.checkpoints.len() as u64,
            checkpoint_findings: checkpoint::check(&self.checkpoints, &self.facts),
        }
    }
}

/// Checks events in `seq` order from the start of the log. Stops at the first break.
pub fn verify_chain<I: IntoIterator<Item = AuditEvent>>(events: I) -> ChainReport {
    let mut v = ChainVerifier::default();
    for e in events {
        v.push(&e);
        if v.is_broken() {
            break;
        }
    }
    v.report()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEvent::seal(
                    NewEvent {
                        kind: "token.exchange".into(),
                        user: Some("alice".into()),
                        chain: vec!["support-v2".into()],
                        decision: Some(Decision::Allow),
                        ..Default::default()
                    },
                    seq,
                    format!("2026-03-14T14:32:0{seq}.000Z"),
                    prev.clone(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let r = verify_chain(chain(5));
        assert_eq!(r.checked, 5);
        assert!(r.first_break.is_none());
    }

    #[test]
    fn altered_event_is_named() {
        let mut c = chain(5);
        c[2].decision = Decision::Deny;
        let r = verify_chain(c);
        assert_eq!(r.first_break.unwrap().seq, 3);
        assert_eq!(r.checked, 2);
    }

    #[test]
    fn removed_event_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(c).first_break.unwrap().seq, 2);
    }

    #[test]
    fn rehashed_event_breaks_the_next_link() {
        let mut c = chain(5);
        c[1].reason = "forged".into();
        c[1].hash = c[1].compute_hash();
        let b = verify_chain(c).first_break.unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("prev_hash"));
    }

    fn checkpoint_of(e: &AuditEvent) -> Checkpoint {
        Checkpoint {
            seq: e.seq,
            hash: e.hash.clone(),
            time: "2026-03-14T15:00:00.000Z".into(),
            jws: String::new(),
        }
    }

    fn verify_with(events: &[AuditEvent], cps: Vec<Checkpoint>) -> ChainReport {
        let mut v = ChainVerifier::with_checkpoints(cps);
        for e in events {
            v.push(e);
        }
        v.report()
    }

    #[test]
    fn checkpoints_of_an_intact_chain_agree() {
        let c = chain(6);
        let r = verify_with(&c, vec![checkpoint_of(&c[2]), checkpoint_of(&c[5])]);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.checkpoints_checked, 2);
    }

    #[test]
    fn a_cut_tail_is_invisible_to_the_chain_but_not_to_a_checkpoint() {
        let c = chain(6);
        let cp = checkpoint_of(&c[4]);
        let r = verify_with(&c[..3], vec![cp]);
        assert!(r.first_break.is_none(), "the shorter chain is consistent");
        assert!(!r.is_ok());
        let f = &r.checkpoint_findings[0];
        assert_eq!((f.kind.as_str(), f.seq), ("truncated", 5));
        assert!(
            f.problem
                .starts_with("events after seq 3 are missing: checkpoint of seq 5")
        );
    }

    #[test]
    fn a_recomputed_chain_is_consistent_but_contradicts_its_checkpoint() {
        let c = chain(6);
        let cp = checkpoint_of(&c[4]);
        // Alter seq 2 and recompute every hash after it.
        let mut forged = c[..1].to_vec();
        for (i, e) in c[1..].iter().enumerate() {
            let mut e = e.clone();
            if i == 0 {
                e.reason = "forged".into();
            }
            e.prev_hash = forged
                .last()
                .map(|p: &AuditEvent| p.hash.clone())
                .unwrap_or_default();
            e.hash = e.compute_hash();
            forged.push(e);
        }
        let r = verify_with(&forged, vec![checkpoint_of(&c[0]), cp]);
        assert!(r.first_break.is_none());
        let f = &r.checkpoint_findings[0];
        assert_eq!((f.kind.as_str(), f.seq), ("rewritten", 5));
        assert!(
            f.problem
                .starts_with("the chain was rewritten between seq 2 and 5:")
        );
    }

    #[test]
    fn a_deleted_checkpointed_event_is_named_by_both() {
        let c = chain(6);
        let cp = checkpoint_of(&c[3]);
        let mut cut = c.clone();
        cut.remove(3);
        let r = verify_with(&cut, vec![cp]);
        assert_eq!(r.first_break.as_ref().unwrap().seq, 4);
        assert_eq!(r.checkpoint_findings[0].kind, "missing");
    }

    #[test]
    fn a_verifier_can_start_after_an_archived_anchor() {
        let c = chain(6);
        let mut v = ChainVerifier::after_anchor(3, c[2].hash.clone(), vec![checkpoint_of(&c[4])]);
        for e in &c[3..] {
            v.push(e);
        }
        let r = v.report();
        assert!(r.is_ok(), "{r:?}");
        assert_eq!((r.checked, r.head.as_str()), (3, c[5].hash.as_str()));
        // A log that does not continue from the anchor is named at its first event.
        let mut v = ChainVerifier::after_anchor(2, c[2].hash.clone(), Vec::new());
        v.push(&c[3]);
        assert_eq!(v.report().first_break.unwrap().seq, 3);
        let mut v = ChainVerifier::after_anchor(3, c[1].hash.clone(), Vec::new());
        v.push(&c[3]);
        let b = v.report().first_break.unwrap();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("prev_hash"));
    }

    #[test]
    fn the_line_reads_like_the_spec() {
        let e = &chain(1)[0];
        assert_eq!(
            e.line(),
            "2026-03-14T14:32:01.000Z user:alice via agent:support-v2 token.exchange allow"
        );
    }
}
