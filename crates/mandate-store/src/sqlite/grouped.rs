//! The writer's fast path for issuance: a batch whose units hold only the ops a token request
//! commits — single-use values, new tasks, token records, audit events — is stored with one
//! multi-row statement per table for the whole batch, instead of several statements per unit.
//!
//! Every statement is a hand-off between the writer task and sqlx's connection thread; at 32
//! concurrent token requests a batch of a dozen units took ~100 of them (savepoint, the
//! single-use value, the token, its actors, the event, its agents, release — per unit), and
//! those thread wake-ups, not SQL, were most of the writer's cost. Grouped, the same batch is
//! about seven.
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

    // In the per-unit order of a token request: single-use values first (a replay stops the
    // batch before anything else is written), then tasks before the tokens that name them.
    use_once(conn, &rows.used_once).await?;
    parents_live(conn, &rows.tokens).await?;
    insert_tasks(conn, &rows.new_tasks, "").await?;
    insert_tasks(conn, &rows.tasks, " ON CONFLICT (id) DO NOTHING").await?;
    insert_tokens(conn, &rows.tokens).await?;
    let mut sealed = ops::append_audits(conn, head, rows.events)
        .await?
        .into_iter();

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

/// Marks each value used; every one must be new or expired, else the batch falls back (a replay,
/// or the same value twice in one batch).
async fn use_once(conn: &mut SqliteConnection, values: &[(&str, i64)]) -> Result<(), Fallback> {
    let now = unix_now();
    for chunk in values.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO used_once (key, exp) ");
        q.push_values(chunk, |mut b, (key, exp)| {
            b.push_bind(*key).push_bind(*exp);
        });
        q.push(" ON CONFLICT (key) DO UPDATE SET exp = excluded.exp WHERE used_once.exp < ")
            .push_bind(now);
        let done = q.build().execute(&mut *conn).await?;
        if usize::try_from(done.rows_affected()).ok() != Some(chunk.len()) {
            return Err(Fallback("a single-use value was already used".into()));
        }
    }
    Ok(())
}

/// Falls back if any token's parent is recorded as revoked.
async fn parents_live(
    conn: &mut SqliteConnection,
    tokens: &[&TokenRecord],
) -> Result<(), Fallback> {
    let parents: Vec<&str> = tokens
        .iter()
        .filter_map(|t| t.parent_jti.as_deref())
        .collect();
    for chunk in parents.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NOT NULL AND jti IN (",
        );
        let mut list = q.separated(", ");
        for jti in chunk {
            list.push_bind(*jti);
        }
        q.push(")");
        let revoked: i64 = q.build_query_scalar().fetch_one(&mut *conn).await?;
        if revoked > 0 {
            return Err(Fallback("a parent token is revoked".into()));
        }
    }
    Ok(())
}

/// Creates tasks; `on_conflict` is empty (an existing id fails the statement) or a clause.
async fn insert_tasks(
    conn: &mut SqliteConnection,
    tasks: &[&Task],
    on_conflict: &'static str,
) -> Result<(), Fallback> {
    for chunk in tasks.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO tasks (id, agent, user, user_issuer, purpose, input, status, \
             created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, t| {
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
        q.push(on_conflict);
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts the token records and their actors; a duplicate `jti` fails the statement.
async fn insert_tokens(
    conn: &mut SqliteConnection,
    tokens: &[&TokenRecord],
) -> Result<(), Fallback> {
    for chunk in tokens.chunks(ROWS_PER_STATEMENT) {
        let mut encoded = Vec::with_capacity(chunk.len());
        for t in chunk {
            encoded.push((*t, json(&t.chain)?, json(&t.credentials)?, json(&t.aud)?));
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO tokens (jti, parent_jti, task, sub, sub_profile, sub_iss, chain, \
             credentials, scope, aud, stage, iat, exp, revoked_at) ",
        );
        q.push_values(&encoded, |mut b, (t, chain, credentials, aud)| {
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
        q.build().execute(&mut *conn).await?;

        let actors: Vec<_> = chunk
            .iter()
            .flat_map(|t| {
                shared_ops::token_actors(t)
                    .into_iter()
                    .map(move |(pos, agent, credential)| (t.jti.as_str(), pos, agent, credential))
            })
            .collect();
        for rows in actors.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO token_actors (jti, pos, agent, credential) ",
            );
            q.push_values(rows, |mut b, (jti, pos, agent, credential)| {
                b.push_bind(*jti)
                    .push_bind(*pos)
                    .push_bind(*agent)
                    .push_bind(*credential);
            });
            q.build().execute(&mut *conn).await?;
        }
    }
    Ok(())
}
