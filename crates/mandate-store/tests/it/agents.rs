//! Agents and their keys.

use mandate_core::agent::{AgentStatus, WorkloadBinding};
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_store::{Op, StoreError};

use super::{agent, commit1, fresh, key};

#[tokio::test]
async fn agents_round_trip_and_list_by_id() {
    let store = fresh().await;
    let mut b = agent("support-v2", &["s1", "s0"]);
    b.workloads = vec![
        WorkloadBinding::Spiffe {
            id: "spiffe://prod.example/ns/support/sa/*".to_owned(),
        },
        WorkloadBinding::Oidc {
            issuer: "https://token.actions.githubusercontent.com".to_owned(),
            subject: "repo:acme/support:*".to_owned(),
        },
    ];
    b.require_dpop = true;
    let a = agent("analytics-v1", &[]);
    commit1(&*store, Op::InsertAgent(b.clone())).await;
    commit1(&*store, Op::InsertAgent(a.clone())).await;

    // Keys come back in registration order, the JWK and the ceiling unchanged.
    assert_eq!(store.agent("support-v2").await.unwrap(), Some(b.clone()));
    assert_eq!(store.agent("analytics-v1").await.unwrap(), Some(a.clone()));
    assert_eq!(store.agent("nobody").await.unwrap(), None);
    assert_eq!(store.agents().await.unwrap(), vec![a, b]);
}

#[tokio::test]
async fn update_replaces_fields_but_not_keys() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;

    let mut changed = agent("support-v2", &[]);
    changed.name = "Support, second edition".to_owned();
    changed.ceiling = PatternSet::parse(["crm.customers:read"]).unwrap();
    changed.max_stage = Stage::Execute;
    changed.updated_at = 200;
    changed.require_dpop = true;
    changed.workloads = vec![WorkloadBinding::Spiffe {
        id: "spiffe://prod.example/agent".to_owned(),
    }];
    commit1(&*store, Op::UpdateAgent(changed.clone())).await;

    let got = store.agent("support-v2").await.unwrap().unwrap();
    assert_eq!(got.name, "Support, second edition");
    assert_eq!(got.ceiling, changed.ceiling);
    assert_eq!(got.max_stage, Stage::Execute);
    assert_eq!(got.updated_at, 200);
    assert!(got.require_dpop);
    assert_eq!(got.workloads, changed.workloads);
    assert_eq!(
        got.keys,
        vec![key("s1")],
        "keys are not replaced by an update"
    );

    let missing = store
        .commit(vec![Op::UpdateAgent(agent("ghost", &[]))])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn status_changes_and_missing_agents() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    commit1(
        &*store,
        Op::SetAgentStatus {
            id: "support-v2".to_owned(),
            status: AgentStatus::Suspended,
            at: 300,
        },
    )
    .await;
    let got = store.agent("support-v2").await.unwrap().unwrap();
    assert_eq!(got.status, AgentStatus::Suspended);
    assert_eq!(got.updated_at, 300);

    let missing = store
        .commit(vec![Op::SetAgentStatus {
            id: "ghost".to_owned(),
            status: AgentStatus::Retired,
            at: 300,
        }])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn duplicate_agent_is_a_conflict_and_changes_nothing() {
    let store = fresh().await;
    let original = agent("support-v2", &["s1"]);
    commit1(&*store, Op::InsertAgent(original.clone())).await;
    let mut again = agent("support-v2", &["other"]);
    again.name = "impostor".to_owned();
    let r = store.commit(vec![Op::InsertAgent(again)]).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(store.agent("support-v2").await.unwrap(), Some(original));
}

#[tokio::test]
async fn keys_are_added_removed_and_revoked() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    commit1(&*store, Op::InsertAgent(agent("analytics-v1", &["shared"]))).await;

    commit1(
        &*store,
        Op::AddAgentKey {
            agent: "support-v2".to_owned(),
            key: key("s2"),
        },
    )
    .await;
    let kids = |a: mandate_core::agent::Agent| -> Vec<String> {
        a.keys.into_iter().map(|k| k.kid).collect()
    };
    assert_eq!(
        kids(store.agent("support-v2").await.unwrap().unwrap()),
        ["s1", "s2"]
    );

    let dup = store
        .commit(vec![Op::AddAgentKey {
            agent: "support-v2".to_owned(),
            key: key("s2"),
        }])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let no_agent = store
        .commit(vec![Op::AddAgentKey {
            agent: "ghost".to_owned(),
            key: key("g1"),
        }])
        .await;
    assert!(
        matches!(no_agent, Err(StoreError::NotFound(_))),
        "{no_agent:?}"
    );

    commit1(
        &*store,
        Op::RemoveAgentKey {
            agent: "support-v2".to_owned(),
            kid: "s1".to_owned(),
        },
    )
    .await;
    assert_eq!(
        kids(store.agent("support-v2").await.unwrap().unwrap()),
        ["s2"]
    );
    let gone = store
        .commit(vec![Op::RemoveAgentKey {
            agent: "support-v2".to_owned(),
            kid: "s1".to_owned(),
        }])
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");

    // Revoking a kid marks it on every agent that has it, and only that kid.
    commit1(
        &*store,
        Op::AddAgentKey {
            agent: "support-v2".to_owned(),
            key: key("shared"),
        },
    )
    .await;
    commit1(
        &*store,
        Op::RevokeAgentKey {
            kid: "shared".to_owned(),
            at: 500,
        },
    )
    .await;
    for id in ["support-v2", "analytics-v1"] {
        let a = store.agent(id).await.unwrap().unwrap();
        let shared = a.keys.iter().find(|k| k.kid == "shared").unwrap();
        assert_eq!(shared.revoked_at, Some(500), "{id}");
        assert!(a.usable_key("shared", 400).is_none());
    }
    let support = store.agent("support-v2").await.unwrap().unwrap();
    assert!(support.usable_key("s2", 400).is_some());
}
