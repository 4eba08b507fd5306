//! The audit log at scale (issue 7): append throughput, then query latency at 10 million events —
//! "who touched this resource on this day" and "what did this user do this week" — through the
//! same `Store::audit` the API's `GET /v1/audit` calls.
//!
//! ```sh
//! cargo bench -p mandate-store --bench audit_scale                      # 10,000,000 events
//! EVENTS=1000000 AUDIT_DB=/tmp/audit.db cargo bench -p mandate-store --bench audit_scale
//! ```
//!
//! A plain timing program (no criterion): filling the log is minutes of work done once, and
//! what matters is the latency of a handful of queries on it.
//!
//! 1. **Append** through `Store::commit` — the real writer: each event hashed onto the chain, its
//!    agents indexed, one transaction per group of units. Measured twice: 20,000 events in units
//!    of 1 from 64 concurrent callers (what the server does: one event per request), then 100,000
//!    in units of 1,000 (what the gateway's batched audit does).
//! 2. **Fill** the rest of `EVENTS` with plain multi-row `INSERT`s (same rows, same indexes, a
//!    placeholder hash: hashing 10 million events through the writer takes most of an hour on
//!    this machine and tells nothing more about queries), with times that cover 90 days in `seq`
//!    order; the events written in step 1 get their times rewritten to the start of that span.
//!    This database is for queries, not for `verify`.
//! 3. **Query**: 200 random (resource, day) and 200 random (user, 7 days) pairs, each a
//!    `Store::audit` with `limit` 1,000, plus (agent, day); p50, p99 and max in ms.
//!
//! The data: 10,000 users, 50 agents (chains of 1–3), 100,000 resources, 12 actions, 9 in 10
//! decisions `allow`; an event per ~0.8 s over 90 days at 10 M events.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_core::audit::{Decision, NewEvent};
use mandate_store::{AuditFilter, Op, SqliteStore, Store};
use sqlx::Connection;

const USERS: u64 = 10_000;
const AGENTS: u64 = 50;
const RESOURCES: u64 = 100_000;
const ACTIONS: [&str; 12] = [
    "crm.customers:read",
    "crm.customers:update",
    "tickets:read",
    "tickets:create",
    "email:send",
    "billing.invoices:read",
    "billing.payments:create",
    "mcp.crm.lookup_customer:call",
    "mcp.crm.delete_customer:call",
    "docs:read",
    "docs:write",
    "calendar:read",
];
const DAYS: u64 = 90;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

/// A question: its name, how many times it is asked, and how to make one.
type Question = (&'static str, usize, fn(&mut Rng) -> AuditFilter);

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(rng: &mut Rng) -> NewEvent {
    let user = rng.below(USERS);
    let hops = 1 + rng.below(3);
    let chain: Vec<String> = (0..hops)
        .map(|_| format!("agent-{}", rng.below(AGENTS)))
        .collect();
    let action = ACTIONS[usize::try_from(rng.below(ACTIONS.len() as u64)).unwrap()];
    let allow = rng.below(10) != 0;
    NewEvent {
        kind: if rng.below(2) == 0 {
            "gateway.request".into()
        } else {
            "token.exchange".into()
        },
        user: Some(format!("user-{user}@example.com")),
        chain,
        task: Some(format!("task-{}", rng.below(1_000_000))),
        action: Some(action.into()),
        resource: Some(format!("customers/{}", rng.below(RESOURCES))),
        decision: Some(if allow {
            Decision::Allow
        } else {
            Decision::Deny
        }),
        reason: if allow {
            "forwarded to `crm`".into()
        } else {
            "the token does not hold scope".into()
        },
        policy_ids: vec!["support-group".into()],
        request_id: Some(format!("req-{}", rng.next())),
        credential: Some("kid:agent-k1".into()),
        jti: Some(format!("jti-{}", rng.next())),
        detail: r#"{"method":"GET","status":200,"ms":1}"#.into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>, rows: usize) {
    samples.sort();
    let p = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        ms(samples[i])
    };
    println!(
        "{name:<28} n={:<4} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   (avg {:.0} rows)",
        samples.len(),
        p(0.5),
        p(0.99),
        ms(*samples.last().unwrap()),
        rows as f64 / samples.len() as f64
    );
}

fn day(d: u64) -> String {
    let t = START + i64::try_from(d * 86_400).unwrap();
    let days = t / 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let dd = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{dd:02}T00:00:00.000Z")
}

/// The time of event `seq` of `events`, spread over [`DAYS`] from [`START`].
fn time_of(seq: u64, events: u64) -> String {
    let ms = (seq - 1) as f64 * (DAYS * 86_400 * 1000) as f64 / events as f64;
    let secs = START + (ms / 1000.0) as i64;
    let millis = (ms as i64) % 1000;
    let d = (secs - START) / 86_400;
    let rest = (secs - START) % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}.{millis:03}Z",
        &day(u64::try_from(d).unwrap())[..10],
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Writes events `from + 1 ..= events` with plain multi-row inserts, and gives the first `from`
/// their times in the span.
async fn fill(path: &std::path::Path, from: u64, events: u64, rng: &mut Rng) {
    let t = Instant::now();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await
        .unwrap();
    for seq in 1..=from {
        sqlx::query("UPDATE audit_events SET time = ? WHERE seq = ?")
            .bind(time_of(seq, events))
            .bind(i64::try_from(seq).unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let placeholder = "0".repeat(64);
    let mut seq = from;
    const ROWS: u64 = 200;
    while seq < events {
        let mut tx = conn.begin().await.unwrap();
        for _ in 0..(100_000 / ROWS) {
            if seq >= events {
                break;
            }
            let n = ROWS.min(events - seq);
            let batch: Vec<(u64, NewEvent)> = (0..n).map(|i| (seq + 1 + i, event(rng))).collect();
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_events (seq, time, kind, user, chain, task, action, resource, \
                 decision, reason, policy_ids, request_id, credential, jti, detail, prev_hash, hash) ",
            );
            q.push_values(&batch, |mut b, (s, e)| {
                b.push_bind(i64::try_from(*s).unwrap())
                    .push_bind(time_of(*s, events))
                    .push_bind(e.kind.clone())
                    .push_bind(e.user.clone())
                    .push_bind(serde_json::to_string(&e.chain).unwrap())
                    .push_bind(e.task.clone())
                    .push_bind(e.action.clone())
                    .push_bind(e.resource.clone())
                    .push_bind(e.decision.unwrap().as_str())
                    .push_bind(e.reason.clone())
                    .push_bind(serde_json::to_string(&e.policy_ids).unwrap())
                    .push_bind(e.request_id.clone())
                    .push_bind(e.credential.clone())
                    .push_bind(e.jti.clone())
                    .push_bind(e.detail.clone())
                    .push_bind(placeholder.clone())
                    .push_bind(placeholder.clone());
            });
            q.build().execute(&mut *tx).await.unwrap();
            let mut pairs: Vec<(String, i64)> = Vec::new();
            for (s, e) in &batch {
                let mut agents: Vec<&String> = e.chain.iter().collect();
                agents.sort();
                agents.dedup();
                pairs.extend(
                    agents
                        .into_iter()
                        .map(|a| (a.clone(), i64::try_from(*s).unwrap())),
                );
            }
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_event_agents (agent, seq) ",
            );
            q.push_values(&pairs, |mut b, (a, s)| {
                b.push_bind(a.clone()).push_bind(*s);
            });
            q.build().execute(&mut *tx).await.unwrap();
            seq += n;
        }
        tx.commit().await.unwrap();
        if seq % 1_000_000 < 100_000 {
            println!("  … {seq} events, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    conn.close().await.unwrap();
    println!(
        "filled to {events} events over {DAYS} days in {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

async fn query(store: &SqliteStore, filter: AuditFilter) -> (Duration, usize) {
    let t = Instant::now();
    let found = store.audit(&filter).await.unwrap();
    (t.elapsed(), found.len())
}

#[tokio::main]
async fn main() {
    let events: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("AUDIT_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("audit.db"));
    let reuse = path.exists();
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    println!("audit log at {} ({events} events)", path.display());

    if !reuse {
        // 1a. One event per unit, 64 callers: the server's shape.
        let single = 20_000.min(events);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                let mut i = w;
                while i < single {
                    store
                        .commit(vec![Op::Audit(event(&mut rng))])
                        .await
                        .unwrap();
                    i += 64;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let el = t.elapsed();
        println!(
            "append, 1 event per unit, 64 callers: {single} events in {:.1} s = {:.0} events/s",
            el.as_secs_f64(),
            single as f64 / el.as_secs_f64()
        );
        // 1b. Units of 1,000.
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let bulk = 100_000.min(events - single);
        let t = Instant::now();
        let mut done = 0;
        while done < bulk {
            let n = 1_000.min(bulk - done);
            let ops = (0..n).map(|_| Op::Audit(event(&mut rng))).collect();
            store.commit(ops).await.unwrap();
            done += n;
        }
        let el = t.elapsed();
        if bulk > 0 {
            println!(
                "append, 1,000 events per unit: {bulk} events in {:.1} s = {:.0} events/s",
                el.as_secs_f64(),
                bulk as f64 / el.as_secs_f64()
            );
        }
        store.close().await;
        fill(&path, single + bulk, events, &mut rng).await;
    } else {
        store.close().await;
    }
    let store = SqliteStore::open_read_only(&path).await.unwrap();

    // 3. Queries: each question asked `n` times with random values (the same ones every run).
    let mut rng = Rng(42);
    let questions: [Question; 4] = [
        ("resource + day", 200, |rng| {
            let d = rng.below(DAYS);
            AuditFilter {
                resource: Some(format!("customers/{}", rng.below(RESOURCES))),
                since: Some(day(d)),
                until: Some(day(d + 1)),
                ..Default::default()
            }
        }),
        ("user + week", 200, |rng| {
            let d = rng.below(DAYS - 7);
            AuditFilter {
                user: Some(format!("user-{}@example.com", rng.below(USERS))),
                since: Some(day(d)),
                until: Some(day(d + 7)),
                ..Default::default()
            }
        }),
        ("agent (in chain) + day", 50, |rng| {
            let d = rng.below(DAYS);
            AuditFilter {
                agent: Some(format!("agent-{}", rng.below(AGENTS))),
                since: Some(day(d)),
                until: Some(day(d + 1)),
                ..Default::default()
            }
        }),
        ("resource, all time", 50, |rng| AuditFilter {
            resource: Some(format!("customers/{}", rng.below(RESOURCES))),
            ..Default::default()
        }),
    ];
    for (name, n, make) in questions {
        let (mut times, mut rows) = (Vec::new(), 0);
        for _ in 0..n {
            let filter = AuditFilter {
                limit: Some(1_000),
                ..make(&mut rng)
            };
            let (t, found) = query(&store, filter).await;
            times.push(t);
            rows += found;
        }
        report(name, times, rows);
    }
    store.close().await;
}
