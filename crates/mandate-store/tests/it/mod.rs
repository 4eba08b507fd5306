//! Shared fixtures.

mod agents;
mod approvals;
mod archive;
mod audit;
mod lifecycle;
mod posture;
mod records;
mod revocation;
mod secrets;
mod tasks;
mod units;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::audit::{AuditEvent, Decision, NewEvent};
use mandate_core::ids::AgentId;
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_core::task::{Task, TaskStatus, TokenRecord};
use mandate_store::{Op, OpOutput, SqliteStore, Store};
use tempfile::TempDir;

/// A store on a fresh file; keep the directory alive as long as the store.
pub async fn fresh() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let store = SqliteStore::open(&path).await.unwrap();
    (dir, path, store)
}

/// Now, in seconds, by the system clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn key(kid: &str) -> AgentKey {
    AgentKey {
        kid: kid.to_owned(),
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": format!("x-of-{kid}"), "kid": kid}),
        expires_at: Some(2_000_000_000),
        created_at: 100,
        revoked_at: None,
    }
}

pub fn agent(id: &str, kids: &[&str]) -> Agent {
    Agent {
        id: AgentId::parse(id).unwrap(),
        name: format!("Agent {id}"),
        owner: "alice@example.com".to_owned(),
        description: "answers tickets".to_owned(),
        ceiling: PatternSet::parse(["crm.*:read", "tickets:*"]).unwrap(),
        tags: vec!["ops".into(), "pii".into()],
        max_stage: Stage::Draft,
        status: AgentStatus::Active,
        keys: kids.iter().map(|k| key(k)).collect(),
        created_at: 100,
        updated_at: 100,
    }
}

pub fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        agent: "support-v2".to_owned(),
        user: Some("alice".to_owned()),
        user_issuer: Some("https://idp.example.com".to_owned()),
        purpose: "refund".to_owned(),
        input: "ticket #12847".to_owned(),
        status: TaskStatus::Active,
        created_at: 100,
        updated_at: 100,
        outcome: None,
        completed_at: None,
    }
}

/// A user token of `task` for alice through `support-v2` (kid `s1`), alive for an hour.
pub fn token(jti: &str, parent: Option<&str>, task: &str) -> TokenRecord {
    TokenRecord {
        jti: jti.to_owned(),
        parent_jti: parent.map(str::to_owned),
        task: task.to_owned(),
        sub: "alice".to_owned(),
        sub_profile: "user".to_owned(),
        sub_iss: Some("https://idp.example.com".to_owned()),
        chain: vec!["support-v2".to_owned()],
        credentials: vec!["kid:s1".to_owned()],
        scope: "crm.customers:read tickets:create".to_owned(),
        aud: vec!["https://crm.example.com".to_owned()],
        stage: "draft".to_owned(),
        iat: now(),
        exp: now() + 3600,
        revoked_at: None,
    }
}

pub fn event(kind: &str) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        user: Some("alice".to_owned()),
        chain: vec!["support-v2".to_owned()],
        task: Some("t1".to_owned()),
        action: Some("crm.customers:read".to_owned()),
        resource: Some("https://crm.example.com".to_owned()),
        decision: Some(Decision::Allow),
        reason: String::new(),
        policy_ids: vec!["p1".to_owned()],
        request_id: Some("req-1".to_owned()),
        credential: Some("kid:s1".to_owned()),
        jti: Some("j1".to_owned()),
        detail: String::new(),
    }
}

/// Commits one op that must succeed.
pub async fn commit1(store: &SqliteStore, op: Op) -> OpOutput {
    let mut out = store.commit(vec![op]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// Appends an event and returns it as sealed.
pub async fn append(store: &SqliteStore, e: NewEvent) -> AuditEvent {
    match commit1(store, Op::Audit(e)).await {
        OpOutput::Audit(e) => e,
        other => panic!("expected an audit event, got {other:?}"),
    }
}

/// The whole audit log.
pub async fn all_events(store: &SqliteStore) -> Vec<AuditEvent> {
    store.audit_after(0, u32::MAX).await.unwrap()
}
