//! How each [`Op`] is applied, inside the writer's transaction.

use mandate_core::agent::{Agent, AgentKey};
use mandate_core::approval::Decided;
use mandate_core::audit::{AuditEvent, NewEvent};
use mandate_core::revocation::{RevocationKind, RevocationRecord};
use mandate_core::task::{Task, TaskStep, TokenRecord};
use sqlx::{Row, SqliteConnection};

use crate::shared_ops::{
    self, ChainHead, conflict, done, found, json, now_rfc3339, revocation_event, step_event,
    unix_now,
};
use crate::{
    AdminCredential, Checkpoint, Op, OpOutput, RevocationEntry, RevokedToken, SsfSet, SsfStream,
    StoreError, StoredApproval, StoredSecret, StoredSigningKey,
};

/// Applies one op. On error the caller rolls the unit back, head included.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    op: Op,
) -> Result<OpOutput, StoreError> {
    match op {
        Op::Audit(new) => append_audit(conn, head, new).await.map(OpOutput::Audit),
        Op::InsertToken(t) => insert_token(conn, &t).await.map(done),
        Op::EnsureTask(t) => ensure_task(conn, &t).await.map(done),
        Op::SetTaskStatus { id, status, at } => {
            let r = sqlx::query("UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?")
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
                append_audit(conn, head, revocation_event(event, &entry)).await?;
            }
            Ok(OpOutput::Revoked(entry))
        }
        Op::InsertAgent(a) => insert_agent(conn, &a).await.map(done),
        Op::UpdateAgent(a) => update_agent(conn, &a).await,
        Op::SetAgentStatus { id, status, at } => {
            let r = sqlx::query("UPDATE agents SET status = ?, updated_at = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(at)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("agent `{id}`"))
        }
        Op::AddAgentKey { agent, key } => {
            let exists = sqlx::query("SELECT 1 FROM agents WHERE id = ?")
                .bind(&agent)
                .fetch_optional(&mut *conn)
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("agent `{agent}`")));
            }
            insert_agent_key(conn, &agent, &key).await.map(done)
        }
        Op::RemoveAgentKey { agent, kid } => {
            let r = sqlx::query("DELETE FROM agent_keys WHERE agent_id = ? AND kid = ?")
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
                "UPDATE agent_keys SET revoked_at = ? WHERE kid = ? AND revoked_at IS NULL",
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
                "UPDATE signing_keys SET retired_at = ?, publish_until = ? WHERE kid = ?",
            )
            .bind(at)
            .bind(publish_until)
            .bind(&kid)
            .execute(&mut *conn)
            .await?;
            found(r.rows_affected(), || format!("signing key `{kid}`"))
        }
        Op::InsertAdminCredential(c) => insert_admin_credential(conn, &c).await.map(done),
        // Shared Signals streams
        Op::InsertSsfStream(st) => insert_ssf_stream(conn, &st).await.map(done),
        Op::UpdateSsfStream(st) => update_ssf_stream(conn, &st).await,
        Op::DeleteSsfStream { id } => {
            sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            let r = sqlx::query("DELETE FROM ssf_streams WHERE id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("stream `{id}`"))
        }
        Op::EnqueueSsf {
            stream,
            sets,
            cursor,
            at,
        } => enqueue_ssf(conn, &stream, &sets, cursor, at)
            .await
            .map(done),
        Op::AckSsf { stream, jtis } => {
            for jti in &jtis {
                sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = ? AND jti = ?")
                    .bind(&stream)
                    .bind(jti)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(OpOutput::Done)
        }
        Op::PurgeSsfOutbox { stream } => {
            sqlx::query("DELETE FROM ssf_outbox WHERE stream_id = ?")
                .bind(&stream)
                .execute(&mut *conn)
                .await?;
            Ok(OpOutput::Done)
        }
        Op::SetSsfError { stream, error, at } => {
            sqlx::query("UPDATE ssf_streams SET last_error = ?, last_error_at = ? WHERE id = ?")
                .bind(&error)
                .bind(error.as_ref().map(|_| at))
                .bind(&stream)
                .execute(&mut *conn)
                .await?;
            Ok(OpOutput::Done)
        }
        // Task steps and outcomes
        Op::InsertTask(t) => insert_task(conn, &t).await.map(done),
        Op::AppendTaskStep { step, audit } => append_task_step(conn, head, step, audit).await,
        Op::CompleteTask { id, outcome, at } => {
            complete_task(conn, &id, &outcome, at).await.map(done)
        }
        // Gateway secrets
        Op::PutSecret(secret) => put_secret(conn, &secret).await,
        Op::DeleteSecret { name } => {
            let r = sqlx::query("DELETE FROM secrets WHERE name = ?")
                .bind(&name)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("secret `{name}`"))
        }
        // Audit checkpoints
        Op::Checkpoint(cp) => insert_checkpoint(conn, &cp).await.map(done),
        // Audit retention
        Op::ArchiveAudit {
            through_seq,
            segment,
        } => archive_audit(conn, head, through_seq, &segment)
            .await
            .map(done),
        // Approvals
        Op::InsertApproval(a) => insert_approval(conn, &a).await.map(done),
        Op::DecideApproval { id, decided } => decide_approval(conn, &id, decided).await.map(done),
        Op::ClaimApproval { id } => claim_approval(conn, &id).await.map(OpOutput::Claimed),
        Op::FinishApproval { id, outcome } => {
            let r = sqlx::query("UPDATE approvals SET dispatch = 'sent', outcome = ? WHERE id = ?")
                .bind(&outcome)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            found(r.rows_affected(), || format!("approval `{id}`"))
        }
        Op::PollApproval { id, at, interval } => {
            let r =
                sqlx::query("UPDATE approvals SET last_poll = ?, poll_interval = ? WHERE id = ?")
                    .bind(at)
                    .bind(interval)
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
            found(r.rows_affected(), || format!("approval `{id}`"))
        }
        // Posture and access reviews
        Op::SetJustification {
            agent,
            pattern,
            text,
            by,
            at,
        } => {
            super::posture::set_justification(conn, &agent, &pattern, text.as_deref(), &by, at)
                .await
        }
        Op::InsertReview(r) => super::posture::insert_review(conn, &r).await,
        Op::DecideReview {
            id,
            status,
            by,
            at,
            removed,
            note,
        } => {
            let answer = super::posture::Answer {
                id: &id,
                status,
                by: &by,
                at,
                removed: &removed,
                note: note.as_deref(),
            };
            super::posture::decide_review(conn, answer).await
        }
    }
}

/// Rows per multi-row `INSERT` of audit events (17 parameters each, well under SQLite's limit).
const AUDIT_ROWS_PER_INSERT: usize = 50;

/// Seals `events` one after another onto the head and stores them with a few multi-row
/// statements instead of two per event: each statement is a hand-off to sqlx's connection thread,
/// which is most of an append's cost. The writer uses it for a unit's consecutive audit events
/// (the gateway's batches); the outputs are the sealed events, in order.
pub(crate) async fn append_audits(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    events: Vec<NewEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let sealed = head.seal_all(events);
    let encoded = encode_audits(&sealed)?;
    for chunk in encoded.chunks(AUDIT_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
        push_audit_rows(&mut q, chunk);
        q.build().execute(&mut *conn).await?;
    }
    for chunk in sealed.chunks(AUDIT_ROWS_PER_INSERT) {
        let pairs = shared_ops::agent_rows(chunk);
        if !pairs.is_empty() {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_event_agents (agent, seq) ",
            );
            q.push_values(pairs, |mut b, (agent, seq)| {
                b.push_bind(agent).push_bind(seq);
            });
            q.build().execute(&mut *conn).await?;
        }
    }
    Ok(sealed)
}

/// A sealed event with its JSON columns (`chain`, `policy_ids`) encoded.
pub(crate) type EncodedAudit<'a> = (&'a AuditEvent, String, String);

/// Encodes the JSON columns of `sealed`.
pub(crate) fn encode_audits(sealed: &[AuditEvent]) -> Result<Vec<EncodedAudit<'_>>, StoreError> {
    sealed
        .iter()
        .map(|e| Ok((e, json(&e.chain)?, json(&e.policy_ids)?)))
        .collect()
}

/// Pushes one multi-row `INSERT INTO audit_events` of `rows` onto `q`.
pub(crate) fn push_audit_rows(q: &mut sqlx::QueryBuilder<sqlx::Sqlite>, rows: &[EncodedAudit<'_>]) {
    q.push(
        "INSERT INTO audit_events (seq, time, kind, user, chain, task, action, resource, \
         decision, reason, policy_ids, request_id, credential, jti, detail, prev_hash, hash) ",
    );
    q.push_values(rows, |mut b, (e, chain, policy_ids)| {
        b.push_bind(e.seq)
            .push_bind(&e.time)
            .push_bind(&e.kind)
            .push_bind(&e.user)
            .push_bind(chain)
            .push_bind(&e.task)
            .push_bind(&e.action)
            .push_bind(&e.resource)
            .push_bind(e.decision.as_str())
            .push_bind(&e.reason)
            .push_bind(policy_ids)
            .push_bind(&e.request_id)
            .push_bind(&e.credential)
            .push_bind(&e.jti)
            .push_bind(&e.detail)
            .push_bind(&e.prev_hash)
            .push_bind(&e.hash);
    });
}

/// Seals `new` after the head, stores it, and advances the head.
async fn append_audit(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    new: NewEvent,
) -> Result<AuditEvent, StoreError> {
    // Advancing the head first is safe: on error the writer restores the unit's starting head.
    let e = head.seal(new, &now_rfc3339());
    sqlx::query(
        "INSERT INTO audit_events (seq, time, kind, user, chain, task, action, resource, decision,
            reason, policy_ids, request_id, credential, jti, detail, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.seq)
    .bind(&e.time)
    .bind(&e.kind)
    .bind(&e.user)
    .bind(json(&e.chain)?)
    .bind(&e.task)
    .bind(&e.action)
    .bind(&e.resource)
    .bind(e.decision.as_str())
    .bind(&e.reason)
    .bind(json(&e.policy_ids)?)
    .bind(&e.request_id)
    .bind(&e.credential)
    .bind(&e.jti)
    .bind(&e.detail)
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .execute(&mut *conn)
    .await?;
    // Every agent of the chain in one statement: each statement is a hand-off to sqlx's
    // connection thread, which is most of an append's cost.
    let agents = shared_ops::agent_rows(std::slice::from_ref(&e));
    if !agents.is_empty() {
        let mut q =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO audit_event_agents (agent, seq) ");
        q.push_values(agents, |mut b, (agent, seq)| {
            b.push_bind(agent).push_bind(seq);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(e)
}

async fn insert_token(conn: &mut SqliteConnection, t: &TokenRecord) -> Result<(), StoreError> {
    if let Some(parent) = &t.parent_jti {
        let row = sqlx::query("SELECT revoked_at FROM tokens WHERE jti = ?")
            .bind(parent)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            let revoked_at: Option<i64> = row.try_get("revoked_at")?;
            if revoked_at.is_some() {
                return Err(StoreError::ParentRevoked(parent.clone()));
            }
        }
    }
    sqlx::query(
        "INSERT INTO tokens (jti, parent_jti, task, sub, sub_profile, sub_iss, chain, credentials,
            scope, aud, stage, iat, exp, revoked_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    for (pos, agent, credential) in shared_ops::token_actors(t) {
        sqlx::query("INSERT INTO token_actors (jti, pos, agent, credential) VALUES (?, ?, ?, ?)")
            .bind(&t.jti)
            .bind(pos)
            .bind(agent)
            .bind(credential)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn ensure_task(conn: &mut SqliteConnection, t: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, agent, user, user_issuer, purpose, input, status, created_at,
            updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
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
async fn use_once(conn: &mut SqliteConnection, key: &str, exp: i64) -> Result<(), StoreError> {
    // One statement: insert, or take over an entry whose use has expired; an unexpired entry
    // makes the upsert a no-op (0 rows), which is a replay.
    let r = sqlx::query(
        "INSERT INTO used_once (key, exp) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET exp = excluded.exp WHERE used_once.exp < ?3",
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

/// Records the revocation root and ends every live token it reaches.
async fn revoke(
    conn: &mut SqliteConnection,
    rec: RevocationRecord,
) -> Result<RevocationEntry, StoreError> {
    let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM revocations")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO revocations (id, kind, target, revoked_by, reason, at, seq)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&rec.id)
    .bind(rec.kind.as_str())
    .bind(&rec.target)
    .bind(&rec.by)
    .bind(&rec.reason)
    .bind(rec.at)
    .bind(seq)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("revocation `{}`", rec.id)))?;

    // Every statement binds ?1 = target, ?2 = at, and marks only live tokens (not yet revoked,
    // not expired at `at`).
    let sql = match rec.kind {
        RevocationKind::Token => {
            "WITH RECURSIVE tree (jti) AS (
                 SELECT ?1
                 UNION
                 SELECT t.jti FROM tokens t JOIN tree ON t.parent_jti = tree.jti
             )
             UPDATE tokens SET revoked_at = ?2
             WHERE jti IN (SELECT jti FROM tree) AND revoked_at IS NULL AND exp >= ?2
             RETURNING jti, exp"
        }
        RevocationKind::Task => {
            // A completed task stays completed: its tokens already ended.
            sqlx::query(
                "UPDATE tasks SET status = 'revoked', updated_at = ?2
                 WHERE id = ?1 AND status = 'active'",
            )
            .bind(&rec.target)
            .bind(rec.at)
            .execute(&mut *conn)
            .await?;
            "UPDATE tokens SET revoked_at = ?2
             WHERE task = ?1 AND revoked_at IS NULL AND exp >= ?2
             RETURNING jti, exp"
        }
        RevocationKind::User => {
            "UPDATE tokens SET revoked_at = ?2
             WHERE sub = ?1 AND sub_profile = 'user' AND revoked_at IS NULL AND exp >= ?2
             RETURNING jti, exp"
        }
        RevocationKind::Agent => {
            "UPDATE tokens SET revoked_at = ?2
             WHERE jti IN (SELECT jti FROM token_actors WHERE agent = ?1)
               AND revoked_at IS NULL AND exp >= ?2
             RETURNING jti, exp"
        }
        RevocationKind::Key => {
            "UPDATE tokens SET revoked_at = ?2
             WHERE jti IN (SELECT jti FROM token_actors WHERE credential = 'kid:' || ?1)
               AND revoked_at IS NULL AND exp >= ?2
             RETURNING jti, exp"
        }
    };
    let rows = sqlx::query(sql)
        .bind(&rec.target)
        .bind(rec.at)
        .fetch_all(&mut *conn)
        .await?;
    let ended = rows
        .iter()
        .map(|r| {
            Ok(RevokedToken {
                jti: r.try_get("jti")?,
                exp: r.try_get("exp")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (ended, ended_json) = shared_ops::ended_tokens(ended)?;
    sqlx::query("UPDATE revocations SET ended = ? WHERE seq = ?")
        .bind(ended_json)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(RevocationEntry {
        seq,
        record: rec,
        tokens: ended,
    })
}

async fn insert_agent(conn: &mut SqliteConnection, a: &Agent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agents (id, name, owner, description, ceiling, tags, max_stage, status,
            created_at, updated_at, workloads, require_dpop)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
async fn update_agent(conn: &mut SqliteConnection, a: &Agent) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE agents SET name = ?, owner = ?, description = ?, ceiling = ?, tags = ?,
            max_stage = ?, status = ?, updated_at = ?, workloads = ?, require_dpop = ?
         WHERE id = ?",
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

async fn insert_agent_key(
    conn: &mut SqliteConnection,
    agent: &str,
    k: &AgentKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_keys (agent_id, kid, jwk, expires_at, created_at, revoked_at)
         VALUES (?, ?, ?, ?, ?, ?)",
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
    conn: &mut SqliteConnection,
    k: &StoredSigningKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private, created_at, retired_at,
            publish_until)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
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
    conn: &mut SqliteConnection,
    c: &AdminCredential,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO admin_credentials (id, role, secret_hash, created_at, disabled_at)
         VALUES (?, ?, ?, ?, ?)",
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

// Shared Signals streams

async fn insert_ssf_stream(conn: &mut SqliteConnection, st: &SsfStream) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ssf_streams (id, aud, method, endpoint_url, authorization_header,
            events_requested, description, status, reason, removed_subjects, cursor, last_error,
            last_error_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&st.id)
    .bind(json(&st.aud)?)
    .bind(&st.method)
    .bind(&st.endpoint_url)
    .bind(&st.authorization_header)
    .bind(st.events_requested.as_ref().map(json).transpose()?)
    .bind(&st.description)
    .bind(&st.status)
    .bind(&st.reason)
    .bind(json(&st.removed_subjects)?)
    .bind(st.cursor)
    .bind(&st.last_error)
    .bind(st.last_error_at)
    .bind(st.created_at)
    .bind(st.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("stream `{}`", st.id)))?;
    Ok(())
}

/// Replaces what the receiver and the status endpoint control; the cursor and the delivery
/// record belong to the dispatcher.
async fn update_ssf_stream(
    conn: &mut SqliteConnection,
    st: &SsfStream,
) -> Result<OpOutput, StoreError> {
    let r = sqlx::query(
        "UPDATE ssf_streams SET aud = ?, method = ?, endpoint_url = ?, authorization_header = ?,
            events_requested = ?, description = ?, status = ?, reason = ?, removed_subjects = ?,
            updated_at = ?
         WHERE id = ?",
    )
    .bind(json(&st.aud)?)
    .bind(&st.method)
    .bind(&st.endpoint_url)
    .bind(&st.authorization_header)
    .bind(st.events_requested.as_ref().map(json).transpose()?)
    .bind(&st.description)
    .bind(&st.status)
    .bind(&st.reason)
    .bind(json(&st.removed_subjects)?)
    .bind(st.updated_at)
    .bind(&st.id)
    .execute(&mut *conn)
    .await?;
    found(r.rows_affected(), || format!("stream `{}`", st.id))
}

/// Appends `sets` to the outbox of `stream` and moves its cursor forward to `cursor`.
async fn enqueue_ssf(
    conn: &mut SqliteConnection,
    stream: &str,
    sets: &[SsfSet],
    cursor: Option<i64>,
    at: i64,
) -> Result<(), StoreError> {
    let exists = sqlx::query("SELECT 1 FROM ssf_streams WHERE id = ?")
        .bind(stream)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if !exists {
        return Err(StoreError::NotFound(format!("stream `{stream}`")));
    }
    for set in sets {
        sqlx::query(
            "INSERT INTO ssf_outbox (stream_id, jti, claims, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(stream)
        .bind(&set.jti)
        .bind(&set.claims)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(conflict(|| {
            format!("SET `{}` of stream `{stream}`", set.jti)
        }))?;
    }
    if let Some(cursor) = cursor {
        sqlx::query("UPDATE ssf_streams SET cursor = MAX(cursor, ?) WHERE id = ?")
            .bind(cursor)
            .bind(stream)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

// Task steps and outcomes

async fn insert_task(conn: &mut SqliteConnection, t: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, agent, user, user_issuer, purpose, input, status, created_at,
            updated_at, outcome, completed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

/// A task's status and completion time; [`StoreError::NotFound`] if there is no such task.
async fn task_state(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<(String, Option<i64>), StoreError> {
    let row = sqlx::query("SELECT status, completed_at FROM tasks WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("task `{id}`")))?;
    Ok((row.try_get("status")?, row.try_get("completed_at")?))
}

async fn append_task_step(
    conn: &mut SqliteConnection,
    head: &mut ChainHead,
    mut step: TaskStep,
    audit: Option<NewEvent>,
) -> Result<OpOutput, StoreError> {
    let (status, _) = task_state(conn, &step.task).await?;
    shared_ops::check_step(&step.task, status)?;
    step.seq =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM task_steps WHERE task = ?")
            .bind(&step.task)
            .fetch_one(&mut *conn)
            .await?;
    let tool_call = step.tool_call.as_ref().map(json).transpose()?;
    sqlx::query(
        "INSERT INTO task_steps (task, seq, time, recorded_by, decision, summary, tool_call,
            anomaly)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&step.task)
    .bind(step.seq)
    .bind(&step.time)
    .bind(&step.by)
    .bind(&step.decision)
    .bind(&step.summary)
    .bind(tool_call)
    .bind(&step.anomaly)
    .execute(&mut *conn)
    .await?;
    if let Some(event) = audit {
        append_audit(conn, head, step_event(event, step.seq)).await?;
    }
    Ok(OpOutput::TaskStep(step))
}

/// Completes a task that was active before this unit: either still `active`, or `revoked` by
/// exactly one task revocation (the one that, in this unit, ended its tokens).
async fn complete_task(
    conn: &mut SqliteConnection,
    id: &str,
    outcome: &str,
    at: i64,
) -> Result<(), StoreError> {
    let (status, completed_at) = task_state(conn, id).await?;
    let revocations: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM revocations WHERE kind = 'task' AND target = ?")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    shared_ops::check_completion(id, status, completed_at, revocations)?;
    sqlx::query(
        "UPDATE tasks SET status = 'completed', outcome = ?, completed_at = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(outcome)
    .bind(at)
    .bind(at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// Gateway secrets

async fn put_secret(conn: &mut SqliteConnection, s: &StoredSecret) -> Result<OpOutput, StoreError> {
    let replaced = sqlx::query("SELECT 1 FROM secrets WHERE name = ?")
        .bind(&s.name)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    sqlx::query(
        "INSERT INTO secrets (name, sealed, description, created_at, updated_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET
             sealed = excluded.sealed,
             description = excluded.description,
             updated_at = excluded.updated_at",
    )
    .bind(&s.name)
    .bind(&s.sealed)
    .bind(&s.description)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(&s.created_by)
    .execute(&mut *conn)
    .await?;
    Ok(OpOutput::SecretPut { replaced })
}

// Audit checkpoints

async fn insert_checkpoint(conn: &mut SqliteConnection, cp: &Checkpoint) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit_checkpoints (seq, hash, time, jws) VALUES (?, ?, ?, ?)")
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(&cp.time)
        .bind(&cp.jws)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// Audit retention

/// Deletes events `segment.first_seq..=through_seq` and records the segment, after checking
/// that the segment is exactly the next stretch of the stored chain. The chain head is never
/// archived, so the writer's head (and a restart's, read from the last stored event) stays.
async fn archive_audit(
    conn: &mut SqliteConnection,
    head: &ChainHead,
    through_seq: i64,
    seg: &crate::SegmentRecord,
) -> Result<(), StoreError> {
    let prev = sqlx::query(
        "SELECT last_seq, last_hash FROM audit_segments ORDER BY last_seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let previous = match prev {
        Some(r) => Some((
            r.try_get::<i64, _>("last_seq")?,
            r.try_get::<String, _>("last_hash")?,
        )),
        None => None,
    };
    let start = shared_ops::archive_start(head.seq, previous, through_seq, seg)?;
    let first_prev: Option<String> =
        sqlx::query_scalar("SELECT prev_hash FROM audit_events WHERE seq = ?")
            .bind(start)
            .fetch_optional(&mut *conn)
            .await?;
    let last: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = ?")
        .bind(through_seq)
        .fetch_optional(&mut *conn)
        .await?;
    shared_ops::check_archive_hashes(
        start,
        through_seq,
        seg,
        first_prev.as_deref(),
        last.as_deref(),
    )?;
    // The agent index, by (agent, seq) key: only the agents the archived events name.
    let by_key = sqlx::query(
        "DELETE FROM audit_event_agents
         WHERE agent IN (SELECT DISTINCT j.value FROM audit_events e, json_each(e.chain) j
                         WHERE e.seq BETWEEN ?1 AND ?2)
           AND seq BETWEEN ?1 AND ?2",
    )
    .bind(start)
    .bind(through_seq)
    .execute(&mut *conn)
    .await;
    if let Err(e) = by_key {
        tracing::warn!(error = %e, "archiving: the agent index is cleared by a full scan");
        clear_agent_index(conn, start, through_seq).await?;
    }
    let delete_events = || {
        sqlx::query("DELETE FROM audit_events WHERE seq BETWEEN ? AND ?")
            .bind(start)
            .bind(through_seq)
    };
    let deleted = match delete_events().execute(&mut *conn).await {
        Ok(r) => r.rows_affected(),
        // An index row that names an agent its event does not (an edited database): clear the
        // range the slow way, then delete again.
        Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
            clear_agent_index(conn, start, through_seq).await?;
            delete_events().execute(&mut *conn).await?.rows_affected()
        }
        Err(e) => return Err(e.into()),
    };
    shared_ops::check_archive_count(start, through_seq, deleted, seg)?;
    sqlx::query(
        "INSERT INTO audit_segments (first_seq, last_seq, first_prev_hash, last_hash, count,
            sha256, file_name, checkpoint, archived_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seg.first_seq)
    .bind(seg.last_seq)
    .bind(&seg.first_prev_hash)
    .bind(&seg.last_hash)
    .bind(seg.count)
    .bind(&seg.sha256)
    .bind(&seg.file_name)
    .bind(&seg.checkpoint)
    .bind(seg.archived_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes the agent index rows of `seq` `from..=to` by scanning the whole index.
async fn clear_agent_index(
    conn: &mut SqliteConnection,
    from: i64,
    to: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM audit_event_agents WHERE seq BETWEEN ? AND ?")
        .bind(from)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// Approvals

async fn insert_approval(
    conn: &mut SqliteConnection,
    a: &StoredApproval,
) -> Result<(), StoreError> {
    let id = &a.approval.id;
    sqlx::query(
        "INSERT INTO approvals (id, kind, agent, user, status, created_at, expires_at, record,
                                payload, dispatch, outcome, last_poll, poll_interval)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(a.approval.ask.kind())
    .bind(&a.approval.agent)
    .bind(&a.approval.user)
    .bind(a.approval.status().as_str())
    .bind(a.approval.created_at)
    .bind(a.approval.expires_at)
    .bind(json(&a.approval)?)
    .bind(&a.payload)
    .bind(a.dispatch.as_str())
    .bind(&a.outcome)
    .bind(a.last_poll)
    .bind(a.poll_interval)
    .execute(&mut *conn)
    .await
    .map_err(conflict(|| format!("approval `{id}`")))?;
    Ok(())
}

async fn decide_approval(
    conn: &mut SqliteConnection,
    id: &str,
    decided: Decided,
) -> Result<(), StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT status, record FROM approvals WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((status, record)) = row else {
        return Err(StoreError::NotFound(format!("approval `{id}`")));
    };
    let approval = shared_ops::decide_record(id, status, &record, decided)?;
    sqlx::query("UPDATE approvals SET status = ?, record = ? WHERE id = ?")
        .bind(approval.status().as_str())
        .bind(json(&approval)?)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn claim_approval(conn: &mut SqliteConnection, id: &str) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE approvals SET dispatch = 'sending'
         WHERE id = ? AND status = 'approved' AND dispatch = 'not_sent'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(true);
    }
    let exists = sqlx::query("SELECT 1 FROM approvals WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    shared_ops::unclaimed(id, exists)
}
