//! How each [`Op`] is applied on PostgreSQL, inside the writer's transaction (which holds the
//! write lock, so numbers taken from `MAX(seq)` are the next ones across every node).
//!
//! Every op behaves as SQLite's (`crate::sqlite::ops`): the same checks, errors and outputs,
//! decided by the same backend-neutral code (`crate::shared_ops`). A statement that fails leaves
//! the transaction unusable until the unit's savepoint is rolled back, which the writer does; an
//! op never tries another statement after a failed one.

use mandate_core::agent::{Agent, AgentKey};
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::task::{Task, TaskStep, TokenRecord};
use sqlx::{PgConnection, Row};

use crate::shared_ops::{
    self, ChainHead, conflict, done, found, json, revocation_event, step_event, unix_now,
};
use crate::{
    AdminCredential, Op, OpOutput, RevocationEntry, RevokedToken, StoreError, StoredSigningKey,
};

mod audit;
mod records;

pub(crate) use audit::append_audits;

/// Applies one op. On error the caller rolls the unit back, head included.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    head: &mut ChainHead,
    op: Op,
) -> Result<OpOutput, StoreError> {
    match op {
        Op::Audit(new) => audit::append_audit(conn, head, new)
            .await
            .map(OpOutput::Audit),
        Op::InsertToken(t) => insert_token(conn, &t).await.map(done),
        Op::EnsureTask(t) => ensure_task(conn, &t).await.map(done),
        Op::SetTaskStatus { id, status, at } => {
            let r = sqlx::query("UPDATE tasks SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(at)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("task `{id}`"))
        }
        Op::UseOnce { key, exp } => use_once(conn, &key, exp).await.map(done),
        Op::Revoke { record, audit } => {
            let entry = revoke(conn, record).await?;
            if let Some(event) = audit {
                audit::append_audit(conn, head, revocation_event(event, &entry)).await?;
            }
            Ok(OpOutput::Revoked(entry))
        }
        Op::InsertAgent(a) => insert_agent(conn, &a).await.map(done),
        Op::UpdateAgent(a) => update_agent(conn, &a).await,
        Op::SetAgentStatus { id, status, at } => {
            let r = sqlx::query("UPDATE agents SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(at)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("agent `{id}`"))
        }
        Op::AddAgentKey { agent, key } => {
            if !agent_exists(conn, &agent).await? {
                return Err(StoreError::NotFound(format!("agent `{agent}`")));
            }
            insert_agent_key(conn, &agent, &key).await.map(done)
        }
        Op::RemoveAgentKey { agent, kid } => {
            let r = sqlx::query("DELETE FROM agent_keys WHERE agent_id = $1 AND kid = $2")
                .bind(&agent)
                .bind(&kid)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || {
                format!("key `{kid}` of agent `{agent}`")
            })
        }
        Op::RevokeAgentKey { kid, at } => {
            sqlx::query(
                "UPDATE agent_keys SET revoked_at = $1 WHERE kid = $2 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(&kid)
            .execute(&mut *conn)
            .await?;
            Ok(OpOutput::Done)
        }
        Op::InsertSigningKey(k) => insert_signing_key(conn, &k).await.map(done),
        Op::RetireSigningKey {
            kid,
            at,
            publish_until,
        } => {
            let r = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE kid = $3",
            )
            .bind(at)
            .bind(publish_until)
            .bind(&kid)
            .execute(&mut *conn)
            .await?;
            found(r.rows_affected(), || format!("signing key `{kid}`"))
        }
        Op::InsertAdminCredential(c) => insert_admin_credential(conn, &c).await.map(done),
        // Task steps and outcomes
        Op::InsertTask(t) => insert_task(conn, &t).await.map(done),
        Op::AppendTaskStep { step, audit } => {
            let step = append_task_step(conn, step).await?;
            if let Some(event) = audit {
                audit::append_audit(conn, head, step_event(event, step.seq)).await?;
            }
            Ok(OpOutput::TaskStep(step))
        }
        Op::CompleteTask { id, outcome, at } => {
            complete_task(conn, &id, &outcome, at).await.map(done)
        }
        // Audit checkpoints and retention
        Op::Checkpoint(cp) => audit::insert_checkpoint(conn, &cp).await.map(done),
        Op::ArchiveAudit {
            through_seq,
            segment,
        } => audit::archive_audit(conn, head, through_seq, &segment)
            .await
            .map(done),
        // Shared Signals streams, gateway secrets, approvals, posture and access reviews
        other => records::apply(conn, other).await,
    }
}

/// Whether the agent `id` exists.
async fn agent_exists(conn: &mut PgConnection, id: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query("SELECT 1 FROM agents WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

async fn insert_token(conn: &mut PgConnection, t: &TokenRecord) -> Result<(), StoreError> {
    if let Some(parent) = &t.parent_jti {
        let revoked_at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM tokens WHERE jti = $1")
                .bind(parent)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(Some(_)) = revoked_at {
            return Err(StoreError::ParentRevoked(parent.clone()));
        }
    }
    sqlx::query(
        "INSERT INTO tokens (jti, parent_jti, task, sub, sub_profile, sub_iss, chain, credentials,
            scope, aud, stage, iat, exp, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&t.jti)
    .bind(&t.parent_jti)
    .bind(&t.task)
    .bind(&t.sub)
    .bind(&t.sub_profile)
    .bind(&t.sub_iss)
    .bind(json(&t.chain)?)
    .bind(json(&t.credentials)?)
    .bind(&t.scope)
    .bind(json(&t.aud)?)
    .bind(&t.stage)
    .bind(t.iat)
    .bind(t.exp)
    .bind(t.revoked_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("token `{}`", t.jti)))?;
    let actors = shared_ops::token_actors(t);
    if !actors.is_empty() {
        // Every actor in one statement: a round trip per row is most of the cost.
        let (positions, (agents, credentials)): (Vec<i64>, (Vec<_>, Vec<_>)) = actors
            .into_iter()
            .map(|(pos, agent, credential)| (pos, (agent, credential)))
            .unzip();
        sqlx::query(
            "INSERT INTO token_actors (jti, pos, agent, credential)
             SELECT $1, pos, agent, credential
             FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS a (pos, agent, credential)",
        )
        .bind(&t.jti)
        .bind(positions)
        .bind(agents)
        .bind(credentials)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn ensure_task(conn: &mut PgConnection, t: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, agent, \"user\", user_issuer, purpose, input, status, created_at,
            updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&t.id)
    .bind(&t.agent)
    .bind(&t.user)
    .bind(&t.user_issuer)
    .bind(&t.purpose)
    .bind(&t.input)
    .bind(t.status.as_str())
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks `key` used until `exp`. A previous use that expired (by the system clock) no longer
/// counts.
async fn use_once(conn: &mut PgConnection, key: &str, exp: i64) -> Result<(), StoreError> {
    // One statement: insert, or take over an entry whose use has expired; an unexpired entry
    // makes the upsert a no-op (0 rows), which is a replay.
    let r = sqlx::query(
        "INSERT INTO used_once (key, exp) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET exp = EXCLUDED.exp WHERE used_once.exp < $3",
    )
    .bind(key)
    .bind(exp)
    .bind(unix_now())
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::Replay(key.to_owned()));
    }
    Ok(())
}

/// Ends every live token the revocation reaches, then records it with the next feed sequence
/// number and the list of what it ended.
async fn revoke(
    conn: &mut PgConnection,
    rec: RevocationRecord,
) -> Result<RevocationEntry, StoreError> {
    // Every statement binds $1 = target, $2 = at, and marks only live tokens (not yet revoked,
    // not expired at `at`).
    let sql = match rec.kind {
        RevocationKind::Token => {
            "WITH RECURSIVE tree (jti) AS (
                 SELECT $1::text
                 UNION
                 SELECT t.jti FROM tokens t JOIN tree ON t.parent_jti = tree.jti
             )
             UPDATE tokens SET revoked_at = $2
             WHERE jti IN (SELECT jti FROM tree) AND revoked_at IS NULL AND exp >= $2
             RETURNING jti, exp"
        }
        RevocationKind::Task => {
            // A completed task stays completed: its tokens already ended.
            sqlx::query(
                "UPDATE tasks SET status = 'revoked', updated_at = $2
                 WHERE id = $1 AND status = 'active'",
            )
            .bind(&rec.target)
            .bind(rec.at)
            .execute(&mut *conn)
            .await?;
            "UPDATE tokens SET revoked_at = $2
             WHERE task = $1 AND revoked_at IS NULL AND exp >= $2
             RETURNING jti, exp"
        }
        RevocationKind::User => {
            "UPDATE tokens SET revoked_at = $2
             WHERE sub = $1 AND sub_profile = 'user' AND revoked_at IS NULL AND exp >= $2
             RETURNING jti, exp"
        }
        RevocationKind::Agent => {
            "UPDATE tokens SET revoked_at = $2
             WHERE jti IN (SELECT jti FROM token_actors WHERE agent = $1)
               AND revoked_at IS NULL AND exp >= $2
             RETURNING jti, exp"
        }
        RevocationKind::Key => {
            "UPDATE tokens SET revoked_at = $2
             WHERE jti IN (SELECT jti FROM token_actors WHERE credential = 'kid:' || $1)
               AND revoked_at IS NULL AND exp >= $2
             RETURNING jti, exp"
        }
    };
    let ended = sqlx::query(sql)
        .bind(&rec.target)
        .bind(rec.at)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(RevokedToken {
                jti: r.try_get("jti")?,
                exp: r.try_get("exp")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (ended, ended_json) = shared_ops::ended_tokens(ended)?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO revocations (id, kind, target, revoked_by, reason, at, ended, seq)
         SELECT $1, $2, $3, $4, $5, $6, $7, COALESCE(MAX(seq), 0) + 1 FROM revocations
         RETURNING seq",
    )
    .bind(&rec.id)
    .bind(rec.kind.as_str())
    .bind(&rec.target)
    .bind(&rec.by)
    .bind(&rec.reason)
    .bind(rec.at)
    .bind(ended_json)
    .fetch_one(&mut *conn)
    .await
    .map_err(conflict(|| format!("revocation `{}`", rec.id)))?;
    Ok(RevocationEntry {
        seq,
        record: rec,
        tokens: ended,
    })
}

async fn insert_agent(conn: &mut PgConnection, a: &Agent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agents (id, name, owner, description, ceiling, tags, max_stage, status,
            created_at, updated_at, workloads, require_dpop)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(a.id.as_str())
    .bind(&a.name)
    .bind(&a.owner)
    .bind(&a.description)
    .bind(json(&a.ceiling)?)
    .bind(json(&a.tags)?)
    .bind(a.max_stage.as_str())
    .bind(a.status.as_str())
    .bind(a.created_at)
    .bind(a.updated_at)
    .bind(json(&a.workloads)?)
    .bind(i64::from(a.require_dpop))
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("agent `{}`", a.id)))?;
    for key in &a.keys {
        insert_agent_key(conn, a.id.as_str(), key).await?;
    }
    Ok(())
}

/// Replaces every field but the id, the keys and `created_at`.
async fn update_agent(conn: &mut PgConnection, a: &Agent) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE agents SET name = $1, owner = $2, description = $3, ceiling = $4, tags = $5,
            max_stage = $6, status = $7, updated_at = $8, workloads = $9, require_dpop = $10
         WHERE id = $11",
    )
    .bind(&a.name)
    .bind(&a.owner)
    .bind(&a.description)
    .bind(json(&a.ceiling)?)
    .bind(json(&a.tags)?)
    .bind(a.max_stage.as_str())
    .bind(a.status.as_str())
    .bind(a.updated_at)
    .bind(json(&a.workloads)?)
    .bind(i64::from(a.require_dpop))
    .bind(a.id.as_str())
    .execute(&mut *conn)
    .await?;
    found(r.rows_affected(), || format!("agent `{}`", a.id))
}

/// Adds a key; `agent_keys.ord` numbers it after every key added before (the order reads list
/// an agent's keys in).
async fn insert_agent_key(
    conn: &mut PgConnection,
    agent: &str,
    k: &AgentKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_keys (agent_id, kid, jwk, expires_at, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(agent)
    .bind(&k.kid)
    .bind(json(&k.jwk)?)
    .bind(k.expires_at)
    .bind(k.created_at)
    .bind(k.revoked_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("key `{}` of agent `{agent}`", k.kid)))?;
    Ok(())
}

async fn insert_signing_key(
    conn: &mut PgConnection,
    k: &StoredSigningKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private, created_at, retired_at,
            publish_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.kid)
    .bind(&k.alg)
    .bind(&k.public_jwk)
    .bind(&k.sealed_private)
    .bind(k.created_at)
    .bind(k.retired_at)
    .bind(k.publish_until)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("signing key `{}`", k.kid)))?;
    Ok(())
}

async fn insert_admin_credential(
    conn: &mut PgConnection,
    c: &AdminCredential,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO admin_credentials (id, role, secret_hash, created_at, disabled_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&c.id)
    .bind(&c.role)
    .bind(&c.secret_hash)
    .bind(c.created_at)
    .bind(c.disabled_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("admin credential `{}`", c.id)))?;
    Ok(())
}

// Task steps and outcomes

async fn insert_task(conn: &mut PgConnection, t: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, agent, \"user\", user_issuer, purpose, input, status, created_at,
            updated_at, outcome, completed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&t.id)
    .bind(&t.agent)
    .bind(&t.user)
    .bind(&t.user_issuer)
    .bind(&t.purpose)
    .bind(&t.input)
    .bind(t.status.as_str())
    .bind(t.created_at)
    .bind(t.updated_at)
    .bind(&t.outcome)
    .bind(t.completed_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("task `{}`", t.id)))?;
    Ok(())
}

/// Records a step of an active task with the task's next step number.
async fn append_task_step(
    conn: &mut PgConnection,
    mut step: TaskStep,
) -> Result<TaskStep, StoreError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(&step.task)
        .fetch_optional(&mut *conn)
        .await?;
    let status = status.ok_or_else(|| StoreError::NotFound(format!("task `{}`", step.task)))?;
    shared_ops::check_step(&step.task, status)?;
    let tool_call = step.tool_call.as_ref().map(json).transpose()?;
    step.seq = sqlx::query_scalar(
        "INSERT INTO task_steps (task, seq, time, recorded_by, decision, summary, tool_call,
            anomaly)
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7
         FROM task_steps WHERE task = $1
         RETURNING seq",
    )
    .bind(&step.task)
    .bind(&step.time)
    .bind(&step.by)
    .bind(&step.decision)
    .bind(&step.summary)
    .bind(tool_call)
    .bind(&step.anomaly)
    .fetch_one(&mut *conn)
    .await?;
    Ok(step)
}

/// Completes a task that was active before this unit (see
/// [`shared_ops::check_completion`]).
async fn complete_task(
    conn: &mut PgConnection,
    id: &str,
    outcome: &str,
    at: i64,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT status, completed_at,
                (SELECT COUNT(*) FROM revocations WHERE kind = 'task' AND target = $1)
                    AS revocations
         FROM tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("task `{id}`")))?;
    shared_ops::check_completion(
        id,
        row.try_get("status")?,
        row.try_get("completed_at")?,
        row.try_get("revocations")?,
    )?;
    sqlx::query(
        "UPDATE tasks SET status = 'completed', outcome = $1, completed_at = $2, updated_at = $2
         WHERE id = $3",
    )
    .bind(outcome)
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
