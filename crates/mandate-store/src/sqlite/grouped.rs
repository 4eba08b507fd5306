//! The writer's fast path for issuance: a batch whose units hold only the ops a token request
//! commits — single-use values, new tasks, token records, audit events — is stored with one
//! multi-row statement per table for the whole batch, instead of several statements per unit.
//!
//! Every statement is a hand-off between the writer task and sqlx's connection thread; at 32
//! concurrent token requests a batch of a dozen units took ~100 of them (savepoint, the
//! single-use value, the token, its actors, the event, its agents, release — per unit), and
//! those thread wake-ups, not SQL, were most of the writer's cost. Grouped, the whole batch is
//! one script of multi-row statements handed off once (see `Script`), then the writer's
//! `COMMIT`.
//!
//! The grouped path is only a faster way to reach the same rows. It reports [`Fallback`] for
//! anything it does not handle exactly like the per-unit path would succeed — a single-use value
//! already used, a token whose parent is revoked, a duplicate `jti` or new task id, any database error — and
//! the writer then rolls the transaction back and replays the batch unit by unit, each in its
//! own savepoint, so the failing unit gets its precise error and the others still commit.

use std::fmt;

use mandate_core::audit::NewEvent;
use mandate_core::task::{Task, TokenRecord};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::ops;
use crate::shared_ops::{self, ChainHead, Unit, json, unix_now};
use crate::{Op, OpOutput};

/// Rows per multi-row statement (14 parameters per token row, well under SQLite's limit of
/// 32,766). With the batch limit of 256 units, a table takes at most four statements.
const ROWS_PER_STATEMENT: usize = 64;

/// Why the grouped path gave the batch back to the per-unit path. Not an error of any unit.
#[derive(Debug)]
pub(crate) struct Fallback(String);

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<sqlx::Error> for Fallback {
    fn from(e: sqlx::Error) -> Fallback {
        Fallback(e.to_string())
    }
}

impl From<crate::StoreError> for Fallback {
    fn from(e: crate::StoreError) -> Fallback {
        Fallback(e.to_string())
    }
}

/// Whether every op of every unit is one the grouped path stores.
pub(crate) fn eligible(batch: &[Unit]) -> bool {
    batch.iter().flat_map(|u| &u.ops).all(|op| {
        matches!(
            op,
            Op::UseOnce { .. }
                | Op::EnsureTask(_)
                | Op::InsertTask(_)
                | Op::InsertToken(_)
                | Op::Audit(_)
        )
    })
}

/// The batch's rows, table by table, in unit order.
#[derive(Default)]
struct Rows<'a> {
    used_once: Vec<(&'a str, i64)>,
    /// Tasks to create unless they exist ([`Op::EnsureTask`]).
    tasks: Vec<&'a Task>,
    /// Tasks that must be new ([`Op::InsertTask`]).
    new_tasks: Vec<&'a Task>,
    tokens: Vec<&'a TokenRecord>,
    events: Vec<NewEvent>,
}

/// Stores every unit of `batch` (all [`eligible`]) inside the writer's open transaction and
/// returns each unit's outputs, in order — the same outputs the per-unit path gives. On
/// [`Fallback`] the transaction holds partial writes and `head` has moved: the caller rolls both
/// back.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    batch: &[Unit],
) -> Result<Vec<Vec<OpOutput>>, Fallback> {
    let mut rows = Rows::default();
    for op in batch.iter().flat_map(|u| &u.ops) {
        match op {
            Op::UseOnce { key, exp } => rows.used_once.push((key, *exp)),
            Op::EnsureTask(t) => rows.tasks.push(t),
            Op::InsertTask(t) => rows.new_tasks.push(t),
            Op::InsertToken(t) => rows.tokens.push(t),
            Op::Audit(e) => rows.events.push(e.clone()),
            _ => return Err(Fallback("an op the grouped path does not store".into())),
        }
    }

    // Everything below goes to sqlx's connection thread as one script: one hand-off for the
    // whole batch (see `Script`).
    let sealed = head.seal_all(rows.events);
    let tokens = encode_tokens(&rows.tokens)?;
    let actors: Vec<_> = rows
        .tokens
        .iter()
        .flat_map(|t| {
            shared_ops::token_actors(t)
                .into_iter()
                .map(move |(pos, agent, credential)| (t.jti.as_str(), pos, agent, credential))
        })
        .collect();
    let events = ops::encode_audits(&sealed)?;
    let agents = shared_ops::agent_rows(&sealed);
    let parents: Vec<&str> = rows
        .tokens
        .iter()
        .filter_map(|t| t.parent_jti.as_deref())
        .collect();

    // In the per-unit order of a token request: single-use values first, then the parents'
    // revocation, then tasks before the tokens that name them, then the audit events.
    let mut script = Script::default();
    use_once(&mut script, &rows.used_once);
    parents_live(&mut script, &parents);
    insert_tasks(&mut script, &rows.new_tasks, "");
    insert_tasks(&mut script, &rows.tasks, " ON CONFLICT (id) DO NOTHING");
    insert_tokens(&mut script, &tokens, &actors);
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Anything);
        ops::push_audit_rows(&mut script.sql, chunk);
    }
    for chunk in agents.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Anything);
        script
            .sql
            .push("INSERT INTO audit_event_agents (agent, seq) ");
        script.sql.push_values(chunk, |mut b, (agent, seq)| {
            b.push_bind(*agent).push_bind(*seq);
        });
    }
    script.run(conn).await?;
    let mut sealed = sealed.into_iter();

    let mut outputs = Vec::with_capacity(batch.len());
    for unit in batch {
        let mut out = Vec::with_capacity(unit.ops.len());
        for op in &unit.ops {
            out.push(match op {
                Op::Audit(_) => match sealed.next() {
                    Some(e) => OpOutput::Audit(e),
                    None => return Err(Fallback("fewer audit events stored than sent".into())),
                },
                _ => OpOutput::Done,
            });
        }
        outputs.push(out);
    }
    Ok(outputs)
}

/// What one statement of a [`Script`] must report for the batch to go on grouped.
enum Expect {
    /// Exactly this many rows changed (every single-use value new or expired).
    Changes(usize, &'static str),
    /// One row whose first column is zero (no parent token revoked).
    Zero(&'static str),
    /// Success.
    Anything,
}

/// The batch's statements, run as one multi-statement query: sqlx's SQLite driver runs every
/// statement of a query string in one command on its connection thread, binding the anonymous
/// parameters in order, and reports each statement's outcome. The writer's transaction is
/// already open; the checks run after the script, on the reported outcomes, and any failure is
/// a [`Fallback`] (the writer rolls the whole transaction back).
struct Script {
    sql: QueryBuilder<Sqlite>,
    expect: Vec<Expect>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            sql: QueryBuilder::new(""),
            expect: Vec::new(),
        }
    }
}

impl Script {
    /// Starts the next statement.
    fn statement(&mut self, expect: Expect) {
        if !self.expect.is_empty() {
            self.sql.push(";\n");
        }
        self.expect.push(expect);
    }

    async fn run(mut self, conn: &mut SqliteConnection) -> Result<(), Fallback> {
        use futures_util::TryStreamExt;
        use sqlx::{Either, Executor, Row};

        if self.expect.is_empty() {
            return Ok(());
        }
        let query = self.sql.build();
        let mut outcomes = conn.fetch_many(query);
        let mut expect = self.expect.iter();
        let mut current = expect.next();
        let mut first_column: Option<i64> = None;
        while let Some(outcome) = outcomes.try_next().await? {
            match outcome {
                Either::Right(row) => {
                    if first_column.is_none() {
                        first_column = Some(row.try_get(0)?);
                    }
                }
                Either::Left(done) => {
                    match current {
                        Some(Expect::Changes(n, why))
                            if usize::try_from(done.rows_affected()).ok() != Some(*n) =>
                        {
                            return Err(Fallback((*why).into()));
                        }
                        Some(Expect::Zero(why)) if first_column != Some(0) => {
                            return Err(Fallback((*why).into()));
                        }
                        None => return Err(Fallback("more outcomes than statements".into())),
                        _ => {}
                    }
                    first_column = None;
                    current = expect.next();
                }
            }
        }
        match current {
            None => Ok(()),
            Some(_) => Err(Fallback("fewer outcomes than statements".into())),
        }
    }
}

/// Marks each value used; every one must be new or expired, else the batch falls back (a replay,
/// or the same value twice in one batch).
fn use_once(script: &mut Script, values: &[(&str, i64)]) {
    let now = unix_now();
    for chunk in values.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Changes(
            chunk.len(),
            "a single-use value was already used",
        ));
        script.sql.push("INSERT INTO used_once (key, exp) ");
        script.sql.push_values(chunk, |mut b, (key, exp)| {
            b.push_bind(*key).push_bind(*exp);
        });
        script
            .sql
            .push(" ON CONFLICT (key) DO UPDATE SET exp = excluded.exp WHERE used_once.exp < ")
            .push_bind(now);
    }
}

/// Falls back if any token's parent is recorded as revoked.
fn parents_live(script: &mut Script, parents: &[&str]) {
    for chunk in parents.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Zero("a parent token is revoked"));
        script
            .sql
            .push("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NOT NULL AND jti IN (");
        let mut list = script.sql.separated(", ");
        for jti in chunk {
            list.push_bind(*jti);
        }
        script.sql.push(")");
    }
}

/// Creates tasks; `on_conflict` is empty (an existing id fails the statement) or a clause.
fn insert_tasks(script: &mut Script, tasks: &[&Task], on_conflict: &'static str) {
    for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Anything);
        script.sql.push(
            "INSERT INTO tasks (id, agent, user, user_issuer, purpose, input, status, \
             created_at, updated_at) ",
        );
        script.sql.push_values(chunk, |mut b, t| {
            b.push_bind(&t.id)
                .push_bind(&t.agent)
                .push_bind(&t.user)
                .push_bind(&t.user_issuer)
                .push_bind(&t.purpose)
                .push_bind(&t.input)
                .push_bind(t.status.as_str())
                .push_bind(t.created_at)
                .push_bind(t.updated_at);
        });
        script.sql.push(on_conflict);
    }
}

/// A token record with its JSON columns encoded.
type EncodedToken<'a> = (&'a TokenRecord, String, String, String);

fn encode_tokens<'a>(tokens: &[&'a TokenRecord]) -> Result<Vec<EncodedToken<'a>>, Fallback> {
    let mut encoded = Vec::with_capacity(tokens.len());
    for t in tokens {
        encoded.push((*t, json(&t.chain)?, json(&t.credentials)?, json(&t.aud)?));
    }
    Ok(encoded)
}

/// Inserts the token records and their actors; a duplicate `jti` fails the statement.
fn insert_tokens(
    script: &mut Script,
    tokens: &[EncodedToken<'_>],
    actors: &[(&str, i64, Option<&str>, Option<&str>)],
) {
    for chunk in tokens.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Anything);
        script.sql.push(
            "INSERT INTO tokens (jti, parent_jti, task, sub, sub_profile, sub_iss, chain, \
             credentials, scope, aud, stage, iat, exp, revoked_at) ",
        );
        script
            .sql
            .push_values(chunk, |mut b, (t, chain, credentials, aud)| {
                b.push_bind(&t.jti)
                    .push_bind(&t.parent_jti)
                    .push_bind(&t.task)
                    .push_bind(&t.sub)
                    .push_bind(&t.sub_profile)
                    .push_bind(&t.sub_iss)
                    .push_bind(chain)
                    .push_bind(credentials)
                    .push_bind(&t.scope)
                    .push_bind(aud)
                    .push_bind(&t.stage)
                    .push_bind(t.iat)
                    .push_bind(t.exp)
                    .push_bind(t.revoked_at);
            });
    }
    for rows in actors.chunks(ROWS_PER_STATEMENT) {
        script.statement(Expect::Anything);
        script
            .sql
            .push("INSERT INTO token_actors (jti, pos, agent, credential) ");
        script
            .sql
            .push_values(rows, |mut b, (jti, pos, agent, credential)| {
                b.push_bind(*jti)
                    .push_bind(*pos)
                    .push_bind(*agent)
                    .push_bind(*credential);
            });
    }
}
