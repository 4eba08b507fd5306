//! Approvals: recorded, decided exactly once, carried out at most once, polled, listed, kept
//! across a reopen.

use mandate_core::approval::{Approval, Ask, Decided, Dispatch, Status};
use mandate_store::{ApprovalFilter, Op, OpOutput, Store, StoreError, StoredApproval};

use super::{commit1, fresh};

fn held(id: &str, agent: &str, user: &str, at: i64) -> StoredApproval {
    StoredApproval {
        approval: Approval {
            id: id.to_owned(),
            ask: Ask::HeldWrite {
                method: "POST".into(),
                path: "/tickets".into(),
                action: "tickets:create".into(),
                resource: "tickets".into(),
            },
            user: Some(user.to_owned()),
            chain: vec![agent.to_owned()],
            agent: agent.to_owned(),
            task: None,
            justification: String::new(),
            binding_message: "POST /tickets".into(),
            created_at: at,
            expires_at: at + 600,
            decided: None,
        },
        payload: r#"{"body":"aGk="}"#.into(),
        dispatch: Dispatch::NotSent,
        outcome: None,
        last_poll: None,
        poll_interval: 5,
    }
}

fn decision(approved: bool, by: &str) -> Decided {
    Decided {
        approved,
        by: by.to_owned(),
        reason: "looks right".into(),
        at: 1_000,
    }
}

async fn claim(store: &dyn Store, id: &str) -> bool {
    match commit1(store, Op::ClaimApproval { id: id.into() }).await {
        OpOutput::Claimed(c) => c,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn decided_once_then_claimed_once_then_finished() {
    let store = fresh().await;
    commit1(
        &*store,
        Op::InsertApproval(Box::new(held("ap-1", "support-v2", "alice", 900))),
    )
    .await;
    let dup = store
        .commit(vec![Op::InsertApproval(Box::new(held(
            "ap-1", "x", "y", 1,
        )))])
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    assert!(
        !claim(&*store, "ap-1").await,
        "a pending approval cannot be claimed"
    );
    commit1(
        &*store,
        Op::DecideApproval {
            id: "ap-1".into(),
            decided: decision(true, "carol"),
        },
    )
    .await;
    let again = store
        .commit(vec![Op::DecideApproval {
            id: "ap-1".into(),
            decided: decision(false, "dave"),
        }])
        .await;
    match again {
        Err(StoreError::AlreadyDecided { id, status }) => {
            assert_eq!((id.as_str(), status.as_str()), ("ap-1", "approved"));
        }
        other => panic!("expected AlreadyDecided, got {other:?}"),
    }
    let got = store.approval("ap-1").await.unwrap().unwrap();
    assert_eq!(got.approval.status(), Status::Approved);
    assert_eq!(got.approval.decided.as_ref().unwrap().by, "carol");

    let undispatched = ApprovalFilter {
        undispatched: true,
        ..Default::default()
    };
    assert_eq!(store.approvals(&undispatched).await.unwrap().len(), 1);
    assert!(claim(&*store, "ap-1").await, "the first claim wins");
    assert!(!claim(&*store, "ap-1").await, "the second claim loses");
    assert!(store.approvals(&undispatched).await.unwrap().is_empty());
    assert_eq!(
        store.approval("ap-1").await.unwrap().unwrap().dispatch,
        Dispatch::Sending
    );
    commit1(
        &*store,
        Op::FinishApproval {
            id: "ap-1".into(),
            outcome: r#"{"status":201}"#.into(),
        },
    )
    .await;
    let got = store.approval("ap-1").await.unwrap().unwrap();
    assert_eq!(got.dispatch, Dispatch::Sent);
    assert_eq!(got.outcome.as_deref(), Some(r#"{"status":201}"#));
    assert!(!claim(&*store, "ap-1").await);
}

#[tokio::test]
async fn a_denied_approval_is_never_claimed_and_unknown_ids_are_not_found() {
    let store = fresh().await;
    commit1(
        &*store,
        Op::InsertApproval(Box::new(held("ap-2", "support-v2", "alice", 900))),
    )
    .await;
    commit1(
        &*store,
        Op::DecideApproval {
            id: "ap-2".into(),
            decided: decision(false, "carol"),
        },
    )
    .await;
    assert!(!claim(&*store, "ap-2").await);
    for op in [
        Op::ClaimApproval { id: "nope".into() },
        Op::DecideApproval {
            id: "nope".into(),
            decided: decision(true, "carol"),
        },
        Op::FinishApproval {
            id: "nope".into(),
            outcome: "{}".into(),
        },
        Op::PollApproval {
            id: "nope".into(),
            at: 1,
            interval: 5,
        },
    ] {
        let r = store.commit(vec![op]).await;
        assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    }
}

#[tokio::test]
async fn listing_filters_and_polls_survive_a_reopen() {
    let mut store = fresh().await;
    for (id, agent, user, at) in [
        ("ap-a", "support-v2", "alice", 100),
        ("ap-b", "analytics-v1", "bob", 200),
        ("ap-c", "support-v2", "bob", 300),
    ] {
        commit1(
            &*store,
            Op::InsertApproval(Box::new(held(id, agent, user, at))),
        )
        .await;
    }
    commit1(
        &*store,
        Op::DecideApproval {
            id: "ap-a".into(),
            decided: decision(true, "carol"),
        },
    )
    .await;
    commit1(
        &*store,
        Op::PollApproval {
            id: "ap-b".into(),
            at: 250,
            interval: 10,
        },
    )
    .await;
    let listed = store.approvals(&ApprovalFilter::default()).await.unwrap();
    assert!(
        listed.iter().all(|a| a.payload.is_empty()),
        "a listing leaves the payloads out"
    );
    let ids = |v: Vec<StoredApproval>| v.into_iter().map(|a| a.approval.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.approvals(&ApprovalFilter::default()).await.unwrap()),
        ["ap-c", "ap-b", "ap-a"],
        "newest first"
    );
    let pending = ApprovalFilter {
        status: Some(Status::Pending),
        ..Default::default()
    };
    assert_eq!(
        ids(store.approvals(&pending).await.unwrap()),
        ["ap-c", "ap-b"]
    );
    let support = ApprovalFilter {
        agent: Some("support-v2".into()),
        user: Some("bob".into()),
        kind: Some("held_write".into()),
        ..Default::default()
    };
    assert_eq!(ids(store.approvals(&support).await.unwrap()), ["ap-c"]);
    let one = ApprovalFilter {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(ids(store.approvals(&one).await.unwrap()), ["ap-c"]);

    store.reopen().await;
    let b = store.approval("ap-b").await.unwrap().unwrap();
    assert_eq!((b.last_poll, b.poll_interval), (Some(250), 10));
    let a = store.approval("ap-a").await.unwrap().unwrap();
    assert_eq!(a.approval.status(), Status::Approved);
    assert_eq!(a.payload, r#"{"body":"aGk="}"#);
}
