//! Security Event Tokens (RFC 8417) for Shared Signals streams: the pure mapping from a
//! revocation feed entry to a CAEP event, the SSF control events (verification, stream
//! updated), the SET claims around them, subject matching, and signing.
//!
//! | revocation | event type | `sub_id` |
//! |---|---|---|
//! | `token` | CAEP `session-revoked` | `jwt_id` {`iss`: Mandate, `jti`} |
//! | `task` | CAEP `session-revoked` | `complex` {`session`: `opaque` task id, `user`, `application`} |
//! | `user` | CAEP `session-revoked` | `iss_sub` {IdP issuer, `sub`}, or `opaque` if the issuer is unknown |
//! | `agent` | CAEP `session-revoked` | `iss_sub` {`iss`: Mandate, `sub`: `agent:<id>`} |
//! | `key` | CAEP `credential-change` (`change_type` `revoke`) | the owning agent as for `agent`, or `opaque` kid |
//!
//! Every revocation SET carries `txn` = the revocation id, and Mandate's own detail in the event
//! member [`MANDATE_REVOCATION`] (revocation id, feed sequence number, the `jti`s it ended).

use mandate_core::revocation::{RevocationEntry, RevocationKind};
use mandate_token::sign::sign_jwt;
use mandate_token::{KeyError, SigningKey};
use serde_json::{Map, Value, json};

/// CAEP session revoked.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP credential change.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// SSF verification.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// SSF stream updated.
pub const STREAM_UPDATED: &str =
    "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";
/// The event types Mandate transmits for revocations (`events_supported`). Verification and
/// stream-updated events are sent on every stream regardless.
pub const EVENTS_SUPPORTED: [&str; 2] = [SESSION_REVOKED, CREDENTIAL_CHANGE];
/// Name of the extension member (a URI, as SSF requires) holding Mandate's own detail.
pub const MANDATE_REVOCATION: &str = "urn:mandate:secevent:revocation";
/// The JOSE `typ` of a SET (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";
/// The most ended `jti`s listed in one SET; the count is always complete.
pub const MAX_JTIS: usize = 1000;
/// `credential_type` of an agent key (a JWK used for `private_key_jwt`); CAEP allows a type
/// agreed between transmitter and receiver.
pub const CREDENTIAL_TYPE_JWK: &str = "jwk";

/// What the dispatcher learned about a revocation's subject beyond the feed entry itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `user`: the issuer (IdP) that authenticated the user, if known.
    pub user_issuer: Option<String>,
    /// `task`: the user the task was for, and that user's issuer.
    pub task_user: Option<(String, Option<String>)>,
    /// `task`: the agent that ran it.
    pub task_agent: Option<String>,
    /// `key`: the agents that hold a key with this `kid`.
    pub key_owners: Vec<String>,
}

/// One event, before it is wrapped in a SET for a given stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type URI (the key in `events`).
    pub event_type: &'static str,
    /// The top-level `sub_id`.
    pub sub_id: Value,
    /// The event object.
    pub body: Value,
    /// `txn`, if any.
    pub txn: Option<String>,
}

/// `initiating_entity` (CAEP) of a revocation made by `by`: `admin:<id>` → `admin`;
/// `agent:<id>` (an agent giving up its own token, RFC 7009, like a logout) → `user`;
/// `policy…` → `policy`; anything else (`system`) → `system`.
pub fn initiating_entity(by: &str) -> &'static str {
    if by.starts_with("admin:") {
        "admin"
    } else if by.starts_with("agent:") || by.starts_with("user:") {
        "user"
    } else if by.starts_with("policy") {
        "policy"
    } else {
        "system"
    }
}

/// `iss_sub` of an agent: Mandate is the authority for agents, and `agent:<id>` is the `sub`
/// (and `act.sub`) its tokens carry.
pub fn agent_subject(issuer: &str, agent: &str) -> Value {
    json!({"format": "iss_sub", "iss": issuer, "sub": format!("agent:{agent}")})
}

/// `iss_sub` of a user whose IdP is known, `opaque` otherwise.
pub fn user_subject(sub: &str, issuer: Option<&str>) -> Value {
    match issuer {
        Some(iss) => json!({"format": "iss_sub", "iss": iss, "sub": sub}),
        None => json!({"format": "opaque", "id": sub}),
    }
}

/// The stream's own subject, for verification and stream-updated events (SSF: `opaque` with
/// the stream id).
pub fn stream_subject(stream_id: &str) -> Value {
    json!({"format": "opaque", "id": stream_id})
}

/// The CAEP event for a revocation feed entry. Pure: everything it needs is in its arguments.
pub fn revocation_event(issuer: &str, entry: &RevocationEntry, ctx: &Context) -> Event {
    let r = &entry.record;
    let (event_type, sub_id) = match r.kind {
        RevocationKind::Token => (
            SESSION_REVOKED,
            json!({"format": "jwt_id", "iss": issuer, "jti": r.target}),
        ),
        RevocationKind::Task => {
            let mut s = Map::new();
            s.insert("format".into(), "complex".into());
            s.insert(
                "session".into(),
                json!({"format": "opaque", "id": r.target}),
            );
            if let Some((user, iss)) = &ctx.task_user {
                s.insert("user".into(), user_subject(user, iss.as_deref()));
            }
            if let Some(agent) = &ctx.task_agent {
                s.insert("application".into(), agent_subject(issuer, agent));
            }
            (SESSION_REVOKED, Value::Object(s))
        }
        RevocationKind::User => (
            SESSION_REVOKED,
            user_subject(&r.target, ctx.user_issuer.as_deref()),
        ),
        RevocationKind::Agent => (SESSION_REVOKED, agent_subject(issuer, &r.target)),
        RevocationKind::Key => (
            CREDENTIAL_CHANGE,
            match ctx.key_owners.as_slice() {
                [owner] => agent_subject(issuer, owner),
                _ => json!({"format": "opaque", "id": r.target}),
            },
        ),
    };
    let reason = if r.reason.trim().is_empty() {
        format!("{} {} revoked by {}", r.kind.as_str(), r.target, r.by)
    } else {
        r.reason.clone()
    };
    let jtis: Vec<&str> = entry
        .tokens
        .iter()
        .take(MAX_JTIS)
        .map(|t| t.jti.as_str())
        .collect();
    let mut detail = json!({
        "revocation_id": r.id,
        "seq": entry.seq,
        "kind": r.kind.as_str(),
        "target": r.target,
        "by": r.by,
        "tokens_ended": entry.tokens.len(),
        "jtis": jtis,
    });
    if entry.tokens.len() > MAX_JTIS {
        detail["jtis_truncated"] = true.into();
    }
    let mut body = json!({
        "event_timestamp": r.at,
        "initiating_entity": initiating_entity(&r.by),
        "reason_admin": {"en": reason},
    });
    if r.kind == RevocationKind::Key {
        body["credential_type"] = CREDENTIAL_TYPE_JWK.into();
        body["change_type"] = "revoke".into();
        body["friendly_name"] = r.target.clone().into();
    }
    body[MANDATE_REVOCATION] = detail;
    Event {
        event_type,
        sub_id,
        body,
        txn: Some(r.id.clone()),
    }
}

/// The SSF verification event for a stream, echoing the receiver's `state`.
pub fn verification_event(stream_id: &str, state: Option<&str>) -> Event {
    let mut body = json!({});
    if let Some(s) = state {
        body["state"] = s.into();
    }
    Event {
        event_type: VERIFICATION,
        sub_id: stream_subject(stream_id),
        body,
        txn: None,
    }
}

/// The SSF stream-updated event: the stream's new status and why.
pub fn stream_updated_event(stream_id: &str, status: &str, reason: Option<&str>) -> Event {
    let mut body = json!({"status": status});
    if let Some(r) = reason {
        body["reason"] = r.into();
    }
    Event {
        event_type: STREAM_UPDATED,
        sub_id: stream_subject(stream_id),
        body,
        txn: None,
    }
}

/// The SET claims of `event` for a receiver: `iss`, `jti`, `iat`, `aud` (a string when there
/// is one audience), `txn`, `sub_id`, `events`. Never `sub` or `exp` (SSF §4.1).
pub fn claims(issuer: &str, aud: &[String], jti: &str, iat: i64, event: &Event) -> Value {
    let aud = match aud {
        [one] => Value::String(one.clone()),
        many => json!(many),
    };
    let mut c = json!({
        "iss": issuer,
        "jti": jti,
        "iat": iat,
        "aud": aud,
        "sub_id": event.sub_id,
        "events": {event.event_type: event.body},
    });
    if let Some(txn) = &event.txn {
        c["txn"] = txn.clone().into();
    }
    c
}

/// Signs stored claims (JSON text) as a SET: header `{alg, kid, typ: secevent+jwt}`.
pub fn sign(key: &SigningKey, claims: &str) -> Result<String, KeyError> {
    let value: Value =
        serde_json::from_str(claims).map_err(|_| KeyError::Crypto("stored SET claims"))?;
    sign_jwt(key, SET_TYP, &value)
}

/// Whether an event subject falls under a subject the receiver named (SSF §8.1.3.1): simple
/// subjects match when identical; two complex subjects match when every member defined in
/// both is identical. Mandate also lets a simple subject match a complex one that names it as
/// a member (removing a user also removes that user's task sessions), and a complex subject
/// with a single member match that member as a simple subject.
pub fn subject_matches(named: &Value, subject: &Value) -> bool {
    if named == subject {
        return true;
    }
    let (Some(n), Some(s)) = (named.as_object(), subject.as_object()) else {
        return false;
    };
    let complex =
        |m: &Map<String, Value>| m.get("format").and_then(Value::as_str) == Some("complex");
    let members = |m: &Map<String, Value>| -> Vec<(String, Value)> {
        m.iter()
            .filter(|(k, _)| k.as_str() != "format")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    match (complex(n), complex(s)) {
        (true, true) => n
            .iter()
            .filter(|(k, _)| k.as_str() != "format")
            .all(|(k, v)| s.get(k).is_none_or(|w| w == v)),
        (false, true) => members(s).iter().any(|(_, v)| v == named),
        (true, false) => matches!(members(n).as_slice(), [(_, v)] if v == subject),
        (false, false) => false,
    }
}

/// Whether `subject` is a well-formed subject identifier: an object with a string `format`;
/// a `complex` one has at least one member and each member is itself a simple identifier.
pub fn valid_subject(subject: &Value) -> Result<(), String> {
    let Some(m) = subject.as_object() else {
        return Err("`subject` must be a JSON object".into());
    };
    let Some(format) = m.get("format").and_then(Value::as_str) else {
        return Err("`subject` must have a string `format`".into());
    };
    if format == "complex" {
        let members: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != "format").collect();
        if members.is_empty() {
            return Err("a `complex` subject needs at least one member".into());
        }
        for (k, v) in members {
            let simple = v
                .as_object()
                .and_then(|o| o.get("format"))
                .and_then(Value::as_str)
                .is_some_and(|f| f != "complex");
            if !simple {
                return Err(format!(
                    "member `{}` of a `complex` subject must be a simple subject identifier",
                    k.chars().take(40).collect::<String>()
                ));
            }
        }
    } else if m.len() < 2 {
        return Err(format!(
            "a `{}` subject needs its identifying members",
            format.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use mandate_core::revocation::{RevocationRecord, RevokedToken};

    use super::*;

    const ISS: &str = "https://mandate.example";

    fn entry(kind: RevocationKind, target: &str, by: &str, reason: &str) -> RevocationEntry {
        RevocationEntry {
            seq: 7,
            record: RevocationRecord {
                id: "rev-1".into(),
                kind,
                target: target.into(),
                by: by.into(),
                reason: reason.into(),
                at: 1_700_000_000,
            },
            tokens: vec![
                RevokedToken {
                    jti: "j1".into(),
                    exp: 1_700_000_300,
                },
                RevokedToken {
                    jti: "j2".into(),
                    exp: 1_700_000_300,
                },
            ],
        }
    }

    #[test]
    fn a_token_revocation_is_session_revoked_about_the_jwt_id() {
        let e = revocation_event(
            ISS,
            &entry(RevocationKind::Token, "j1", "admin:ops", "leaked"),
            &Context::default(),
        );
        assert_eq!(e.event_type, SESSION_REVOKED);
        assert_eq!(
            e.sub_id,
            json!({"format": "jwt_id", "iss": ISS, "jti": "j1"})
        );
        assert_eq!(e.txn.as_deref(), Some("rev-1"));
        assert_eq!(e.body["event_timestamp"], 1_700_000_000);
        assert_eq!(e.body["initiating_entity"], "admin");
        assert_eq!(e.body["reason_admin"], json!({"en": "leaked"}));
        let d = &e.body[MANDATE_REVOCATION];
        assert_eq!(d["revocation_id"], "rev-1");
        assert_eq!(d["seq"], 7);
        assert_eq!(d["kind"], "token");
        assert_eq!(d["tokens_ended"], 2);
        assert_eq!(d["jtis"], json!(["j1", "j2"]));
        assert!(d.get("jtis_truncated").is_none());
    }

    #[test]
    fn a_task_revocation_is_a_complex_session_subject() {
        let ctx = Context {
            task_user: Some((
                "alice@example.com".into(),
                Some("https://idp.example".into()),
            )),
            task_agent: Some("support-v2".into()),
            ..Context::default()
        };
        let e = revocation_event(
            ISS,
            &entry(RevocationKind::Task, "ticket-1", "agent:support-v2", ""),
            &ctx,
        );
        assert_eq!(e.event_type, SESSION_REVOKED);
        assert_eq!(
            e.sub_id,
            json!({
                "format": "complex",
                "session": {"format": "opaque", "id": "ticket-1"},
                "user": {"format": "iss_sub", "iss": "https://idp.example", "sub": "alice@example.com"},
                "application": {"format": "iss_sub", "iss": ISS, "sub": "agent:support-v2"},
            })
        );
        assert_eq!(e.body["initiating_entity"], "user");
        // An empty reason still gives an administrative message.
        assert_eq!(
            e.body["reason_admin"]["en"],
            "task ticket-1 revoked by agent:support-v2"
        );
        // Without context the session alone names it.
        let bare = revocation_event(
            ISS,
            &entry(RevocationKind::Task, "ticket-1", "system", ""),
            &Context::default(),
        );
        assert_eq!(
            bare.sub_id,
            json!({"format": "complex", "session": {"format": "opaque", "id": "ticket-1"}})
        );
        assert_eq!(bare.body["initiating_entity"], "system");
    }

    #[test]
    fn a_user_is_iss_sub_when_the_issuer_is_known_else_opaque() {
        let known = Context {
            user_issuer: Some("https://idp.example".into()),
            ..Context::default()
        };
        let e = entry(
            RevocationKind::User,
            "alice@example.com",
            "admin:ops",
            "left",
        );
        assert_eq!(
            revocation_event(ISS, &e, &known).sub_id,
            json!({"format": "iss_sub", "iss": "https://idp.example", "sub": "alice@example.com"})
        );
        let r = revocation_event(ISS, &e, &Context::default());
        assert_eq!(r.event_type, SESSION_REVOKED);
        assert_eq!(
            r.sub_id,
            json!({"format": "opaque", "id": "alice@example.com"})
        );
    }

    #[test]
    fn an_agent_is_session_revoked_about_the_agent() {
        let e = revocation_event(
            ISS,
            &entry(
                RevocationKind::Agent,
                "analytics-v1",
                "admin:ops",
                "suspended",
            ),
            &Context::default(),
        );
        assert_eq!(e.event_type, SESSION_REVOKED);
        assert_eq!(e.sub_id, agent_subject(ISS, "analytics-v1"));
        assert_eq!(e.sub_id["sub"], "agent:analytics-v1");
    }

    #[test]
    fn a_key_is_credential_change_revoke_of_its_agent() {
        let one = Context {
            key_owners: vec!["support-v2".into()],
            ..Context::default()
        };
        let e = entry(
            RevocationKind::Key,
            "support-v2-k1",
            "admin:ops",
            "rotated out",
        );
        let ev = revocation_event(ISS, &e, &one);
        assert_eq!(ev.event_type, CREDENTIAL_CHANGE);
        assert_eq!(ev.sub_id, agent_subject(ISS, "support-v2"));
        assert_eq!(ev.body["change_type"], "revoke");
        assert_eq!(ev.body["credential_type"], CREDENTIAL_TYPE_JWK);
        assert_eq!(ev.body["friendly_name"], "support-v2-k1");
        // Unknown or shared owner: the kid alone.
        let ev = revocation_event(ISS, &e, &Context::default());
        assert_eq!(
            ev.sub_id,
            json!({"format": "opaque", "id": "support-v2-k1"})
        );
    }

    #[test]
    fn long_lists_of_ended_tokens_are_truncated_but_counted() {
        let mut e = entry(RevocationKind::User, "u", "admin:ops", "");
        e.tokens = (0..MAX_JTIS + 5)
            .map(|i| RevokedToken {
                jti: format!("j{i}"),
                exp: 0,
            })
            .collect();
        let ev = revocation_event(ISS, &e, &Context::default());
        let d = &ev.body[MANDATE_REVOCATION];
        assert_eq!(d["jtis"].as_array().unwrap().len(), MAX_JTIS);
        assert_eq!(d["tokens_ended"], MAX_JTIS + 5);
        assert_eq!(d["jtis_truncated"], true);
    }

    #[test]
    fn claims_have_the_set_shape() {
        let ev = verification_event("s1", Some("xyz"));
        let c = claims(ISS, &["r1".into()], "jti-1", 42, &ev);
        assert_eq!(
            c,
            json!({
                "iss": ISS, "jti": "jti-1", "iat": 42, "aud": "r1",
                "sub_id": {"format": "opaque", "id": "s1"},
                "events": {VERIFICATION: {"state": "xyz"}},
            })
        );
        assert!(c.get("sub").is_none() && c.get("exp").is_none());
        let c = claims(ISS, &["a".into(), "b".into()], "j", 1, &ev);
        assert_eq!(c["aud"], json!(["a", "b"]));
        let u = stream_updated_event("s1", "paused", Some("maintenance"));
        let c = claims(ISS, &["r1".into()], "j", 1, &u);
        assert_eq!(
            c["events"][STREAM_UPDATED],
            json!({"status": "paused", "reason": "maintenance"})
        );
        let r = revocation_event(
            ISS,
            &entry(RevocationKind::Token, "j1", "admin:x", ""),
            &Context::default(),
        );
        assert_eq!(claims(ISS, &["r1".into()], "j", 1, &r)["txn"], "rev-1");
    }

    #[test]
    fn initiating_entities() {
        assert_eq!(initiating_entity("admin:bootstrap"), "admin");
        assert_eq!(initiating_entity("agent:support-v2"), "user");
        assert_eq!(initiating_entity("policy:pace"), "policy");
        assert_eq!(initiating_entity("system"), "system");
        assert_eq!(initiating_entity(""), "system");
    }

    #[test]
    fn subject_matching() {
        let alice = json!({"format": "iss_sub", "iss": "https://idp", "sub": "alice"});
        let bob = json!({"format": "iss_sub", "iss": "https://idp", "sub": "bob"});
        let task =
            json!({"format": "complex", "session": {"format": "opaque", "id": "t"}, "user": alice});
        assert!(subject_matches(&alice, &alice));
        assert!(!subject_matches(&alice, &bob));
        assert!(
            subject_matches(&alice, &task),
            "a simple subject names a member"
        );
        assert!(!subject_matches(&bob, &task));
        let only_user = json!({"format": "complex", "user": alice});
        assert!(
            subject_matches(&only_user, &task),
            "undefined members are wildcards"
        );
        assert!(subject_matches(&only_user, &alice));
        let other = json!({"format": "complex", "user": bob});
        assert!(!subject_matches(&other, &task));
        assert!(!subject_matches(&json!("alice"), &alice));
    }

    #[test]
    fn subject_validation() {
        assert!(valid_subject(&json!({"format": "opaque", "id": "x"})).is_ok());
        assert!(
            valid_subject(&json!({"format": "complex", "user": {"format": "opaque", "id": "x"}}))
                .is_ok()
        );
        for bad in [
            json!("x"),
            json!({"id": "x"}),
            json!({"format": 3}),
            json!({"format": "opaque"}),
            json!({"format": "complex"}),
            json!({"format": "complex", "user": "x"}),
            json!({"format": "complex", "user": {"format": "complex", "x": {}}}),
        ] {
            assert!(valid_subject(&bad).is_err(), "{bad}");
        }
    }
}
