-- Mandate's PostgreSQL schema, version 1: the SQLite schema (migrations/sqlite, 0001–0011) as one
-- file, with PostgreSQL types. Times are seconds since the epoch (BIGINT) unless named otherwise;
-- lists (chains, credentials, audiences, ceilings, policy ids, tags) are JSON arrays of strings,
-- stored as TEXT so that what was written is what is read (audit hashes cover the exact text).
-- `user` is a reserved word here: those columns are always written `"user"`.
--
-- Several Mandate nodes may share this database. Every write transaction first takes the
-- transaction-scoped advisory lock the store names `WRITE_LOCK`, so writes commit one batch at a
-- time across all nodes: the audit chain, the revocation feed and task steps get their next
-- number from the last committed row, exactly as with SQLite's single writer.

-- Token-signing keys: the public JWK in clear, the private key sealed under the master key.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT,
    publish_until  BIGINT
);

-- Admin API credentials: only the SHA-256 of the secret.
CREATE TABLE admin_credentials (
    id          TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

-- Registered agents. `tags` is a JSON array of strings that policies read as `principal.tags`.
CREATE TABLE agents (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    description TEXT NOT NULL,
    ceiling     TEXT NOT NULL,
    max_stage   TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]'
);

-- Agents' public keys for private_key_jwt; `ord` is registration order (SQLite's rowid).
CREATE TABLE agent_keys (
    ord        BIGSERIAL NOT NULL UNIQUE,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    kid        TEXT NOT NULL,
    jwk        TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    PRIMARY KEY (agent_id, kid)
);
CREATE INDEX agent_keys_kid ON agent_keys (kid);

-- Tasks: the root every token hangs from, with the agent's own record of how it ended.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY NOT NULL,
    agent        TEXT NOT NULL,
    "user"       TEXT,
    user_issuer  TEXT,
    purpose      TEXT NOT NULL,
    input        TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    outcome      TEXT,
    completed_at BIGINT
);
CREATE INDEX tasks_agent ON tasks (agent, created_at);
CREATE INDEX tasks_user ON tasks ("user", created_at);
CREATE INDEX tasks_created ON tasks (created_at);

-- Issued tokens (their facts, never the token itself).
CREATE TABLE tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    parent_jti  TEXT,
    task        TEXT NOT NULL,
    sub         TEXT NOT NULL,
    sub_profile TEXT NOT NULL,
    sub_iss     TEXT,
    chain       TEXT NOT NULL,
    credentials TEXT NOT NULL,
    scope       TEXT NOT NULL,
    aud         TEXT NOT NULL,
    stage       TEXT NOT NULL,
    iat         BIGINT NOT NULL,
    exp         BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tokens_parent ON tokens (parent_jti);
CREATE INDEX tokens_task ON tokens (task, iat);
CREATE INDEX tokens_subject ON tokens (sub, sub_profile);
CREATE INDEX tokens_revoked ON tokens (exp) WHERE revoked_at IS NOT NULL;

-- One row per actor of a token's chain: finds the tokens an agent or a credential appears in.
CREATE TABLE token_actors (
    jti        TEXT NOT NULL REFERENCES tokens (jti) ON DELETE CASCADE,
    pos        BIGINT NOT NULL,
    agent      TEXT,
    credential TEXT,
    PRIMARY KEY (jti, pos)
);
CREATE INDEX token_actors_agent ON token_actors (agent);
CREATE INDEX token_actors_credential ON token_actors (credential);

-- Revocation roots, and the feed verifiers and Shared Signals streams follow: `seq` is gapless
-- (its event id), `ended` the tokens it ended (JSON array of {"jti","exp"}).
CREATE TABLE revocations (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    revoked_by TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    seq        BIGINT NOT NULL UNIQUE,
    ended      TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX revocations_target ON revocations (kind, target);

-- Single-use values (client-assertion jtis, …), kept until they expire.
CREATE TABLE used_once (
    key TEXT PRIMARY KEY NOT NULL,
    exp BIGINT NOT NULL
);
CREATE INDEX used_once_exp ON used_once (exp);

-- The audit log: an append-only hash chain ordered by seq. `time` is RFC 3339 UTC with
-- milliseconds in a fixed width, so text order is time order (compared with COLLATE "C").
CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY NOT NULL,
    time       TEXT COLLATE "C" NOT NULL,
    kind       TEXT NOT NULL,
    "user"     TEXT,
    chain      TEXT NOT NULL,
    task       TEXT,
    action     TEXT,
    resource   TEXT,
    decision   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    policy_ids TEXT NOT NULL,
    request_id TEXT,
    credential TEXT,
    jti        TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_events_user_time ON audit_events ("user", time);
CREATE INDEX audit_events_task ON audit_events (task);
CREATE INDEX audit_events_resource_time ON audit_events (resource, time);
CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_kind ON audit_events (kind);

-- Every agent of an event's chain, for "agent anywhere in the chain" queries.
CREATE TABLE audit_event_agents (
    agent TEXT NOT NULL,
    seq   BIGINT NOT NULL REFERENCES audit_events (seq),
    PRIMARY KEY (agent, seq)
);
-- By seq: archiving deletes a seq range of it, and deleting an event checks its foreign key here
-- (without this index, one scan of the whole table per archived event).
CREATE INDEX audit_event_agents_seq ON audit_event_agents (seq);

-- Shared Signals (OpenID SSF 1.0) streams and their outboxes; see the SQLite migration 0004.
CREATE TABLE ssf_streams (
    id                   TEXT PRIMARY KEY NOT NULL,
    aud                  TEXT NOT NULL,
    method               TEXT NOT NULL,
    endpoint_url         TEXT,
    authorization_header BYTEA,
    events_requested     TEXT,
    description          TEXT,
    status               TEXT NOT NULL,
    reason               TEXT,
    removed_subjects     TEXT NOT NULL DEFAULT '[]',
    cursor               BIGINT NOT NULL,
    last_error           TEXT,
    last_error_at        BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE ssf_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    stream_id  TEXT NOT NULL REFERENCES ssf_streams (id) ON DELETE CASCADE,
    jti        TEXT NOT NULL,
    claims     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ssf_outbox_stream ON ssf_outbox (stream_id, seq);
CREATE UNIQUE INDEX ssf_outbox_jti ON ssf_outbox (stream_id, jti);

-- Task steps, numbered from 1 within their task; see the SQLite migration 0005.
CREATE TABLE task_steps (
    task        TEXT NOT NULL REFERENCES tasks (id),
    seq         BIGINT NOT NULL,
    time        TEXT COLLATE "C" NOT NULL,
    recorded_by TEXT NOT NULL,
    decision    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    tool_call   TEXT,
    anomaly     TEXT,
    PRIMARY KEY (task, seq)
);

-- Gateway secrets, sealed under the master key; see the SQLite migration 0006.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    sealed      BYTEA NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);

-- Signed audit checkpoints; see the SQLite migration 0007.
CREATE TABLE audit_checkpoints (
    id   BIGSERIAL PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    jws  TEXT NOT NULL
);

-- Approvals; see the SQLite migration 0008.
CREATE TABLE approvals (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    agent         TEXT NOT NULL,
    "user"        TEXT,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    record        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    dispatch      TEXT NOT NULL DEFAULT 'not_sent',
    outcome       TEXT,
    last_poll     BIGINT,
    poll_interval BIGINT NOT NULL DEFAULT 5
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE INDEX approvals_agent ON approvals (agent, created_at);

-- Archived audit segments; see the SQLite migration 0009.
CREATE TABLE audit_segments (
    first_seq       BIGINT PRIMARY KEY NOT NULL,
    last_seq        BIGINT NOT NULL UNIQUE,
    first_prev_hash TEXT NOT NULL,
    last_hash       TEXT NOT NULL,
    count           BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    checkpoint      TEXT NOT NULL,
    archived_at     BIGINT NOT NULL
);

-- Posture and access reviews; see the SQLite migration 0010.
CREATE TABLE agent_justifications (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    pattern  TEXT NOT NULL,
    text     TEXT NOT NULL,
    set_by   TEXT NOT NULL,
    set_at   BIGINT NOT NULL,
    PRIMARY KEY (agent_id, pattern)
);

CREATE TABLE reviews (
    id         TEXT PRIMARY KEY NOT NULL,
    campaign   TEXT NOT NULL,
    agent      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    ceiling    TEXT NOT NULL,
    status     TEXT NOT NULL,
    opened_by  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    due_at     BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    removed    TEXT NOT NULL DEFAULT '[]',
    note       TEXT
);
CREATE INDEX reviews_status ON reviews (status, due_at);
CREATE INDEX reviews_agent ON reviews (agent, created_at);
