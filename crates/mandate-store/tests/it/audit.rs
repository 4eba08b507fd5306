//! Audit queries.

use std::time::Duration;

use mandate_core::audit::{AuditEvent, Decision, NewEvent, verify_chain};
use mandate_store::{AuditFilter, Op, OpOutput, Store};

use super::{all_events, append, event, fresh};

fn ev(
    kind: &str,
    user: Option<&str>,
    chain: &[&str],
    task: Option<&str>,
    resource: &str,
    decision: Option<Decision>,
) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        user: user.map(str::to_owned),
        chain: chain.iter().map(|a| (*a).to_owned()).collect(),
        task: task.map(str::to_owned),
        action: Some(format!("{resource}:read")),
        resource: Some(resource.to_owned()),
        decision,
        reason: if decision == Some(Decision::Deny) {
            "outside the ceiling".to_owned()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

async fn seqs(store: &dyn Store, filter: AuditFilter) -> Vec<i64> {
    store
        .audit(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect()
}

/// Four events, at least a few milliseconds apart.
async fn sample(store: &dyn Store) -> Vec<AuditEvent> {
    let events = [
        ev(
            "token.exchange",
            Some("alice"),
            &["support-v2"],
            Some("t1"),
            "crm",
            Some(Decision::Allow),
        ),
        ev(
            "token.exchange",
            Some("bob"),
            &["support-v2", "analytics-v1"],
            Some("t2"),
            "tickets",
            Some(Decision::Deny),
        ),
        ev(
            "gateway.request",
            Some("alice"),
            &["analytics-v1", "support-v2", "analytics-v1"],
            Some("t1"),
            "crm",
            Some(Decision::Deny),
        ),
        ev("agent.register", None, &[], None, "agent", None),
    ];
    let mut sealed = Vec::new();
    for e in events {
        sealed.push(append(store, e).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sealed
}

#[tokio::test]
async fn filters_select_the_right_events() {
    let store = fresh().await;
    let sealed = sample(&*store).await;
    assert_eq!(
        sealed[3].decision,
        Decision::Info,
        "absent decision means info"
    );
    assert_eq!(sealed[3].detail, "{}");

    let f = AuditFilter::default;
    assert_eq!(seqs(&*store, f()).await, [1, 2, 3, 4]);
    let user = |u: &str| AuditFilter {
        user: Some(u.to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, user("alice")).await, [1, 3]);
    assert_eq!(
        seqs(&*store, user("alice' OR '1'='1")).await,
        Vec::<i64>::new()
    );
    let agent = |a: &str| AuditFilter {
        agent: Some(a.to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, agent("analytics-v1")).await, [2, 3]);
    assert_eq!(seqs(&*store, agent("support-v2")).await, [1, 2, 3]);
    assert_eq!(seqs(&*store, agent("nobody")).await, Vec::<i64>::new());
    let task = AuditFilter {
        task: Some("t1".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, task).await, [1, 3]);
    let resource = AuditFilter {
        resource: Some("crm".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, resource).await, [1, 3]);
    let action = AuditFilter {
        action: Some("tickets:read".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, action).await, [2]);
    let deny = AuditFilter {
        decision: Some("deny".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, deny).await, [2, 3]);
    let info = AuditFilter {
        decision: Some("info".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, info).await, [4]);
    let kind = AuditFilter {
        kind: Some("token.exchange".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, kind).await, [1, 2]);
    let combined = AuditFilter {
        user: Some("alice".to_owned()),
        decision: Some("deny".to_owned()),
        agent: Some("analytics-v1".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, combined).await, [3]);

    // since is inclusive, until exclusive.
    let window = AuditFilter {
        since: Some(sealed[1].time.clone()),
        until: Some(sealed[3].time.clone()),
        ..f()
    };
    assert_eq!(seqs(&*store, window).await, [2, 3]);
    // An agent within a window (the agent's events are walked as a seq range).
    let agent_in = |a: &str, since: Option<usize>, until: Option<usize>| AuditFilter {
        agent: Some(a.to_owned()),
        since: since.map(|i| sealed[i].time.clone()),
        until: until.map(|i| sealed[i].time.clone()),
        ..f()
    };
    assert_eq!(
        seqs(&*store, agent_in("support-v2", Some(1), Some(3))).await,
        [2, 3]
    );
    assert_eq!(
        seqs(&*store, agent_in("support-v2", Some(2), None)).await,
        [3]
    );
    assert_eq!(
        seqs(&*store, agent_in("support-v2", None, Some(1))).await,
        [1]
    );
    assert_eq!(
        seqs(&*store, agent_in("analytics-v1", Some(0), Some(1))).await,
        Vec::<i64>::new()
    );
    // A window after the last event, and one before the first.
    let later = AuditFilter {
        agent: Some("support-v2".to_owned()),
        since: Some("2999-01-01T00:00:00.000Z".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, later).await, Vec::<i64>::new());
    let earlier = AuditFilter {
        agent: Some("support-v2".to_owned()),
        until: Some("2000-01-01T00:00:00.000Z".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, earlier).await, Vec::<i64>::new());
    let open_end = AuditFilter {
        agent: Some("support-v2".to_owned()),
        since: Some("2000-01-01T00:00:00.000Z".to_owned()),
        until: Some("2999-01-01T00:00:00.000Z".to_owned()),
        ..f()
    };
    assert_eq!(seqs(&*store, open_end).await, [1, 2, 3]);
    let after = AuditFilter {
        after_seq: Some(2),
        ..f()
    };
    assert_eq!(seqs(&*store, after).await, [3, 4]);
    let first_two = AuditFilter {
        limit: Some(2),
        ..f()
    };
    assert_eq!(seqs(&*store, first_two).await, [1, 2]);
    let newest_two = AuditFilter {
        limit: Some(2),
        newest_first: true,
        ..f()
    };
    assert_eq!(seqs(&*store, newest_two).await, [4, 3]);

    // Events read back are the events sealed, so the chain verifies.
    let all = store.audit(&f()).await.unwrap();
    assert_eq!(all, sealed);
    assert!(verify_chain(all).first_break.is_none());
}

#[tokio::test]
async fn the_default_limit_is_one_hundred() {
    let store = fresh().await;
    let ops: Vec<Op> = (0..130)
        .map(|i| Op::Audit(ev("test", Some(&format!("u{i}")), &[], None, "r", None)))
        .collect();
    assert_eq!(store.commit(ops).await.unwrap().len(), 130);
    let page = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(page.len(), 100);
    assert_eq!(page[0].seq, 1);
    let more = store
        .audit(&AuditFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(more.len(), 130);
    // audit_after pages through the whole chain.
    let mut walked = store.audit_after(0, 50).await.unwrap();
    assert_eq!(walked.len(), 50);
    while let Some(last) = walked.last().map(|e| e.seq) {
        let next = store.audit_after(last, 50).await.unwrap();
        if next.is_empty() {
            break;
        }
        walked.extend(next);
    }
    assert_eq!(walked, more);
}

#[tokio::test]
async fn a_units_many_audit_events_chain_like_single_ones() {
    let mut store = fresh().await;
    append(&*store, event("before")).await;
    // 120 events (several multi-row statements), then another op, then more events: one unit.
    let mut ops: Vec<Op> = (0..120)
        .map(|i| {
            let mut e = event(&format!("batch-{i}"));
            e.chain = vec![format!("agent-{}", i % 7), "relay".into()];
            Op::Audit(e)
        })
        .collect();
    ops.push(Op::UseOnce {
        key: "batch|jti".into(),
        exp: i64::MAX,
    });
    ops.extend((0..3).map(|i| Op::Audit(event(&format!("after-{i}")))));
    let out = store.commit(ops).await.unwrap();
    assert_eq!(out.len(), 124);
    let seqs: Vec<i64> = out
        .iter()
        .filter_map(|o| match o {
            OpOutput::Audit(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (2..=124).collect::<Vec<_>>());
    let all = all_events(&*store).await;
    assert_eq!(all.len(), 124);
    assert!(verify_chain(all.clone()).is_ok());
    let relay = AuditFilter {
        agent: Some("relay".into()),
        limit: Some(1000),
        ..Default::default()
    };
    assert_eq!(store.audit(&relay).await.unwrap().len(), 120);
    let one = AuditFilter {
        agent: Some("agent-3".into()),
        limit: Some(1000),
        ..Default::default()
    };
    assert_eq!(store.audit(&one).await.unwrap().len(), 17);

    // A unit that fails after its events leaves nothing behind, and the chain goes on.
    let failing = vec![
        Op::Audit(event("lost-1")),
        Op::Audit(event("lost-2")),
        Op::UseOnce {
            key: "batch|jti".into(),
            exp: i64::MAX,
        },
    ];
    assert!(store.commit(failing).await.is_err());
    let next = append(&*store, event("next")).await;
    assert_eq!(next.seq, 125);
    store.reopen().await;
    let all = all_events(&*store).await;
    assert_eq!(all.len(), 125);
    assert!(verify_chain(all).is_ok());
}
