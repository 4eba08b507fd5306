//! Human approval gates (SPEC §1, §6; issue 6): what an approval asks, who may decide it, and
//! how it moves from pending to decided — pure, so every rule is tested without a server.
//!
//! * An [`Approval`] records what is asked ([`Ask`]: a stage escalation before issuance, a write
//!   held at the gateway in `draft` stage, a change to an agent's ceiling or stage), who asks
//!   (the user and the agent chain), the justification, the `binding_message` the approver sees,
//!   its expiry, and once decided, the decision, the decider and the reason.
//! * [`may_decide`] is separation of duties: the decider must be a human with approver rights for
//!   the agent (its owner, or a member of a configured approver group) and never the user on
//!   whose behalf the request was made; an expired approval cannot be decided.
//! * [`Approval::decide`] moves a pending approval to approved or denied exactly once.
//! * [`Dispatch`] makes sending a held write idempotent: it is sent once, even if approved twice
//!   or the gateway restarts between the approval and the send.
//! * [`poll`] is OpenID CIBA poll mode for the agent waiting on an escalation:
//!   `authorization_pending`, `slow_down` when it polls faster than the interval, `expired_token`,
//!   `access_denied`, or ready.

use serde::{Deserialize, Serialize};

use crate::stage::Stage;

/// What an approval asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// A token at a higher stage (or with an approval-only scope) than policy grants on its own.
    Escalation {
        /// The scopes asked for, space-separated.
        scope: String,
        /// The stage asked for.
        stage: Stage,
        /// The audience.
        audience: String,
    },
    /// A write-class request held at the gateway under a `draft`-stage token.
    HeldWrite {
        /// The HTTP method.
        method: String,
        /// The path and query as received.
        path: String,
        /// The action (scope) it maps to.
        action: String,
        /// The resource it touches.
        resource: String,
    },
    /// A change to an agent's ceiling or maximum stage.
    AgentChange {
        /// The agent.
        agent: String,
        /// The new ceiling, if it changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ceiling: Option<Vec<String>>,
        /// The new maximum stage, if it changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_stage: Option<Stage>,
    },
}

impl Ask {
    /// The kind's name: `escalation`, `held_write` or `agent_change`.
    pub fn kind(&self) -> &'static str {
        match self {
            Ask::Escalation { .. } => "escalation",
            Ask::HeldWrite { .. } => "held_write",
            Ask::AgentChange { .. } => "agent_change",
        }
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a human.
    Pending,
    /// Approved.
    Approved,
    /// Denied.
    Denied,
}

impl Status {
    /// `pending`, `approved` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
        }
    }

    /// Parses [`Status::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "pending" => Some(Status::Pending),
            "approved" => Some(Status::Approved),
            "denied" => Some(Status::Denied),
            _ => None,
        }
    }
}

/// A decision by a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// Approved or denied.
    pub approved: bool,
    /// Who decided (the approver's subject).
    pub by: String,
    /// Why, in their words.
    pub reason: String,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id (also the CIBA `auth_req_id` or the held write's proposal id).
    pub id: String,
    /// What is asked.
    pub ask: Ask,
    /// The user on whose behalf (none for an agent's own request or an admin's change).
    pub user: Option<String>,
    /// The agent chain, earliest first.
    pub chain: Vec<String>,
    /// The agent the approval concerns (the last of the chain, or the changed agent).
    pub agent: String,
    /// The task the request belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The requester's justification.
    pub justification: String,
    /// What exactly will happen if approved, shown to the approver.
    pub binding_message: String,
    /// Created, seconds since the epoch.
    pub created_at: i64,
    /// After this the approval can no longer be decided (and a pending one is a denial).
    pub expires_at: i64,
    /// The decision, once made.
    pub decided: Option<Decided>,
}

/// Who may approve for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApproverRule {
    /// The agent's owner.
    pub owner: String,
    /// Groups whose members may approve for it.
    pub groups: Vec<String>,
}

/// A human deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver<'a> {
    /// Their subject.
    pub subject: &'a str,
    /// Their groups.
    pub groups: &'a [String],
}

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The approver is the user the request is for.
    #[error("`{0}` cannot approve a request made on their own behalf")]
    SelfApproval(String),
    /// The approver has no approver rights for the agent.
    #[error(
        "`{approver}` may not approve for agent `{agent}` (its owner or a member of {groups} may)"
    )]
    NoRights {
        /// Who tried.
        approver: String,
        /// The agent.
        agent: String,
        /// The groups that may, as text.
        groups: String,
    },
    /// Too late.
    #[error("approval `{0}` expired")]
    Expired(String),
    /// Already decided.
    #[error("approval `{id}` was already {status}")]
    AlreadyDecided {
        /// The approval.
        id: String,
        /// `approved` or `denied`.
        status: &'static str,
    },
}

impl Approval {
    /// Where it stands.
    pub fn status(&self) -> Status {
        match &self.decided {
            None => Status::Pending,
            Some(d) if d.approved => Status::Approved,
            Some(_) => Status::Denied,
        }
    }

    /// Whether it can no longer be decided at `now`.
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Records `approver`'s decision at `now`, if [`may_decide`] allows it.
    pub fn decide(
        &mut self,
        approver: &Approver<'_>,
        rule: &ApproverRule,
        approved: bool,
        reason: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        may_decide(self, approver, rule, now)?;
        self.decided = Some(Decided {
            approved,
            by: approver.subject.to_owned(),
            reason: reason.to_owned(),
            at: now,
        });
        Ok(())
    }
}

/// Separation of duties: may `approver` decide `approval` at `now` under `rule`?
pub fn may_decide(
    approval: &Approval,
    approver: &Approver<'_>,
    rule: &ApproverRule,
    now: i64,
) -> Result<(), Refusal> {
    if let Some(d) = &approval.decided {
        return Err(Refusal::AlreadyDecided {
            id: approval.id.clone(),
            status: if d.approved { "approved" } else { "denied" },
        });
    }
    if approval.is_expired(now) {
        return Err(Refusal::Expired(approval.id.clone()));
    }
    if approval.user.as_deref() == Some(approver.subject) {
        return Err(Refusal::SelfApproval(approver.subject.to_owned()));
    }
    let owner = !rule.owner.is_empty() && rule.owner == approver.subject;
    let member = approver.groups.iter().any(|g| rule.groups.contains(g));
    if !(owner || member) {
        let groups = if rule.groups.is_empty() {
            "no group".to_owned()
        } else {
            rule.groups
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Refusal::NoRights {
            approver: approver.subject.to_owned(),
            agent: approval.agent.clone(),
            groups,
        });
    }
    Ok(())
}

/// Sending a held write upstream, at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// Not sent.
    NotSent,
    /// Claimed for sending (recorded durably before the request goes out).
    Sending,
    /// Sent; the upstream's answer is stored.
    Sent,
}

impl Dispatch {
    /// `not_sent`, `sending` or `sent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dispatch::NotSent => "not_sent",
            Dispatch::Sending => "sending",
            Dispatch::Sent => "sent",
        }
    }

    /// Parses [`Dispatch::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Dispatch> {
        match s {
            "not_sent" => Some(Dispatch::NotSent),
            "sending" => Some(Dispatch::Sending),
            "sent" => Some(Dispatch::Sent),
            _ => None,
        }
    }

    /// Claims the send: `true` only for the first caller, from [`Dispatch::NotSent`]. A held
    /// write whose claim was recorded but whose answer was not (the gateway stopped in between)
    /// stays [`Dispatch::Sending`] and is never sent again: a second send could repeat a write.
    pub fn claim(&mut self) -> bool {
        if *self == Dispatch::NotSent {
            *self = Dispatch::Sending;
            true
        } else {
            false
        }
    }
}

/// What an agent polling for an escalation is told (OpenID CIBA, poll mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollAnswer {
    /// Approved: issue the token.
    Ready,
    /// Not decided yet.
    AuthorizationPending,
    /// Polled sooner than the interval: wait longer (the interval grows by 5 s).
    SlowDown,
    /// Expired undecided.
    ExpiredToken,
    /// Denied.
    AccessDenied,
}

impl PollAnswer {
    /// The OAuth error code, or `None` when ready.
    pub fn error(self) -> Option<&'static str> {
        match self {
            PollAnswer::Ready => None,
            PollAnswer::AuthorizationPending => Some("authorization_pending"),
            PollAnswer::SlowDown => Some("slow_down"),
            PollAnswer::ExpiredToken => Some("expired_token"),
            PollAnswer::AccessDenied => Some("access_denied"),
        }
    }
}

/// How long after an approval the agent may still collect what was approved, even past the
/// approval's expiry (an approval given a second before expiry must not be lost to the poll
/// interval), seconds.
pub const PICKUP_GRACE: i64 = 300;

/// The CIBA answer to a poll at `now`, given when the agent last polled and the interval it was
/// told. A decision is reported even to a client that polls too fast; an undecided approval past
/// its expiry is `expired_token`, and so is an approved one not collected by the later of its
/// expiry and [`PICKUP_GRACE`] after the decision.
pub fn poll(approval: &Approval, last_poll: Option<i64>, interval: i64, now: i64) -> PollAnswer {
    match &approval.decided {
        Some(d) if d.approved => {
            let deadline = approval.expires_at.max(d.at.saturating_add(PICKUP_GRACE));
            return if now >= deadline {
                PollAnswer::ExpiredToken
            } else {
                PollAnswer::Ready
            };
        }
        Some(_) => return PollAnswer::AccessDenied,
        None => {}
    }
    if approval.is_expired(now) {
        return PollAnswer::ExpiredToken;
    }
    match last_poll {
        Some(t) if now - t < interval => PollAnswer::SlowDown,
        _ => PollAnswer::AuthorizationPending,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn held(user: Option<&str>) -> Approval {
        Approval {
            id: "apr-1".into(),
            ask: Ask::HeldWrite {
                method: "POST".into(),
                path: "/tickets".into(),
                action: "tickets:create".into(),
                resource: "tickets".into(),
            },
            user: user.map(str::to_owned),
            chain: vec!["support-v2".into()],
            agent: "support-v2".into(),
            task: Some("ticket-1".into()),
            justification: "the customer asked for a refund".into(),
            binding_message: "support-v2 will POST /tickets for alice@example.com".into(),
            created_at: 100,
            expires_at: 1000,
            decided: None,
        }
    }

    fn rule() -> ApproverRule {
        ApproverRule {
            owner: "carol@example.com".into(),
            groups: vec!["approvers".into()],
        }
    }

    #[test]
    fn the_owner_or_an_approver_group_member_may_decide_once() {
        let mut a = held(Some("alice@example.com"));
        let none: Vec<String> = Vec::new();
        let carol = Approver {
            subject: "carol@example.com",
            groups: &none,
        };
        a.decide(&carol, &rule(), true, "ok", 200).unwrap();
        assert_eq!(a.status(), Status::Approved);
        assert_eq!(a.decided.as_ref().unwrap().by, "carol@example.com");
        let again = a.decide(&carol, &rule(), false, "changed my mind", 201);
        assert_eq!(
            again.unwrap_err().to_string(),
            "approval `apr-1` was already approved"
        );
        let groups = vec!["approvers".to_owned()];
        let dave = Approver {
            subject: "dave@example.com",
            groups: &groups,
        };
        let mut b = held(Some("alice@example.com"));
        b.decide(&dave, &rule(), false, "no", 200).unwrap();
        assert_eq!(b.status(), Status::Denied);
    }

    #[test]
    fn no_self_approval_no_approval_without_rights_none_after_expiry() {
        let groups = vec!["approvers".to_owned()];
        // Alice is an approver, but the request is on her behalf.
        let alice = Approver {
            subject: "alice@example.com",
            groups: &groups,
        };
        let mut a = held(Some("alice@example.com"));
        assert_eq!(
            a.decide(&alice, &rule(), true, "", 200).unwrap_err(),
            Refusal::SelfApproval("alice@example.com".into())
        );
        let none: Vec<String> = Vec::new();
        let bob = Approver {
            subject: "bob@example.com",
            groups: &none,
        };
        assert_eq!(
            a.decide(&bob, &rule(), true, "", 200)
                .unwrap_err()
                .to_string(),
            "`bob@example.com` may not approve for agent `support-v2` (its owner or a member of `approvers` may)"
        );
        let carol = Approver {
            subject: "carol@example.com",
            groups: &none,
        };
        assert_eq!(
            a.decide(&carol, &rule(), true, "", 1000).unwrap_err(),
            Refusal::Expired("apr-1".into())
        );
        assert_eq!(a.status(), Status::Pending, "refusals change nothing");
        // An owner-less rule with no groups lets nobody approve.
        let nobody = ApproverRule::default();
        assert!(matches!(
            a.decide(&carol, &nobody, true, "", 200),
            Err(Refusal::NoRights { .. })
        ));
    }

    #[test]
    fn a_held_write_is_claimed_for_sending_once() {
        let mut d = Dispatch::NotSent;
        assert!(d.claim());
        assert!(!d.claim(), "approved twice: sent once");
        d = Dispatch::Sent;
        assert!(!d.claim());
    }

    #[test]
    fn ciba_poll_sequence() {
        let mut a = held(Some("alice@example.com"));
        assert_eq!(poll(&a, None, 5, 110), PollAnswer::AuthorizationPending);
        assert_eq!(poll(&a, Some(110), 5, 112), PollAnswer::SlowDown);
        assert_eq!(PollAnswer::SlowDown.error(), Some("slow_down"));
        assert_eq!(
            poll(&a, Some(112), 5, 117),
            PollAnswer::AuthorizationPending
        );
        assert_eq!(poll(&a, Some(117), 5, 1000), PollAnswer::ExpiredToken);
        let none: Vec<String> = Vec::new();
        let carol = Approver {
            subject: "carol@example.com",
            groups: &none,
        };
        a.decide(&carol, &rule(), true, "", 200).unwrap();
        // A decision is told even to a client polling too fast.
        assert_eq!(poll(&a, Some(200), 5, 201), PollAnswer::Ready);
        assert_eq!(PollAnswer::Ready.error(), None);
        // Collectable until the later of the expiry (1000) and the decision + grace (500).
        assert_eq!(poll(&a, None, 5, 999), PollAnswer::Ready);
        assert_eq!(poll(&a, None, 5, 1000), PollAnswer::ExpiredToken);
        let mut late = held(None);
        late.decide(&carol, &rule(), true, "", 990).unwrap();
        assert_eq!(poll(&late, None, 5, 1200), PollAnswer::Ready);
        assert_eq!(
            poll(&late, None, 5, 990 + PICKUP_GRACE),
            PollAnswer::ExpiredToken
        );
        let mut b = held(None);
        b.decide(&carol, &rule(), false, "", 200).unwrap();
        assert_eq!(poll(&b, None, 5, 300), PollAnswer::AccessDenied);
    }

    #[test]
    fn asks_serialize_with_their_kind() {
        let v = serde_json::to_value(&held(None).ask).unwrap();
        assert_eq!(v["kind"], "held_write");
        let change = Ask::AgentChange {
            agent: "support-v2".into(),
            ceiling: None,
            max_stage: Some(Stage::Execute),
        };
        let v = serde_json::to_value(&change).unwrap();
        assert_eq!(v["kind"], "agent_change");
        assert_eq!(v["max_stage"], "execute");
        assert!(v.get("ceiling").is_none());
        let back: Ask = serde_json::from_value(v).unwrap();
        assert_eq!(back, change);
    }
}
