//! Draft stage at the gateway (SPEC §6): a write held for a human's approval instead of sent.
//!
//! A write-class request under a `draft`-stage token that scope, policy and breakers would let
//! through is not forwarded. The gateway keeps what it needs to send it later — method, path,
//! the headers without any credential, the body, the upstream, and the verified claims of the
//! agent's token (never the token itself) — as a [`HeldRequest`] in an approval, and answers
//! `202` with the proposal's id and where to poll. Once a human approves, one gateway claims it
//! (at most once, even across restarts), sends it with the upstream's real credential and a
//! Transaction Token naming the approver, and stores the upstream's answer as [`Delivered`] for
//! the agent to fetch.
//!
//! Pure: building the record, the message the approver sees, and what the agent is told.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use mandate_core::approval::{Approval, Dispatch, Status};
use mandate_core::claims::{AccessClaims, SubProfile};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where agents poll a proposal on the gateway: `GET {PROPOSALS_PATH}/{id}`.
pub const PROPOSALS_PATH: &str = "/.mandate/proposals";

/// The most bytes of a held request's body: it is kept in Mandate's store until a human decides
/// (a longer write is refused with `413`, whatever `gateway.max_body_bytes` allows).
pub const MAX_HELD_BODY: usize = 1024 * 1024;

/// The most bytes of an upstream answer kept for the agent; a longer body is cut (and says so).
pub const MAX_DELIVERED_BODY: usize = 1024 * 1024;

/// Headers never kept with a held request: credentials, connection-level headers, and those the
/// gateway sets itself when it sends.
const NOT_KEPT: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "dpop",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    crate::txn::HEADER,
];

/// A request held for approval: everything needed to send it later, nothing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldRequest {
    /// The HTTP method.
    pub method: String,
    /// The path as the agent sent it.
    pub path: String,
    /// The query, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The upstream's name (from `[gateway]`), looked up again when sending.
    pub upstream: String,
    /// The path it is sent to on the upstream.
    pub upstream_path: String,
    /// The headers to send, without credentials.
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// The action (scope) the route maps it to.
    pub action: String,
    /// The resource it touches.
    pub resource: String,
    /// The verified claims of the agent's token (the token itself is never kept).
    pub claims: AccessClaims,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

/// The upstream's answer to a held request, kept for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The upstream's status, or the gateway's (502/504) when it could not be reached.
    pub status: u16,
    /// The answer's headers (hop-by-hop and cookies removed).
    pub headers: Vec<(String, String)>,
    /// The answer's body (at most [`MAX_DELIVERED_BODY`] bytes).
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// Whether the body was cut.
    #[serde(default)]
    pub truncated: bool,
    /// When it was sent, seconds since the epoch.
    pub sent_at: i64,
    /// The Transaction Token's `txn`, also in the audit event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// Who approved it.
    pub approver: String,
    /// When the gateway could not deliver it: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A held write as the gateway finds it when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its approval.
    pub approval: Approval,
    /// Whether it was sent.
    pub dispatch: Dispatch,
    /// The request.
    pub held: HeldRequest,
    /// The upstream's answer, once sent.
    pub delivered: Option<Delivered>,
}

/// What the gateway answers a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollView {
    /// Waiting for a human (or approved and about to be sent).
    Pending {
        /// The proposal's state in words: `pending`, `approved`, `sending`.
        state: &'static str,
        /// When it expires, if undecided.
        expires_at: i64,
    },
    /// A human said no.
    Denied {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Nobody decided in time.
    Expired,
    /// Sent: the upstream's answer.
    Delivered(Delivered),
}

/// What the agent polling `proposal` at `now` is told.
pub fn poll_view(proposal: &Proposal, now: i64) -> PollView {
    let a = &proposal.approval;
    if let Some(d) = &proposal.delivered {
        return PollView::Delivered(d.clone());
    }
    match (a.status(), &a.decided) {
        (Status::Denied, Some(d)) => PollView::Denied {
            by: d.by.clone(),
            reason: d.reason.clone(),
        },
        (Status::Pending, _) if a.is_expired(now) => PollView::Expired,
        (Status::Pending, _) => PollView::Pending {
            state: "pending",
            expires_at: a.expires_at,
        },
        _ => PollView::Pending {
            state: match proposal.dispatch {
                Dispatch::NotSent => "approved",
                Dispatch::Sending | Dispatch::Sent => "sending",
            },
            expires_at: a.expires_at,
        },
    }
}

/// Whether the same principal made the held request: the same user (or none), the same chain
/// of agents. Anyone else polling gets "no such proposal".
pub fn same_principal(held: &AccessClaims, asking: &AccessClaims) -> bool {
    held.sub == asking.sub
        && held.sub_profile == asking.sub_profile
        && held.client_id == asking.client_id
        && held.chain().ok().map(|c| c.agent_ids()) == asking.chain().ok().map(|c| c.agent_ids())
}

/// The headers kept with a held request: no credentials, nothing connection-level, only values
/// that are text.
pub fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| !NOT_KEPT.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// The first bytes of a body as the approver sees them: text as it is (cut at 300 characters),
/// anything else as its size.
fn preview(body: &[u8], content_type: Option<&str>) -> String {
    if body.is_empty() {
        return "no body".to_owned();
    }
    let kind = content_type.unwrap_or("no content type");
    match std::str::from_utf8(body) {
        Ok(text) => {
            let mut shown: String = text.chars().take(300).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            format!("body ({} bytes, {kind}): {shown}", body.len())
        }
        Err(_) => format!("body: {} bytes of binary ({kind})", body.len()),
    }
}

/// What exactly will happen if the approver says yes.
pub fn binding_message(held: &HeldRequest) -> String {
    let c = &held.claims;
    let who = match c.sub_profile {
        SubProfile::User => format!(
            "for {} by agent `{}`",
            c.sub,
            c.chain()
                .ok()
                .map(|ch| ch.agent_ids().join("` via `"))
                .unwrap_or_else(|| c.client_id.clone())
        ),
        SubProfile::Agent => format!("by agent `{}` on its own behalf", c.client_id),
    };
    let target = match &held.query {
        Some(q) => format!("{} {}?{q}", held.method, held.path),
        None => format!("{} {}", held.method, held.path),
    };
    let content_type = held
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    format!(
        "send `{target}` to upstream `{}` (`{}` on `{}`) {who}, task `{}`; {}",
        held.upstream,
        held.action,
        held.resource,
        c.task,
        preview(&held.body, content_type)
    )
}

/// The JSON body of a poll answer that is not the upstream's own (pending, denied, expired).
pub fn status_body(id: &str, view: &PollView, poll_url: &str) -> Value {
    match view {
        PollView::Pending { state, expires_at } => json!({
            "proposal": id, "status": state, "expires_at": expires_at, "poll": poll_url,
        }),
        PollView::Denied { by, reason } => json!({
            "error": "access_denied", "proposal": id, "status": "denied",
            "error_description": format!("denied by {by}{}", if reason.is_empty() { String::new() } else { format!(": {reason}") }),
        }),
        PollView::Expired => json!({
            "error": "expired", "proposal": id, "status": "expired",
            "error_description": "nobody approved the request in time; it was not sent",
        }),
        PollView::Delivered(_) => json!({"proposal": id, "status": "sent"}),
    }
}

mod b64 {
    use super::{Engine, STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use mandate_core::approval::{Ask, Decided};
    use mandate_core::claims::Audience;
    use mandate_core::stage::Stage;

    fn claims(sub: &str, agent: &str) -> AccessClaims {
        AccessClaims {
            iss: "http://mandate".into(),
            sub: sub.into(),
            sub_profile: SubProfile::User,
            sub_iss: Some("http://idp".into()),
            groups: vec![],
            user_tags: Default::default(),
            aud: Audience::from_vec(vec!["http://gw".into()]),
            client_id: agent.into(),
            iat: 100,
            nbf: 100,
            exp: 1000,
            jti: "j1".into(),
            scope: "tickets:create".into(),
            act: Some(
                json!({"sub": format!("agent:{agent}"), "sub_profile": "agent",
                "credential": "kid:k1"}),
            ),
            task: "t-1".into(),
            stage: Stage::Draft,
            credential: "kid:k1".into(),
            cnf: None,
        }
    }

    fn held(body: &[u8]) -> HeldRequest {
        HeldRequest {
            method: "POST".into(),
            path: "/tickets".into(),
            query: None,
            upstream: "crm".into(),
            upstream_path: "/tickets".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
            action: "tickets:create".into(),
            resource: "tickets".into(),
            claims: claims("alice@example.com", "support-v2"),
            client_ip: None,
        }
    }

    fn proposal(decided: Option<Decided>, dispatch: Dispatch) -> Proposal {
        Proposal {
            approval: Approval {
                id: "ap-1".into(),
                ask: Ask::HeldWrite {
                    method: "POST".into(),
                    path: "/tickets".into(),
                    action: "tickets:create".into(),
                    resource: "tickets".into(),
                },
                user: Some("alice@example.com".into()),
                chain: vec!["support-v2".into()],
                agent: "support-v2".into(),
                task: None,
                justification: String::new(),
                binding_message: String::new(),
                created_at: 100,
                expires_at: 200,
                decided,
            },
            dispatch,
            held: held(b"{}"),
            delivered: None,
        }
    }

    #[test]
    fn credentials_and_connection_headers_are_not_kept() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer agent-token"),
            ("cookie", "s=1"),
            ("dpop", "proof"),
            ("proxy-authorization", "Basic x"),
            ("host", "gw"),
            ("content-length", "2"),
            ("connection", "close"),
            ("txn-token", "forged"),
            ("content-type", "application/json"),
            ("idempotency-key", "k-1"),
        ] {
            h.insert(http::HeaderName::from_static(n), v.parse().unwrap());
        }
        let kept = kept_headers(&h);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "idempotency-key"]);
    }

    #[test]
    fn the_binding_message_says_what_where_for_whom_and_shows_the_body() {
        let m = binding_message(&held(br#"{"subject":"refund"}"#));
        assert_eq!(
            m,
            "send `POST /tickets` to upstream `crm` (`tickets:create` on `tickets`) for \
             alice@example.com by agent `support-v2`, task `t-1`; body (20 bytes, \
             application/json): {\"subject\":\"refund\"}"
        );
        let long = vec![b'a'; 1000];
        assert!(binding_message(&held(&long)).ends_with('…'));
        let binary = binding_message(&held(&[0xff, 0xfe, 0x00]));
        assert!(
            binary.ends_with("body: 3 bytes of binary (application/json)"),
            "{binary}"
        );
        assert!(binding_message(&held(b"")).ends_with("no body"));
    }

    #[test]
    fn a_held_request_round_trips_through_json_with_its_body() {
        let h = held(&[0, 1, 2, 255]);
        let text = serde_json::to_string(&h).unwrap();
        assert!(!text.contains("agent-token"));
        let back: HeldRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn what_the_agent_is_told() {
        let pending = proposal(None, Dispatch::NotSent);
        assert_eq!(
            poll_view(&pending, 150),
            PollView::Pending {
                state: "pending",
                expires_at: 200
            }
        );
        assert_eq!(poll_view(&pending, 200), PollView::Expired);
        let decided = |approved| Decided {
            approved,
            by: "carol@example.com".into(),
            reason: "ok".into(),
            at: 150,
        };
        assert_eq!(
            poll_view(&proposal(Some(decided(false)), Dispatch::NotSent), 150),
            PollView::Denied {
                by: "carol@example.com".into(),
                reason: "ok".into()
            }
        );
        // Approved before expiry: still sent after it.
        let approved = proposal(Some(decided(true)), Dispatch::NotSent);
        assert!(matches!(
            poll_view(&approved, 500),
            PollView::Pending {
                state: "approved",
                ..
            }
        ));
        let sending = proposal(Some(decided(true)), Dispatch::Sending);
        assert!(matches!(
            poll_view(&sending, 150),
            PollView::Pending {
                state: "sending",
                ..
            }
        ));
        let mut sent = proposal(Some(decided(true)), Dispatch::Sent);
        let d = Delivered {
            status: 201,
            headers: vec![],
            body: b"{}".to_vec(),
            truncated: false,
            sent_at: 160,
            txn: Some("txn-1".into()),
            approver: "carol@example.com".into(),
            error: None,
        };
        sent.delivered = Some(d.clone());
        assert_eq!(poll_view(&sent, 999), PollView::Delivered(d));
    }

    #[test]
    fn only_the_same_user_and_chain_may_poll() {
        let a = claims("alice@example.com", "support-v2");
        assert!(same_principal(&a, &a.clone()));
        assert!(!same_principal(
            &a,
            &claims("bob@example.com", "support-v2")
        ));
        assert!(!same_principal(
            &a,
            &claims("alice@example.com", "analytics-v1")
        ));
    }
}
