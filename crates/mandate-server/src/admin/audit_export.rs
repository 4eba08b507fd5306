//! Export forms of the audit log for a SIEM (`GET /v1/audit?format=jsonl|ocsf`), and the `on=`
//! day filter. Pure: no IO, no clock.
//!
//! `jsonl` is one event per line exactly as in the JSON `events` array. `ocsf` maps each event
//! to an OCSF 1.x **API Activity** event (class 6003, category 6 "Application Activity"); what
//! OCSF has no place for (the hash chain, the task, the whole agent chain, …) is kept under
//! `unmapped`. The mapping table is in `docs/audit.md`.

use mandate_core::audit::{AuditEvent, Decision};
use serde_json::{Map, Value, json};

/// The OCSF schema version the `ocsf` form follows.
pub const OCSF_VERSION: &str = "1.3.0";
/// OCSF class "API Activity".
pub const OCSF_CLASS_UID: i64 = 6003;
/// OCSF category "Application Activity".
pub const OCSF_CATEGORY_UID: i64 = 6;

/// How `GET /v1/audit` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"events": [...]}` (the default).
    Json,
    /// `application/x-ndjson`: one event per line, as in `events`.
    Jsonl,
    /// `application/x-ndjson`: one OCSF API Activity event per line.
    Ocsf,
}

impl Format {
    /// Parses `format=`; absent means [`Format::Json`].
    pub fn parse(s: Option<&str>) -> Result<Format, String> {
        match s {
            None | Some("json") => Ok(Format::Json),
            Some("jsonl") => Ok(Format::Jsonl),
            Some("ocsf") => Ok(Format::Ocsf),
            Some(other) => Err(format!(
                "`format` must be `json`, `jsonl` or `ocsf`, not `{}`",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// The bounds of the UTC day `on` (`YYYY-MM-DD`): `(since, until)` in the audit log's text form,
/// `until` being the next day's midnight (exclusive).
pub fn day_bounds(on: &str) -> Result<(String, String), String> {
    let bad = || {
        format!(
            "`on` must be a date `YYYY-MM-DD`, not `{}`",
            on.chars().take(40).collect::<String>()
        )
    };
    let date = time::Date::parse(
        on,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| bad())?;
    let next = date.next_day().ok_or_else(bad)?;
    let ms = |d: time::Date| (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((
        mandate_core::time::rfc3339_millis(ms(date)),
        mandate_core::time::rfc3339_millis(ms(next)),
    ))
}

/// An event as the JSON `events` array holds it (the same value, so the same text).
pub fn event_value(e: &AuditEvent) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// One `jsonl` line (without the newline).
pub fn jsonl_line(e: &AuditEvent) -> String {
    event_value(e).to_string()
}

/// Milliseconds since the epoch of an RFC 3339 time (0 if it does not parse).
fn epoch_ms(t: &str) -> i64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// OCSF API Activity `activity_id` and its name, from the action's verb (its last `:`- or
/// `.`-separated word): `create` → Create, `read`/`list`/`get` → Read,
/// `update`/`write`/`set`/`patch` → Update, `delete`/`remove` → Delete, anything else Other.
fn activity(action: Option<&str>) -> (i64, &'static str) {
    let verb = action
        .and_then(|a| a.rsplit([':', '.']).next())
        .unwrap_or("");
    match verb {
        "create" | "register" | "add" => (1, "Create"),
        "read" | "list" | "get" | "show" => (2, "Read"),
        "update" | "write" | "set" | "patch" => (3, "Update"),
        "delete" | "remove" | "retire" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

/// `status_id` and `status` of a decision: allow → Success, deny → Failure, info → Other.
fn status(d: Decision) -> (i64, &'static str) {
    match d {
        Decision::Allow => (1, "Success"),
        Decision::Deny => (2, "Failure"),
        Decision::Info => (99, "Other"),
    }
}

/// An event as an OCSF 1.x API Activity (6003) event.
pub fn ocsf(e: &AuditEvent) -> Value {
    let (activity_id, activity_name) = activity(e.action.as_deref());
    let (status_id, status_name) = status(e.decision);
    let mut actor = Map::new();
    if let Some(u) = &e.user {
        actor.insert(
            "user".into(),
            json!({"uid": u, "type_id": 1, "type": "User"}),
        );
    }
    if let Some(current) = e.chain.last() {
        // The agent acting now; the whole chain is under `unmapped.chain`.
        actor.insert("app_name".into(), json!(current));
    }
    let mut api = Map::new();
    api.insert(
        "operation".into(),
        json!(e.action.as_deref().unwrap_or(&e.kind)),
    );
    if let Some(r) = &e.request_id {
        api.insert("request".into(), json!({"uid": r}));
    }
    let detail: Value = if e.detail.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&e.detail).unwrap_or_else(|_| Value::String(e.detail.clone()))
    };
    let mut out = json!({
        "class_uid": OCSF_CLASS_UID,
        "class_name": "API Activity",
        "category_uid": OCSF_CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": OCSF_CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "severity_id": 1,
        "severity": "Informational",
        "time": epoch_ms(&e.time),
        "status_id": status_id,
        "status": status_name,
        "status_detail": e.reason,
        "actor": actor,
        "api": api,
        "metadata": {
            "uid": e.seq.to_string(),
            "version": OCSF_VERSION,
            "event_code": e.kind,
            "original_time": e.time,
            "product": {"name": "Mandate", "vendor_name": "Mandate"},
        },
        "unmapped": {
            "seq": e.seq,
            "kind": e.kind,
            "decision": e.decision.as_str(),
            "chain": e.chain,
            "task": e.task,
            "policy_ids": e.policy_ids,
            "credential": e.credential,
            "jti": e.jti,
            "detail": detail,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        },
    });
    if let Some(r) = &e.resource {
        out["resources"] = json!([{"uid": r}]);
    }
    out
}

/// One `ocsf` line (without the newline).
pub fn ocsf_line(e: &AuditEvent) -> String {
    ocsf(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(decision: Decision) -> AuditEvent {
        AuditEvent {
            seq: 42,
            time: "2026-03-14T14:32:01.250Z".into(),
            kind: "token.exchange".into(),
            user: Some("alice@example.com".into()),
            chain: vec!["support-v2".into(), "analytics-v1".into()],
            task: Some("ticket-1".into()),
            action: Some("crm.customers:read".into()),
            resource: Some("customers/9821".into()),
            decision,
            reason: "granted".into(),
            policy_ids: vec!["support.cedar#0".into()],
            request_id: Some("rid-1".into()),
            credential: Some("agent:analytics-v1".into()),
            jti: Some("j1".into()),
            detail: r#"{"ttl":300}"#.into(),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn a_day_is_midnight_to_midnight_utc() {
        assert_eq!(
            day_bounds("2026-03-14").unwrap(),
            (
                "2026-03-14T00:00:00.000Z".to_owned(),
                "2026-03-15T00:00:00.000Z".to_owned()
            )
        );
        assert_eq!(
            day_bounds("2024-12-31").unwrap().1,
            "2025-01-01T00:00:00.000Z"
        );
        for bad in [
            "2026-02-30",
            "14/03/2026",
            "2026-03-14T00:00:00Z",
            "",
            "yesterday",
        ] {
            let err = day_bounds(bad).unwrap_err();
            assert!(err.contains("`on`"), "{err}");
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse(None), Ok(Format::Json));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert_eq!(Format::parse(Some("jsonl")), Ok(Format::Jsonl));
        assert_eq!(Format::parse(Some("ocsf")), Ok(Format::Ocsf));
        assert!(Format::parse(Some("csv")).unwrap_err().contains("`csv`"));
    }

    #[test]
    fn a_jsonl_line_is_the_event_as_json() {
        let e = event(Decision::Allow);
        let line = jsonl_line(&e);
        assert!(!line.contains('\n'));
        let back: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        assert_eq!(line, json!({ "events": [e] })["events"][0].to_string());
    }

    #[test]
    fn an_event_maps_to_ocsf_api_activity() {
        let o = ocsf(&event(Decision::Allow));
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["category_uid"], 6);
        assert_eq!(o["activity_id"], 2);
        assert_eq!(o["type_uid"], 600302);
        assert_eq!(o["time"], 1_773_498_721_250_i64);
        assert_eq!(o["actor"]["user"]["uid"], "alice@example.com");
        assert_eq!(o["actor"]["app_name"], "analytics-v1");
        assert_eq!(o["api"]["operation"], "crm.customers:read");
        assert_eq!(o["api"]["request"]["uid"], "rid-1");
        assert_eq!(o["resources"][0]["uid"], "customers/9821");
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["status"], "Success");
        assert_eq!(o["status_detail"], "granted");
        assert_eq!(o["metadata"]["uid"], "42");
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
        assert_eq!(o["metadata"]["product"]["name"], "Mandate");
        assert_eq!(o["metadata"]["product"]["vendor_name"], "Mandate");
        assert_eq!(o["unmapped"]["hash"], "a".repeat(64));
        assert_eq!(o["unmapped"]["prev_hash"], "0".repeat(64));
        assert_eq!(o["unmapped"]["task"], "ticket-1");
        assert_eq!(
            o["unmapped"]["chain"],
            json!(["support-v2", "analytics-v1"])
        );
        assert_eq!(o["unmapped"]["detail"]["ttl"], 300);
    }

    #[test]
    fn decisions_map_to_statuses_and_missing_fields_are_left_out() {
        assert_eq!(ocsf(&event(Decision::Deny))["status"], "Failure");
        assert_eq!(ocsf(&event(Decision::Deny))["status_id"], 2);
        let mut e = event(Decision::Info);
        e.user = None;
        e.chain.clear();
        e.action = None;
        e.resource = None;
        e.kind = "keys.rotate".into();
        let o = ocsf(&e);
        assert_eq!(o["status"], "Other");
        assert_eq!(o["status_id"], 99);
        assert_eq!(o["activity_id"], 99);
        assert_eq!(o["api"]["operation"], "keys.rotate");
        assert!(o.get("resources").is_none());
        assert_eq!(o["actor"], json!({}));
        assert!(!ocsf_line(&e).contains('\n'));
    }

    #[test]
    fn verbs_map_to_activities() {
        assert_eq!(activity(Some("tickets:create")).0, 1);
        assert_eq!(activity(Some("mcp.crm.delete_customer:call")).0, 99);
        assert_eq!(activity(Some("agent.retire")).0, 4);
        assert_eq!(activity(Some("email:send")).0, 99);
        assert_eq!(activity(None).0, 99);
    }
}
