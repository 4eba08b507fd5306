//! `mandate-seed`: fills the data directory of a stopped `mandate serve --dev` server with extra
//! state for the scaling curves (`bench/curves.sh`, see `docs/BENCHMARKS.md`).
//!
//! The server must be stopped while this runs (it keeps the audit chain head in memory), and the
//! directory must have been initialised by one start of `mandate serve --dev --data <dir>`.
//! Each kind is written the fastest way that is still what the server would have written:
//!
//! * `--agents N`: N agents `seed-<i>`, each with a fresh Ed25519 key, through the store's
//!   writer ([`Op::InsertAgent`], 500 per unit). No audit events.
//! * `--revoked N`: N issued tokens (exchange-shaped: a user, `support-v2`, two scopes) that an
//!   admin revoked one by one: each a `tokens` row with `revoked_at` set and its `token_actors`
//!   row, and a `token` revocation whose `ended` list names it, with a gapless feed `seq` — what
//!   `Op::InsertToken` + `Op::Revoke` store, written with multi-row `INSERT`s in large
//!   transactions (`synchronous=OFF`). Their expiry is `--revoked-ttl` seconds ahead, so the
//!   server loads every one into its in-memory revocation index at start and does not prune
//!   them during the run. No audit events.
//! * `--policies N`: N Cedar policies that never apply to the benchmark's requests (other teams'
//!   scopes, some conditional), in `<data>/policies/extra.cedar` (as `bench/run.sh`'s
//!   `EXTRA_POLICIES`).
//! * `--audit N`: N token-exchange audit events through the store's writer ([`Op::Audit`], 1,000
//!   per unit, several units in flight): each sealed onto the hash chain by the store itself, so
//!   the chain verifies and the server resumes from its head.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mandate_core::agent::{Agent, AgentKey, AgentStatus};
use mandate_core::audit::{Decision, NewEvent};
use mandate_core::ids::AgentId;
use mandate_core::revocation::RevokedToken;
use mandate_core::scope::PatternSet;
use mandate_core::stage::Stage;
use mandate_store::{Op, SqliteStore, Store};
use mandate_token::{Alg, SigningKey};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection};
use tokio::task::JoinSet;

/// Command-line arguments.
#[derive(Parser)]
#[command(
    name = "mandate-seed",
    version,
    about = "Fill a stopped `mandate serve --dev` data directory with extra agents, revoked tokens, policies and audit events"
)]
struct Args {
    /// The data directory of a `--dev` server that was started once and is now stopped.
    #[arg(long)]
    data: PathBuf,
    /// Extra agents, each with a key.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    agents: u64,
    /// Revoked, unexpired tokens (one `token` revocation each).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    revoked: u64,
    /// Seconds until the revoked tokens expire (they stay in the index until then).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(600..=31_536_000))]
    revoked_ttl: i64,
    /// Extra Cedar policies that never apply to the benchmark's requests.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    policies: u64,
    /// Extra audit events, chained by the store.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    audit: u64,
}

/// Agents per store unit.
const AGENTS_PER_UNIT: u64 = 500;
/// Audit events per store unit.
const AUDIT_PER_UNIT: u64 = 1_000;
/// Audit units in flight at once (so the writer always has the next one queued).
const AUDIT_IN_FLIGHT: usize = 4;
/// Revoked tokens per transaction.
const REVOKED_PER_TX: u64 = 20_000;
/// Rows per multi-row `INSERT` (14 parameters each for `tokens`: under SQLite's 32,766).
const ROWS_PER_INSERT: usize = 500;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mandate-seed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let db = args.data.join("mandate.db");
    if !db.is_file() {
        bail!(
            "`{}` does not exist: start `mandate serve --dev --data {}` once first",
            db.display(),
            args.data.display()
        );
    }
    if args.policies > 0 {
        let t = Instant::now();
        seed_policies(&args.data, args.policies)?;
        report("policies", args.policies, t);
    }
    if args.revoked > 0 {
        let t = Instant::now();
        seed_revoked(&db, args.revoked, args.revoked_ttl).await?;
        report("revoked tokens", args.revoked, t);
    }
    if args.agents > 0 || args.audit > 0 {
        let store = Arc::new(
            SqliteStore::open(&db)
                .await
                .with_context(|| format!("cannot open `{}`", db.display()))?,
        );
        let seeded = async {
            if args.agents > 0 {
                let t = Instant::now();
                seed_agents(&store, args.agents).await?;
                report("agents", args.agents, t);
            }
            if args.audit > 0 {
                let t = Instant::now();
                seed_audit(&store, args.audit).await?;
                report("audit events", args.audit, t);
            }
            anyhow::Ok(())
        }
        .await;
        store.close().await;
        seeded?;
    }
    Ok(())
}

fn report(kind: &str, n: u64, t: Instant) {
    let secs = t.elapsed().as_secs_f64();
    println!(
        "seeded {n} {kind} in {secs:.1} s ({:.0}/s)",
        n as f64 / secs.max(1e-9)
    );
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_id<const N: usize>() -> Result<String> {
    mandate_token::random_id::<N>().map_err(|e| anyhow!("{e}"))
}

/// A small deterministic generator (xorshift64*) for the varying fields of audit events.
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

// Policies

/// The `i`-th extra policy: the same three shapes as `bench/run.sh`'s `EXTRA_POLICIES`.
fn policy(i: u64) -> String {
    match i % 3 {
        0 => format!(
            "@id(\"team-{i}\") permit(principal in Group::\"team-{i}\", action == Action::\"svc{i}.records:read\", resource);\n"
        ),
        1 => format!(
            "@id(\"stage-{i}\") permit(principal in Group::\"team-{i}\", action in Action::\"svc{i}.*:write\", resource) when {{ context.stage == \"execute\" }};\n"
        ),
        _ => format!(
            "@id(\"deny-{i}\") forbid(principal, action == Action::\"svc{i}.admin:delete\", resource) unless {{ context.chain.contains(\"ops-{i}\") }};\n"
        ),
    }
}

fn seed_policies(data: &Path, n: u64) -> Result<()> {
    let dir = data.join("policies");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&policy(i));
    }
    let path = dir.join("extra.cedar");
    std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

// Revoked tokens

/// One revoked token and its revocation, as the store would hold them.
struct RevokedRow {
    jti: String,
    task: String,
    sub: String,
    rev_id: String,
    seq: i64,
    ended: String,
}

async fn seed_revoked(db: &Path, n: u64, ttl: i64) -> Result<()> {
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(db)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .busy_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot open `{}`", db.display()))?;
    let now = unix_now();
    let (iat, exp) = (now - 60, now + ttl);
    let mut seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
        .fetch_one(&mut conn)
        .await?;
    let chain = serde_json::to_string(&["support-v2"])?;
    let credentials = serde_json::to_string(&["kid:support-v2-k1"])?;
    let aud = serde_json::to_string(&["https://crm.example.com"])?;
    let mut done = 0;
    while done < n {
        let count = REVOKED_PER_TX.min(n - done);
        let mut rows = Vec::with_capacity(usize::try_from(count)?);
        for i in done..done + count {
            let jti = random_id::<16>()?;
            seq += 1;
            let ended = serde_json::to_string(&[RevokedToken {
                jti: jti.clone(),
                exp,
            }])?;
            rows.push(RevokedRow {
                task: format!("task-{}", random_id::<9>()?.replace('_', "x")),
                sub: format!("user-{}@example.com", i % 10_000),
                rev_id: random_id::<9>()?,
                jti,
                seq,
                ended,
            });
        }
        let mut tx = conn.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tokens (jti, parent_jti, task, sub, sub_profile, sub_iss, chain, \
                 credentials, scope, aud, stage, iat, exp, revoked_at) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.jti)
                    .push_bind(None::<String>)
                    .push_bind(&r.task)
                    .push_bind(&r.sub)
                    .push_bind("user")
                    .push_bind("http://127.0.0.1/dev-idp")
                    .push_bind(&chain)
                    .push_bind(&credentials)
                    .push_bind("crm.customers:read tickets:read")
                    .push_bind(&aud)
                    .push_bind("draft")
                    .push_bind(iat)
                    .push_bind(exp)
                    .push_bind(now);
            });
            q.build().execute(&mut *tx).await?;
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO token_actors (jti, pos, agent, credential) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.jti)
                    .push_bind(0_i64)
                    .push_bind("support-v2")
                    .push_bind("kid:support-v2-k1");
            });
            q.build().execute(&mut *tx).await?;
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO revocations (id, kind, target, revoked_by, reason, at, seq, ended) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.rev_id)
                    .push_bind("token")
                    .push_bind(&r.jti)
                    .push_bind("admin:bootstrap")
                    .push_bind("seeded for the scaling curves")
                    .push_bind(now)
                    .push_bind(r.seq)
                    .push_bind(&r.ended);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done += count;
        if done % 1_000_000 == 0 && done < n {
            println!("  … {done} revoked tokens");
        }
    }
    conn.close().await?;
    Ok(())
}

// Agents

fn agent(i: u64, now: i64) -> Result<Agent> {
    let id = format!("seed-{i:06}");
    let kid = format!("{id}-k1");
    let key = SigningKey::generate(Alg::EdDSA)
        .map_err(|e| anyhow!("{e}"))?
        .with_kid(&kid);
    Ok(Agent {
        id: AgentId::parse(&id)?,
        name: format!("Seeded agent {i}"),
        owner: format!("owner-{}@example.com", i % 1_000),
        description: "seeded for the scaling curves".into(),
        ceiling: PatternSet::parse(["crm.customers:read", "tickets:*"])?,
        tags: Vec::new(),
        max_stage: Stage::Draft,
        status: AgentStatus::Active,
        keys: vec![AgentKey {
            kid,
            jwk: key.public_jwk().clone(),
            expires_at: None,
            created_at: now,
            revoked_at: None,
        }],
        workloads: Vec::new(),
        require_dpop: false,
        created_at: now,
        updated_at: now,
    })
}

async fn seed_agents(store: &SqliteStore, n: u64) -> Result<()> {
    let now = unix_now();
    let mut done = 0;
    while done < n {
        let count = AGENTS_PER_UNIT.min(n - done);
        let ops = (done..done + count)
            .map(|i| agent(i, now).map(Op::InsertAgent))
            .collect::<Result<Vec<_>>>()?;
        store
            .commit(ops)
            .await
            .context("cannot insert agents (seed a fresh data directory)")?;
        done += count;
    }
    Ok(())
}

// Audit events

/// A token-exchange event as the token endpoint writes it.
fn audit_event(rng: &mut Rng) -> NewEvent {
    let exp = 1_800_000_000 + i64::try_from(rng.below(1_000_000)).unwrap_or(0);
    let mut jti = String::with_capacity(22);
    for _ in 0..2 {
        let _ = write!(jti, "{:011x}", rng.next() >> 20);
    }
    let chain = if rng.below(4) == 0 {
        vec!["support-v2".to_owned(), "analytics-v1".to_owned()]
    } else {
        vec!["support-v2".to_owned()]
    };
    NewEvent {
        kind: "token.exchange".into(),
        user: Some(format!("user-{}@example.com", rng.below(10_000))),
        chain,
        task: Some(format!("task-{:012x}", rng.next() >> 16)),
        action: Some("crm.customers:read tickets:read".into()),
        resource: Some("https://crm.example.com".into()),
        decision: Some(Decision::Allow),
        reason: format!("issued at stage `draft` until {exp}"),
        policy_ids: vec!["support-group".into()],
        request_id: None,
        credential: Some("kid:support-v2-k1".into()),
        jti: Some(jti),
        detail: format!(r#"{{"stage":"draft","exp":{exp},"parent_jti":null,"dropped":[]}}"#),
    }
}

async fn seed_audit(store: &Arc<SqliteStore>, n: u64) -> Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut inflight = JoinSet::new();
    let mut done = 0;
    let mut next_report = 1_000_000;
    while done < n {
        while inflight.len() >= AUDIT_IN_FLIGHT {
            if let Some(r) = inflight.join_next().await {
                r??;
            }
        }
        let count = AUDIT_PER_UNIT.min(n - done);
        let ops: Vec<Op> = (0..count)
            .map(|_| Op::Audit(audit_event(&mut rng)))
            .collect();
        let store = Arc::clone(store);
        inflight.spawn(async move { store.commit(ops).await.map(|_| ()) });
        done += count;
        if done >= next_report && done < n {
            println!("  … {done} audit events");
            next_report += 1_000_000;
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    Ok(())
}
