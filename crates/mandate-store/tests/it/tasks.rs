//! Tasks as units of work: explicit creation, the agent's steps, completion with an outcome,
//! listings, and the revocations that reached a task.

use mandate_core::audit::NewEvent;
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::task::{TaskStatus, TaskStep, ToolCall};
use mandate_store::{Op, OpOutput, Store, StoreError, TaskFilter};
use serde_json::json;

use super::{all_events, commit1, fresh, now, task, token};

fn step(task: &str, decision: &str) -> TaskStep {
    TaskStep {
        task: task.to_owned(),
        seq: 0,
        time: "2026-03-14T14:32:01.000Z".to_owned(),
        by: "agent:support-v2".to_owned(),
        decision: decision.to_owned(),
        summary: format!("because {decision}"),
        tool_call: Some(ToolCall {
            action: "crm.customers:read".to_owned(),
            resource: "customers/9821".to_owned(),
            arguments: Some(json!({"fields": ["plan", "invoices"]})),
        }),
        anomaly: None,
    }
}

fn step_event(task: &str) -> NewEvent {
    NewEvent {
        kind: "task.step".to_owned(),
        task: Some(task.to_owned()),
        action: Some("task.step".to_owned()),
        detail: json!({"decision": "look up"}).to_string(),
        ..Default::default()
    }
}

fn task_revocation(id: &str, target: &str) -> Op {
    Op::Revoke {
        record: RevocationRecord {
            id: id.to_owned(),
            kind: RevocationKind::Task,
            target: target.to_owned(),
            by: "agent:support-v2".to_owned(),
            reason: "task completed".to_owned(),
            at: now(),
        },
        audit: None,
    }
}

fn complete(id: &str, outcome: &str, at: i64) -> Op {
    Op::CompleteTask {
        id: id.to_owned(),
        outcome: outcome.to_owned(),
        at,
    }
}

async fn append(store: &dyn Store, s: TaskStep, audit: Option<NewEvent>) -> TaskStep {
    match commit1(store, Op::AppendTaskStep { step: s, audit }).await {
        OpOutput::TaskStep(s) => s,
        other => panic!("expected a task step, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_is_inserted_once_with_its_input() {
    let store = fresh().await;
    let t = task("ticket-1");
    commit1(&*store, Op::InsertTask(t.clone())).await;
    assert_eq!(store.task("ticket-1").await.unwrap(), Some(t));

    let mut again = task("ticket-1");
    again.purpose = "something else".to_owned();
    let dup = store.commit(vec![Op::InsertTask(again)]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(
        store.task("ticket-1").await.unwrap().unwrap().purpose,
        "refund"
    );
}

#[tokio::test]
async fn steps_are_numbered_per_task_and_their_events_name_the_number() {
    let store = fresh().await;
    commit1(&*store, Op::InsertTask(task("t-a"))).await;
    commit1(&*store, Op::InsertTask(task("t-b"))).await;

    let first = append(&*store, step("t-a", "look up"), Some(step_event("t-a"))).await;
    let other = append(&*store, step("t-b", "elsewhere"), None).await;
    let mut no_tool = step("t-a", "answer");
    no_tool.tool_call = None;
    no_tool.anomaly = Some("the customer asked for another customer's data".to_owned());
    let second = append(&*store, no_tool.clone(), Some(step_event("t-a"))).await;
    assert_eq!((first.seq, second.seq, other.seq), (1, 2, 1));

    let steps = store.task_steps("t-a").await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0], first);
    assert_eq!(steps[1], TaskStep { seq: 2, ..no_tool });
    assert_eq!(
        steps[0].tool_call.as_ref().unwrap().arguments,
        Some(json!({"fields": ["plan", "invoices"]}))
    );
    assert!(store.task_steps("nothing").await.unwrap().is_empty());

    // Each step's audit event carries its number, merged into what the caller gave.
    let events = all_events(&*store).await;
    let details: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0], json!({"decision": "look up", "step": 1}));
    assert_eq!(details[1]["step"], 2);
}

#[tokio::test]
async fn a_step_needs_an_active_task_and_a_refused_step_writes_nothing() {
    let store = fresh().await;
    let missing = store
        .commit(vec![Op::AppendTaskStep {
            step: step("ghost", "x"),
            audit: Some(step_event("ghost")),
        }])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    commit1(&*store, Op::InsertTask(task("t-done"))).await;
    commit1(&*store, complete("t-done", "answered", 500)).await;
    let late = store
        .commit(vec![Op::AppendTaskStep {
            step: step("t-done", "x"),
            audit: Some(step_event("t-done")),
        }])
        .await;
    match late {
        Err(e @ StoreError::TaskNotActive { .. }) => {
            assert_eq!(e.to_string(), "task `t-done` is completed, not active");
        }
        other => panic!("expected TaskNotActive, got {other:?}"),
    }
    assert!(store.task_steps("t-done").await.unwrap().is_empty());
    assert!(all_events(&*store).await.is_empty());
}

#[tokio::test]
async fn completion_after_the_task_revocation_sets_completed_with_the_outcome() {
    let store = fresh().await;
    commit1(&*store, Op::InsertTask(task("t1"))).await;
    commit1(&*store, Op::InsertToken(token("j1", None, "t1"))).await;
    let at = now();
    let out = store
        .commit(vec![
            task_revocation("rev-1", "t1"),
            complete("t1", "refund issued", at),
        ])
        .await
        .unwrap();
    match &out[0] {
        OpOutput::Revoked(e) => assert_eq!(e.tokens.len(), 1),
        other => panic!("{other:?}"),
    }
    let t = store.task("t1").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.outcome.as_deref(), Some("refund issued"));
    assert_eq!(t.completed_at, Some(at));
    assert!(
        store
            .token("j1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );

    // Completing again, with or without a fresh revocation, is refused and changes nothing.
    for ops in [
        vec![complete("t1", "again", at + 1)],
        vec![
            task_revocation("rev-2", "t1"),
            complete("t1", "again", at + 1),
        ],
    ] {
        let r = store.commit(ops).await;
        assert!(matches!(r, Err(StoreError::TaskNotActive { .. })), "{r:?}");
    }
    let t = store.task("t1").await.unwrap().unwrap();
    assert_eq!(t.outcome.as_deref(), Some("refund issued"));
    assert_eq!(store.revocations().await.unwrap().len(), 1);

    // Revoking a completed task records the revocation but leaves it completed.
    commit1(&*store, task_revocation("rev-3", "t1")).await;
    let t = store.task("t1").await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(store.revocations().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_task_revoked_earlier_cannot_be_completed() {
    let store = fresh().await;
    commit1(&*store, Op::InsertTask(task("t1"))).await;
    commit1(&*store, task_revocation("rev-1", "t1")).await;
    let r = store
        .commit(vec![
            task_revocation("rev-2", "t1"),
            complete("t1", "done", now()),
        ])
        .await;
    match r {
        Err(StoreError::TaskNotActive { status, .. }) => assert_eq!(status, "revoked"),
        other => panic!("expected TaskNotActive, got {other:?}"),
    }
    let t = store.task("t1").await.unwrap().unwrap();
    assert_eq!((t.status, t.outcome), (TaskStatus::Revoked, None));
    let missing = store.commit(vec![complete("ghost", "x", 1)]).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn tasks_are_listed_newest_first_by_agent_user_and_status() {
    let store = fresh().await;
    for (i, (id, agent, user)) in [
        ("t1", "support-v2", Some("alice")),
        ("t2", "support-v2", Some("bob")),
        ("t3", "analytics-v1", Some("alice")),
        ("t4", "support-v2", None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = task(id);
        t.agent = agent.to_owned();
        t.user = user.map(str::to_owned);
        t.created_at = 100 + i as i64;
        commit1(&*store, Op::InsertTask(t)).await;
    }
    commit1(&*store, complete("t2", "done", 200)).await;

    let ids = |tasks: Vec<mandate_core::task::Task>| -> Vec<String> {
        tasks.into_iter().map(|t| t.id).collect()
    };
    let all = store.tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(ids(all), ["t4", "t3", "t2", "t1"]);
    let support = TaskFilter {
        agent: Some("support-v2".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.tasks(&support).await.unwrap()),
        ["t4", "t2", "t1"]
    );
    let alice = TaskFilter {
        user: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(ids(store.tasks(&alice).await.unwrap()), ["t3", "t1"]);
    let completed = TaskFilter {
        status: Some(TaskStatus::Completed),
        ..Default::default()
    };
    let done = store.tasks(&completed).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome.as_deref(), Some("done"));
    let active_support = TaskFilter {
        agent: Some("support-v2".into()),
        status: Some(TaskStatus::Active),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(ids(store.tasks(&active_support).await.unwrap()), ["t4"]);
}

#[tokio::test]
async fn the_revocations_that_reached_a_task_are_found() {
    let store = fresh().await;
    commit1(&*store, Op::InsertTask(task("t1"))).await;
    commit1(&*store, Op::InsertTask(task("t2"))).await;
    commit1(&*store, Op::InsertToken(token("j1", None, "t1"))).await;
    commit1(&*store, Op::InsertToken(token("j2", None, "t2"))).await;
    let mut bob = token("j3", None, "t3");
    bob.sub = "bob".to_owned();
    commit1(&*store, Op::InsertToken(bob)).await;
    let rec = |id: &str, kind, target: &str| Op::Revoke {
        record: RevocationRecord {
            id: id.to_owned(),
            kind,
            target: target.to_owned(),
            by: "admin:root".to_owned(),
            reason: String::new(),
            at: now(),
        },
        audit: None,
    };
    // A user revocation ends j1 (t1) and j2 (t2); the revocation of bob reaches neither; the
    // token revocation of j1 finds it already ended but still names one of t1's tokens; the
    // task revocation of t1 is t1's own.
    commit1(&*store, rec("r-user", RevocationKind::User, "alice")).await;
    commit1(&*store, rec("r-bob", RevocationKind::User, "bob")).await;
    commit1(&*store, rec("r-tok", RevocationKind::Token, "j1")).await;
    commit1(&*store, rec("r-task", RevocationKind::Task, "t1")).await;
    commit1(&*store, rec("r-task2", RevocationKind::Task, "t2")).await;

    let reached: Vec<String> = store
        .task_revocations("t1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.record.id)
        .collect();
    assert_eq!(reached, ["r-user", "r-tok", "r-task"]);
    let t2 = store.task_revocations("t2").await.unwrap();
    assert_eq!(t2.len(), 2);
    assert_eq!(t2[0].record.id, "r-user");
    assert_eq!(
        t2[0].tokens.len(),
        2,
        "the entry keeps every token it ended"
    );
    assert!(store.task_revocations("nothing").await.unwrap().is_empty());
}
