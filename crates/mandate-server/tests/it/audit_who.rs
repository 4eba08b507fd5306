//! "Who accessed X on day D" (SPEC §7, issue 7) on a log of thousands of events from many users
//! and agents, multi-hop chains included, spread over three days: the one query answers exactly
//! what a brute-force scan of the whole log answers, for resources, users and agents anywhere in
//! the chain.

use std::collections::BTreeMap;

use mandate_core::audit::{Decision, NewEvent};
use mandate_store::Op;
use serde_json::Value;

use super::harness::*;

const EVENTS: u64 = 3_000;

/// A deterministic spread of users, chains (1–3 agents), resources and decisions.
fn event(i: u64) -> NewEvent {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = |n: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let hops = 1 + next(3);
    let chain = (0..hops).map(|_| format!("agent-{}", next(8))).collect();
    NewEvent {
        kind: "gateway.request".into(),
        user: Some(format!("user-{}@example.com", next(40))),
        chain,
        task: Some(format!("task-{}", next(300))),
        action: Some(
            ["crm.customers:read", "tickets:create", "email:send"][next(3) as usize].into(),
        ),
        resource: Some(format!("customers/{}", next(150))),
        decision: Some(if next(10) == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        }),
        reason: "seeded".into(),
        ..Default::default()
    }
}

async fn all_events(srv: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = srv.audit(&format!("after={after}&limit=1000")).await;
        let Some(last) = page.last() else { break };
        after = last["seq"].as_i64().unwrap();
        out.extend(page);
    }
    out
}

fn day_of(e: &Value) -> &str {
    &e["time"].as_str().unwrap()[..10]
}

#[tokio::test]
async fn who_accessed_a_resource_on_a_day_is_exact_on_thousands_of_events() {
    let mut srv = Server::start().await;
    let store = srv.running().state.store.clone();
    for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(500) {
        let ops = chunk.iter().map(|&i| Op::Audit(event(i))).collect();
        store.commit(ops).await.unwrap();
    }
    drop(store);
    srv.stop().await;
    // Spread the log over three days, in seq order as the writer stamps it (never earlier than
    // the event before); the chain's hashes no longer match, which queries do not check.
    let max = srv
        .database()
        .i64("SELECT MAX(seq) FROM audit_events")
        .await
        .unwrap();
    // Each third of the log is a day; within it the hour grows with seq. (SQL that both SQLite
    // and PostgreSQL run: the hour zero-padded by hand, integers as literals.)
    for (from, to, day) in [
        (0, max / 3, "2026-03-13"),
        (max / 3, 2 * max / 3, "2026-03-14"),
        (2 * max / 3, max + 1, "2026-03-15"),
    ] {
        let hour = format!("(((seq - {from} - 1) * 24) / ({to} - {from}))");
        srv.sql(&format!(
            "UPDATE audit_events
             SET time = '{day}T' || CASE WHEN {hour} < 10 THEN '0' ELSE '' END
                        || CAST({hour} AS TEXT) || ':00:00.000Z'
             WHERE seq > {from} AND seq <= {to}"
        ))
        .await;
    }
    srv.start_again().await;

    let all = all_events(&srv).await;
    assert!(all.len() as u64 >= EVENTS);
    let times: Vec<&str> = all.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times follow seq");
    let mut per_day: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &all {
        *per_day.entry(day_of(e)).or_default() += 1;
    }
    assert!(per_day.len() >= 3, "{per_day:?}");

    let day = "2026-03-14";
    let brute = |pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        all.iter()
            .filter(|e| day_of(e) == day && pred(e))
            .cloned()
            .collect()
    };
    for r in ["customers/7", "customers/42", "customers/149"] {
        let got = srv
            .audit(&format!("resource={r}&on={day}&limit=10000"))
            .await;
        let want = brute(&|e| e["resource"] == r);
        assert!(!want.is_empty(), "{r} was touched on {day}");
        assert_eq!(got, want, "resource {r}");
        // Multi-hop chains and several users are among them.
        let users: std::collections::BTreeSet<&str> =
            got.iter().filter_map(|e| e["user"].as_str()).collect();
        assert!(users.len() > 1, "{r}: {users:?}");
    }
    assert!(
        brute(&|e| e["resource"] == "customers/42")
            .iter()
            .any(|e| e["chain"].as_array().unwrap().len() >= 2)
    );
    for u in ["user-3@example.com", "user-39@example.com"] {
        let got = srv.audit(&format!("user={u}&on={day}&limit=10000")).await;
        assert_eq!(got, brute(&|e| e["user"] == u), "user {u}");
    }
    for a in ["agent-0", "agent-5"] {
        let got = srv.audit(&format!("agent={a}&on={day}&limit=10000")).await;
        let want = brute(&|e| e["chain"].as_array().unwrap().iter().any(|x| x == a));
        assert!(!want.is_empty());
        assert_eq!(got, want, "agent {a} anywhere in the chain");
        let denied = srv
            .audit(&format!(
                "agent={a}&resource=customers/42&decision=deny&on={day}"
            ))
            .await;
        assert_eq!(
            denied,
            brute(&|e| e["resource"] == "customers/42"
                && e["decision"] == "deny"
                && e["chain"].as_array().unwrap().iter().any(|x| x == a)),
        );
    }
    srv.shutdown().await;
}
