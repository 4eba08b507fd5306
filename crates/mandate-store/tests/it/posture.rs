//! Posture reads (usage aggregated by the database, justifications) and access reviews.

use mandate_core::posture::{Review, ReviewStatus};
use mandate_store::{Op, ReviewFilter, StoreError};

use super::*;

fn issued(jti: &str, chain: &[&str], kids: &[&str], scope: &str, iat: i64) -> TokenRecord {
    let mut t = token(jti, None, "t1");
    t.chain = chain.iter().map(|a| (*a).to_owned()).collect();
    t.credentials = kids.iter().map(|k| format!("kid:{k}")).collect();
    t.scope = scope.to_owned();
    t.iat = iat;
    t.exp = iat + 300;
    t
}

#[tokio::test]
async fn usage_counts_the_current_actor_of_each_token() {
    let store = fresh().await;
    commit1(&*store, Op::EnsureTask(task("t1"))).await;
    let base = 1_700_000_040; // a minute boundary
    for (jti, chain, kids, scope, iat) in [
        (
            "a",
            &["support-v2"][..],
            &["s1"][..],
            "crm.customers:read",
            base,
        ),
        (
            "b",
            &["support-v2"],
            &["s1"],
            "crm.customers:read",
            base + 10,
        ),
        ("c", &["support-v2"], &["s2"], "tickets:create", base + 20),
        (
            "d",
            &["support-v2"],
            &["s1"],
            "crm.customers:read",
            base + 70,
        ),
        // A hop: analytics-v1 is the current actor; support-v2's credential is only carried.
        (
            "e",
            &["support-v2", "analytics-v1"],
            &["s1", "a1"],
            "crm.invoices:read",
            base + 100,
        ),
        // Long ago, outside the peak window but still the last use of a credential.
        (
            "f",
            &["analytics-v1"],
            &["a0"],
            "billing.invoices:read",
            1000,
        ),
    ] {
        commit1(
            &*store,
            Op::InsertToken(issued(jti, chain, kids, scope, iat)),
        )
        .await;
    }
    let u = store.usage(base - 5).await.unwrap();
    let creds: Vec<(&str, &str, i64)> = u
        .credentials
        .iter()
        .map(|c| (c.agent.as_str(), c.credential.as_str(), c.last_used))
        .collect();
    assert_eq!(
        creds,
        [
            ("analytics-v1", "a0", 1000),
            ("analytics-v1", "a1", base + 100),
            ("support-v2", "s1", base + 70),
            ("support-v2", "s2", base + 20),
        ]
    );
    let scopes: Vec<(&str, &str, i64)> = u
        .scopes
        .iter()
        .map(|s| (s.agent.as_str(), s.scopes.as_str(), s.last_used))
        .collect();
    assert_eq!(
        scopes,
        [
            ("analytics-v1", "billing.invoices:read", 1000),
            ("analytics-v1", "crm.invoices:read", base + 100),
            ("support-v2", "crm.customers:read", base + 70),
            ("support-v2", "tickets:create", base + 20),
        ]
    );
    assert_eq!(u.peak("support-v2"), 3, "{:?}", u.peaks);
    assert_eq!(
        u.peak("analytics-v1"),
        1,
        "the token of 1000 is before `since`"
    );
    assert_eq!(u.peak("nobody"), 0);
    store.close().await;
}

#[tokio::test]
async fn justifications_are_set_replaced_and_forgotten() {
    let store = fresh().await;
    commit1(&*store, Op::InsertAgent(agent("support-v2", &["s1"]))).await;
    let set = |pattern: &str, text: Option<&str>, at: i64| Op::SetJustification {
        agent: "support-v2".into(),
        pattern: pattern.into(),
        text: text.map(str::to_owned),
        by: "admin:bootstrap".into(),
        at,
    };
    store
        .commit(vec![
            set("tickets:*", Some("files tickets"), 10),
            set("crm.*:read", Some("reads customers"), 10),
        ])
        .await
        .unwrap();
    commit1(
        &*store,
        set("tickets:*", Some("files and closes tickets"), 20),
    )
    .await;
    let j = store.justifications().await.unwrap();
    assert_eq!(j.len(), 2);
    assert_eq!(j[1].pattern, "tickets:*");
    assert_eq!(j[1].text, "files and closes tickets");
    assert_eq!(j[1].at, 20);
    commit1(&*store, set("crm.*:read", None, 30)).await;
    let j = store.justifications().await.unwrap();
    assert_eq!(j.len(), 1);
    let err = store
        .commit(vec![Op::SetJustification {
            agent: "ghost".into(),
            pattern: "x:y".into(),
            text: Some("z".into()),
            by: "admin:bootstrap".into(),
            at: 1,
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store.close().await;
}

fn review(id: &str, agent: &str, created_at: i64) -> Review {
    Review {
        id: id.into(),
        campaign: "rc-1".into(),
        agent: agent.into(),
        owner: "carol@example.com".into(),
        ceiling: vec!["crm.*:read".into(), "tickets:*".into()],
        status: ReviewStatus::Open,
        opened_by: "admin:bootstrap".into(),
        created_at,
        due_at: created_at + 14 * 86_400,
        decided_by: None,
        decided_at: None,
        removed: Vec::new(),
        note: None,
    }
}

#[tokio::test]
async fn reviews_are_listed_and_answered_once() {
    let store = fresh().await;
    commit1(
        &*store,
        Op::InsertReview(Box::new(review("rv-1", "a", 100))),
    )
    .await;
    commit1(
        &*store,
        Op::InsertReview(Box::new(review("rv-2", "b", 200))),
    )
    .await;
    let err = store
        .commit(vec![Op::InsertReview(Box::new(review("rv-1", "a", 300)))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.review("rv-1").await.unwrap(),
        Some(review("rv-1", "a", 100))
    );
    let all = store.reviews(&ReviewFilter::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["rv-2", "rv-1"], "newest first");

    let answer = |id: &str, status: ReviewStatus| Op::DecideReview {
        id: id.into(),
        status,
        by: "carol@example.com".into(),
        at: 500,
        removed: vec!["tickets:*".into()],
        note: Some("no more tickets".into()),
    };
    commit1(&*store, answer("rv-1", ReviewStatus::Narrowed)).await;
    let err = store
        .commit(vec![answer("rv-1", ReviewStatus::Attested)])
        .await
        .unwrap_err();
    match err {
        StoreError::ReviewClosed { id, status } => {
            assert_eq!((id.as_str(), status.as_str()), ("rv-1", "narrowed"))
        }
        other => panic!("expected ReviewClosed, got {other:?}"),
    }
    let err = store
        .commit(vec![answer("rv-9", ReviewStatus::Attested)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let r = store.review("rv-1").await.unwrap().unwrap();
    assert_eq!(r.status, ReviewStatus::Narrowed);
    assert_eq!(r.decided_by.as_deref(), Some("carol@example.com"));
    assert_eq!(r.decided_at, Some(500));
    assert_eq!(r.removed, ["tickets:*"]);
    assert_eq!(r.note.as_deref(), Some("no more tickets"));

    let open = store
        .reviews(&ReviewFilter {
            status: Some(ReviewStatus::Open),
            ..ReviewFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, "rv-2");
    let of_a = store
        .reviews(&ReviewFilter {
            agent: Some("a".into()),
            owner: Some("carol@example.com".into()),
            campaign: Some("rc-1".into()),
            limit: Some(5),
            ..ReviewFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 1);
    store.close().await;
}
